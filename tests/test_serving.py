"""Serving simulator: exactness of the fast mode, conservation, capacity, monotonicity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.perf.memory import Layout
from sim.perf.precision import Precision
from sim.perf.step import StepBatch, StepCostTable, StepModel
from sim.serving.engine import EngineConfig
from sim.serving.metrics import Slo, per_request, summarize
from sim.serving.overheads import Overheads
from sim.serving.simulate import ServeSetup, simulate
from sim.serving.traffic import LognormalLengths, PoissonTraffic, RequestChunk, TraceTraffic

REPO = Path(__file__).resolve().parents[1]
CONV = REPO / "workloads" / "traces" / "azure-conv-2023.csv"
FP8 = Precision.preset("fp8")


@pytest.fixture(scope="module")
def conv_head():
    src = TraceTraffic(CONV, max_requests=1200)
    chunks = list(src.iter_chunks())
    return RequestChunk(np.concatenate([c.arrival_s for c in chunks]),
                        np.concatenate([c.input_tokens for c in chunks]),
                        np.concatenate([c.output_tokens for c in chunks]))


def _setup(lib, hw_cache, **kw):
    base = dict(model=lib.model("llama-2-70b"), hardware=hw_cache("h100-sxm"), precision=FP8,
                layout=Layout(tp=8), replicas=2)
    base.update(kw)
    return ServeSetup(**base)


_OV = Overheads(api_request_s=2e-3, api_tokenize_s_per_input_token=5e-6,
                scheduler_s_per_running_request=2e-5, detokenize_s_per_output_token=1e-5,
                sampling_s_per_sequence=5e-6, cuda_graph_max_tokens=512,
                cuda_graph_layer_fixed_scale=0.3)
"""Test inputs (not library values), large enough to change every latency."""


def _by_rid(res, col):
    return getattr(res, col)[np.argsort(res.rid)]


@pytest.mark.parametrize("kw", [
    {},
    {"gpu_memory_utilization": 0.141, "replicas": 1},  # tiny KV cache: preemptions happen
    {"engine": EngineConfig(enable_chunked_prefill=False, max_num_seqs=64), "replicas": 3,
     "router": "round_robin"},
    {"overheads": _OV, "gpu_memory_utilization": 0.141, "replicas": 1},  # overheads + preemption
    {"overheads": _OV, "max_concurrency": 24},  # client-side cap (vLLM --max-concurrency)
    # preempted prefixes kept in the free queue (prefix caching) under preemption
    {"engine": EngineConfig(prefix_caching=True), "gpu_memory_utilization": 0.141,
     "replicas": 1},
    {"engine": EngineConfig(prefix_caching=True), "overheads": _OV,
     "gpu_memory_utilization": 0.141, "replicas": 1},
])
def test_fast_mode_equals_token_mode_per_request(lib, hw_cache, conv_head, kw):
    fast = simulate(_setup(lib, hw_cache, mode="fast", **kw), [conv_head])
    token = simulate(_setup(lib, hw_cache, mode="token", **kw), [conv_head])
    assert np.array_equal(np.sort(fast.rid), np.sort(token.rid))
    for col in ("first_token_s", "finish_s", "first_scheduled_s"):
        a, b = _by_rid(fast, col), _by_rid(token, col)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=0)
    assert np.array_equal(_by_rid(fast, "preemptions"), _by_rid(token, "preemptions"))
    assert fast.events < token.events  # the shortcut actually coalesces steps
    if kw.get("gpu_memory_utilization"):
        assert token.preemptions.sum() > 0


def test_sliding_window_sequences_hold_their_window_blocks(lib, hw_cache, conv_head):
    """GPT-OSS: a block holds block_size tokens of the full-attention layers and every running
    sequence holds its sliding-window layers' KV on top, so a sequence's blocks match its bytes
    (to a block) once it is as long as the window; fast mode stays exact under block pressure."""
    from sim.perf.memory import kv_bytes_for_sequence
    from sim.serving.simulate import _kv_blocks

    m = lib.model("gpt-oss-120b")
    kw = dict(model=m, layout=Layout(tp=2), replicas=1, gpu_memory_utilization=0.739)
    setup = _setup(lib, hw_cache, **kw)
    blocks, seq_blocks = _kv_blocks(setup)
    assert seq_blocks > 0 and blocks > 10 * seq_blocks
    per_block = kv_bytes_for_sequence(m, Layout(tp=2), FP8, 10_000) - kv_bytes_for_sequence(
        m, Layout(tp=2), FP8, 10_000 - 16)  # 16 tokens of the full-attention layers
    window = m.architecture.sliding_window.window_tokens
    for tokens in (window, 500, 3000):
        held = (-(-tokens // 16) + seq_blocks) * per_block
        want = kv_bytes_for_sequence(m, Layout(tp=2), FP8, tokens)
        assert want <= held < want + 2 * per_block
    busy = RequestChunk(conv_head.arrival_s * 0.02, conv_head.input_tokens,
                        conv_head.output_tokens)  # 50x the trace's rate
    fast = simulate(_setup(lib, hw_cache, mode="fast", **kw), [busy])
    token = simulate(_setup(lib, hw_cache, mode="token", **kw), [busy])
    for col in ("first_token_s", "finish_s"):
        np.testing.assert_allclose(_by_rid(fast, col), _by_rid(token, col), rtol=1e-9, atol=0)
    assert token.preemptions.sum() > 0  # the cache is tight enough to matter
    assert max(token.replica_peak_blocks) <= token.replica_total_blocks == blocks

def test_conservation_and_kv_capacity(lib, hw_cache, conv_head):
    res = simulate(_setup(lib, hw_cache, gpu_memory_utilization=0.141, replicas=1), [conv_head])
    assert res.arrived == len(conv_head)
    assert res.arrived == len(res.rid) + res.unfinished + res.rejected
    assert res.unfinished == 0
    # every finished request produced exactly the tokens it asked for (after clipping)
    asked = conv_head.output_tokens[res.rid]
    clipped = conv_head.input_tokens[res.rid] + asked > 4096
    assert np.array_equal(res.output_tokens[~clipped], asked[~clipped])
    assert res.clipped == int(clipped.sum())
    assert max(res.replica_peak_blocks) <= res.replica_total_blocks
    assert res.preemptions.sum() > 0


def test_reject_policy_counts_long_prompts(lib, hw_cache, conv_head):
    res = simulate(_setup(lib, hw_cache, engine=EngineConfig(long_prompt_policy="reject")),
                   [conv_head])
    long_ = int((conv_head.input_tokens + conv_head.output_tokens > 4096).sum())
    assert res.rejected == long_ and res.clipped == 0
    assert len(res.rid) == len(conv_head) - long_


def test_single_request_timeline_is_the_step_costs(lib, hw_cache):
    """Trace-style check: one request, prompt 100, output 3 -> prefill step, then 2 decodes."""
    m, hw = lib.model("llama-3.1-8b"), hw_cache("h100-sxm")
    setup = ServeSetup(m, hw, FP8, Layout(tp=1), replicas=1)
    ch = RequestChunk(np.array([1.0]), np.array([100]), np.array([3]))
    res = simulate(setup, [ch])
    table = StepCostTable(StepModel(m, hw, Layout(tp=1), FP8), 8192 + 256, 256)
    t1 = table.cost(StepBatch.of_sequences([100], [0]))
    t2 = table.cost(StepBatch.of_sequences([1], [100]))
    t3 = table.cost(StepBatch.of_sequences([1], [101]))
    assert res.first_token_s[0] == pytest.approx(1.0 + t1, rel=1e-12)
    assert res.finish_s[0] == pytest.approx(1.0 + t1 + t2 + t3, rel=1e-12)
    df = per_request(res)
    assert df["tpot_s"][0] == pytest.approx((t2 + t3) / 2, rel=1e-9)


def _poisson(lib, rate, n=600, seed=3):
    return PoissonTraffic(rate, n, LognormalLengths.from_mix(lib.lengths("mlperf-llama2-70b")),
                          seed)


def test_more_replicas_never_worse_p99_with_jsq(lib, hw_cache):
    """Coupled: the same arrival stream, least-outstanding (join-shortest-queue) routing. Under
    load (queueing sets the tail) more replicas never hurt p99 TTFT. At light load the tail is
    a long prompt's own prefill and which steps it shares: spreading requests thinner can move
    it a few per cent either way (no queueing theorem covers it), so there it only stays close."""
    def p99s(rate):
        out = []
        for n in (1, 2, 4):
            res = simulate(_setup(lib, hw_cache, replicas=n, layout=Layout(tp=2)),
                           _poisson(lib, rate))
            out.append(summarize(res)["ttft_ms"]["p99"])
        return out
    loaded = p99s(20.0)
    assert loaded[0] >= loaded[1] >= loaded[2], loaded
    light = p99s(12.0)
    assert light[0] >= light[1] and light[2] <= light[1] * 1.05, light


def test_p99_ttft_monotone_in_rate_with_common_random_numbers(lib, hw_cache):
    """With common random numbers p99 TTFT grows with the rate once requests queue. At light
    load it is flat, and may dip by a hair: a prompt that shares a step with another reads the
    weights once for both (a step costs less than two), so it can finish a few microseconds
    sooner at a higher rate; 0.1% covers that and nothing a real queueing effect would cause."""
    p99 = []
    for rate in (2.0, 6.0, 12.0, 20.0):
        res = simulate(_setup(lib, hw_cache, replicas=1, layout=Layout(tp=2)), _poisson(lib, rate))
        p99.append(summarize(res)["ttft_ms"]["p99"])
    assert all(b >= a * (1 - 1e-3) for a, b in zip(p99, p99[1:])), p99
    assert p99[-1] > 1.5 * p99[0], p99  # and it does grow under load


def test_deterministic_by_seed(lib, hw_cache):
    s = _setup(lib, hw_cache, replicas=3, router="power_of_two", seed=5)
    a = simulate(s, _poisson(lib, 10.0, seed=1))
    b = simulate(s, _poisson(lib, 10.0, seed=1))
    c = simulate(s, _poisson(lib, 10.0, seed=2))
    assert np.array_equal(a.finish_s, b.finish_s) and np.array_equal(a.replica, b.replica)
    assert not np.array_equal(np.sort(a.finish_s), np.sort(c.finish_s))


def test_slo_attainment_and_goodput(lib, hw_cache):
    res = simulate(_setup(lib, hw_cache, replicas=1, layout=Layout(tp=2)), _poisson(lib, 8.0))
    loose = summarize(res, Slo(ttft_ms=1e9, tpot_ms=1e9))
    tight = summarize(res, Slo(ttft_ms=1.0, tpot_ms=1.0))
    assert loose["slo_attainment"] == 1.0 and tight["slo_attainment"] == 0.0
    assert tight["goodput_rps"] == 0.0 and loose["goodput_rps"] > 0
    with pytest.raises(ValueError):
        Slo(ttft_ms=-5)


def _cli(*args):
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)


def test_cli_serve_json(tmp_path):
    small = tmp_path / "small.csv"
    small.write_text("arrival_s,input_tokens,output_tokens\n0.0,100,20\n0.5,2000,50\n1.0,30,5\n")
    r = _cli("serve", "--card", "h100-sxm", "--model", "llama-2-70b", "--precision", "fp8",
             "--tp", "8", "--replicas", "2", "--trace", str(small), "--slo-ttft-ms", "2000",
             "--slo-tpot-ms", "200", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for k in ("requests", "ttft_ms", "tpot_ms", "e2e_ms", "slo_attainment", "goodput_rps",
              "throughput_tokens_per_s", "sim_wall_s"):
        assert k in out
    for k in ("ttft_ms", "tpot_ms", "e2e_ms"):
        assert set(out[k]) >= {"mean", "p50", "p90", "p99"}
    assert out["requests"] == 3 and out["finished"] == 3


@pytest.mark.parametrize("args,needle", [
    (["--trace", "nope.csv"], "nope.csv: cannot read"),
    (["--trace", "BAD", "--tp", "8"], "line 3"),
    (["--rate", "5", "--slo-ttft-ms", "-3"], "must be > 0"),
    (["--rate", "5", "--tp", "1", "--precision", "bf16"], "smallest TP that fits is 2"),
])
def test_cli_serve_bad_input(tmp_path, args, needle):
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,input_tokens,output_tokens\n0.0,10,5\n0.1,abc,5\n")
    args = [str(bad) if a == "BAD" else a for a in args]
    r = _cli("serve", "--card", "h100-sxm", "--model", "llama-2-70b", *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_prefix_caching_cuts_ttft_and_stays_exact(lib, hw_cache, conv_head):
    plain = simulate(_setup(lib, hw_cache, replicas=1), [conv_head])
    eng = EngineConfig(prefix_hit_fraction=0.5)
    hit_fast = simulate(_setup(lib, hw_cache, replicas=1, engine=eng), [conv_head])
    hit_token = simulate(_setup(lib, hw_cache, replicas=1, engine=eng, mode="token"),
                         [conv_head])
    ttft = lambda r: np.median(r.first_token_s - r.arrival_s)  # noqa: E731
    assert ttft(hit_fast) < ttft(plain)
    np.testing.assert_allclose(_by_rid(hit_fast, "finish_s"), _by_rid(hit_token, "finish_s"),
                               rtol=1e-9, atol=0)
    with pytest.raises(ValueError):
        EngineConfig(prefix_hit_fraction=1.0)


@pytest.mark.parametrize("eng", [
    EngineConfig(scheduling_policy="prefill_first"),
    EngineConfig(num_speculative_tokens=3, spec_acceptance_rate=0.7),
])
def test_policies_and_speculative_decoding_are_exact_and_conserve(lib, hw_cache, conv_head, eng):
    fast = simulate(_setup(lib, hw_cache, engine=eng), [conv_head])
    token = simulate(_setup(lib, hw_cache, engine=eng, mode="token"), [conv_head])
    np.testing.assert_allclose(_by_rid(fast, "finish_s"), _by_rid(token, "finish_s"), rtol=1e-9,
                               atol=0)
    assert len(fast.rid) + fast.unfinished + fast.rejected == fast.arrived
    assert max(fast.replica_peak_blocks) <= fast.replica_total_blocks


def test_speculative_decoding_cuts_tpot_at_light_load(lib, hw_cache):
    plain = simulate(_setup(lib, hw_cache, replicas=1), _poisson(lib, 1.0, n=60))
    spec = simulate(_setup(lib, hw_cache, replicas=1, engine=EngineConfig(
        num_speculative_tokens=3, spec_acceptance_rate=0.7)), _poisson(lib, 1.0, n=60))
    tp, ts = summarize(plain)["tpot_ms"]["p50"], summarize(spec)["tpot_ms"]["p50"]
    # E = (1 - 0.7^4) / 0.3 = 2.53 tokens per verify step, whose cost grows little at batch ~1
    assert ts < tp / 1.8
    assert np.array_equal(np.sort(plain.output_tokens), np.sort(spec.output_tokens))


def test_overload_finishes_and_says_so(lib, hw_cache):
    ok = summarize(simulate(_setup(lib, hw_cache, replicas=1, layout=Layout(tp=2)),
                            _poisson(lib, 2.0)))
    over = summarize(simulate(_setup(lib, hw_cache, replicas=1, layout=Layout(tp=2)),
                              _poisson(lib, 400.0, n=3000)))
    assert not ok["unstable"] and over["unstable"]
    assert over["finished"] == over["requests"]  # it drains, it never hangs


def test_prefill_ending_on_the_last_prompt_token_sets_ttft_in_fast_mode(lib, hw_cache):
    # prompt 8193 with an 8192-token budget: the second step computes one token and emits the
    # first output token; the fast mode must not fold that step into a decode span
    m, hw = lib.model("llama-3.1-8b"), hw_cache("h100-sxm")
    ch = RequestChunk(np.array([0.0]), np.array([8193]), np.array([50]))
    res = {mode: simulate(ServeSetup(m, hw, FP8, Layout(tp=1), mode=mode), [ch])
           for mode in ("fast", "token")}
    assert np.isfinite(res["fast"].first_token_s[0])
    assert res["fast"].first_token_s[0] == pytest.approx(res["token"].first_token_s[0], rel=1e-12)


def test_v0_without_chunked_prefill_serves_long_prompts(lib, hw_cache):
    from sim.serving.engine import engine_config

    m, hw = lib.model("llama-3.1-8b"), hw_cache("h100-sxm")
    ch = RequestChunk(np.array([0.0]), np.array([9000]), np.array([10]))
    res = simulate(ServeSetup(m, hw, FP8, Layout(tp=1), engine=engine_config("vllm-v0")), [ch])
    assert len(res.rid) == 1


def test_pipeline_parallel_serving_is_refused(lib, hw_cache):
    from sim.serving.simulate import ServingError

    with pytest.raises(ServingError, match="pipeline"):
        simulate(ServeSetup(lib.model("llama-3.1-8b"), hw_cache("h100-sxm"), FP8,
                            Layout(tp=1, pp=2)), [])


def test_overheads_and_concurrency_cap_change_latencies(lib, hw_cache, conv_head):
    """The API server delays every first token; a concurrency cap keeps at most that many
    requests in flight, each timed from its send."""
    plain = summarize(simulate(_setup(lib, hw_cache, replicas=1), [conv_head]))
    ov = summarize(simulate(_setup(lib, hw_cache, replicas=1, overheads=_OV), [conv_head]))
    assert ov["ttft_ms"]["mean"] > plain["ttft_ms"]["mean"]
    burst = RequestChunk(np.zeros(60), np.full(60, 500), np.full(60, 50))
    res = simulate(_setup(lib, hw_cache, replicas=1, max_concurrency=4), [burst])
    sends = np.sort(res.arrival_s)
    assert sends[3] == 0.0 and sends[4] > 0.0  # the fifth waits for a slot
    ends = np.sort(res.finish_s)
    for t in sends[4:]:  # never more than 4 in flight when one is sent
        assert np.sum((res.arrival_s <= t) & (res.finish_s > t)) <= 4
    assert ends[0] <= sends[4]


def test_preempted_prefix_kept_in_the_free_queue_until_its_blocks_are_reused():
    """vLLM V1 with prefix caching: a preempted request's full blocks stay cached in the free
    queue (freed to its tail, taken from its head); readmitted, it recomputes only what was
    evicted. Without prefix caching it recomputes everything."""
    from sim.serving.engine import Replica, Req

    def run(caching: bool, evict: int = 0):
        cfg = EngineConfig(prefix_caching=caching, max_num_batched_tokens=10_000)
        rep = Replica(0, cfg, costs=None, num_blocks=10)
        a, b = Req(0, 0.0, prompt=64, output=2), Req(1, 0.0, prompt=80, output=5)
        rep.waiting.extend([a, b])
        p1 = rep.plan()  # both prefill whole: 4 + 5 blocks
        assert [n for _, n in p1.items] == [64, 80] and rep.free_blocks == 1
        rep.apply(p1, 0.0, 1.0, [])
        p2 = rep.plan()  # a takes the last block; b needs a sixth: b is preempted
        assert p2.preempted == [b] and b.computed == 0
        rep._take(evict)  # others reuse `evict` blocks from the queue's head
        rep.apply(p2, 1.0, 2.0, [])  # a finishes, its 5 blocks join the tail
        assert a.generated == 2 and not rep.running
        p3 = rep.plan()
        return p3.items, b, rep

    items, b, rep = run(True)
    assert items == [(b, 1)] and b.cached_tokens == 80  # 5 kept blocks, 1 token recomputed
    assert rep.free_blocks == 10 - 6 and b.blocks == 6
    items, b, _ = run(True, evict=2)  # the queue's head held b's last 2 blocks: 3 kept
    assert items == [(b, 81 - 48)] and b.cached_tokens == 48
    items, b, _ = run(False)
    assert items == [(b, 81)] and b.cached_tokens == 0


def test_preempted_sliding_window_prefix_is_lost_once_any_block_is_reused():
    """Sliding-window layers: a sequence's window blocks (its latest tokens) are freed first and
    so evicted first; the prefix hits only while every freed block is still cached."""
    from sim.serving.engine import Replica, Req

    def kept(evict: int) -> int:
        rep = Replica(0, EngineConfig(prefix_caching=True), costs=None, num_blocks=20,
                      seq_blocks=2)
        r = Req(0, 0.0, prompt=80, output=5)
        rep.waiting.append(r)
        rep.apply(rep.plan(), 0.0, 1.0, [])
        assert r.blocks == 5 + 2
        rep._preempt(r)
        rep._take(13 + evict)  # the 13 never-used blocks first, then `evict` of r's
        return rep._kept_tokens(r)

    assert kept(0) == 80 and kept(1) == 0


def test_fast_mode_equals_token_mode_with_sliding_window_prefix_caching(lib, hw_cache,
                                                                         conv_head):
    kw = dict(model=lib.model("gpt-oss-120b"), layout=Layout(tp=2), replicas=1,
              gpu_memory_utilization=0.739, engine=EngineConfig(prefix_caching=True))
    busy = RequestChunk(conv_head.arrival_s * 0.02, conv_head.input_tokens,
                        conv_head.output_tokens)
    fast = simulate(_setup(lib, hw_cache, mode="fast", **kw), [busy])
    token = simulate(_setup(lib, hw_cache, mode="token", **kw), [busy])
    for col in ("first_token_s", "finish_s"):
        np.testing.assert_allclose(_by_rid(fast, col), _by_rid(token, col), rtol=1e-9, atol=0)
    assert token.preemptions.sum() > 0


def test_a_router_is_one_class_and_one_registration_line(lib, hw_cache, monkeypatch):
    """A new router: a class with `pick`, registered by name; the simulator routes by it."""
    import sim.serving.simulate as simulate_module
    from sim.serving import routers
    from sim.serving.routers import register_router

    registry = dict(routers.ROUTERS)  # the test's router does not outlive it
    monkeypatch.setattr(routers, "ROUTERS", registry)
    monkeypatch.setattr(simulate_module, "ROUTERS", registry)

    @register_router("first_replica")  # the registration line
    class FirstReplica:  # the class: every request to the pool's first replica
        def pick(self, first, count, outstanding, state, rng) -> int:
            return first

    n = 40
    chunk = RequestChunk(np.arange(n) * 0.05, np.full(n, 256), np.full(n, 32))
    res = simulate(ServeSetup(lib.model("llama-3.1-8b"), hw_cache("h100-sxm"),
                              Precision.preset("fp8"), replicas=3, router="first_replica"),
                   [chunk])
    assert len(res.rid) == n and set(res.replica.tolist()) == {0}
    spread = simulate(ServeSetup(lib.model("llama-3.1-8b"), hw_cache("h100-sxm"),
                                 Precision.preset("fp8"), replicas=3, router="round_robin"),
                      [chunk])
    assert set(spread.replica.tolist()) == {0, 1, 2}
