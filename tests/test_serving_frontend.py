"""vLLM V1's API server as its own process (sim/serving/api_server.py): the event loop's
output handler (FIFO over the engine's steps), request handlers sharing the loop's remaining
time, the tokenizer thread; and the simulator's fast mode still equal to its token mode."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.perf.memory import Layout
from sim.perf.precision import Precision
from sim.serving.api_server import ApiServer, Span
from sim.serving.engine import engine_config
from sim.serving.metrics import summarize
from sim.serving.overheads import Overheads
from sim.serving.simulate import ServeSetup, simulate
from sim.serving.traffic import RequestChunk

FP8 = Precision.preset("fp8")


def _server(request_s=1e-3, tokenize_s=0.0, detok_s=0.0):
    got = {"tok": [], "out": []}
    api = ApiServer(request_s, tokenize_s, detok_s, lambda t, pl: got["tok"].append((t, pl)),
                    lambda t, sp: got["out"].append((t, sp)))
    return api, got


def test_a_burst_of_handlers_shares_the_loop_and_the_tokenizer_is_fifo():
    api, got = _server(request_s=2e-3, tokenize_s=1e-6)
    for i in range(10):
        api.submit(0.0, 1000, i)
    api.advance(1.0)
    # processor sharing: ten equal handlers all finish at 10 x 2 ms; then one tokenizer thread
    ends = [t for t, _ in got["tok"]]
    assert ends == pytest.approx([0.02 + (j + 1) * 1e-3 for j in range(10)], rel=1e-12)


def test_output_work_delays_the_intake_of_a_request():
    api, got = _server(request_s=1e-3, detok_s=1e-4)
    api.register(0.0, 0.0, 5e-4, 0.0, 1, 20, True)  # a step ending at 0.5 ms, 20 tokens: 2 ms
    api.submit(0.0, 10, "r")
    api.advance(1.0)
    # the handler ran 0.5 ms, waited 2 ms for the output handler, ran its last 0.5 ms
    assert got["tok"][0][0] == pytest.approx(3e-3, rel=1e-12)
    assert got["out"][0][0] == pytest.approx(2.5e-3, rel=1e-12)


@pytest.mark.parametrize("a,b,w", [(0.02, 0.0, 0.005), (0.02, 1e-4, 0.03), (0.01, 2e-3, 0.02)])
def test_a_span_delivers_when_its_steps_one_by_one_would(a, b, w):
    """The closed form of a span (C_m = max(C_0 + m w, t_1 + m w, t_m + w)) is the FIFO
    recurrence over its steps, whether the handler keeps up or falls behind."""
    k, start = 40, 0.3
    one, got1 = _server(detok_s=w)
    one.register(0.0, 0.0, 0.35, 0.0, 1, 1, False)  # earlier work still queued
    one.register(0.0, start, a, b, k, 1, True)
    one.advance(100.0)
    c = 0.35 + w
    for j in range(1, k + 1):
        c = max(c, start + j * a + b * j * (j - 1) / 2) + w
    assert got1["out"][-1][0] == pytest.approx(c, rel=1e-12)


def test_a_cut_span_delivers_its_last_kept_step():
    api, got = _server(detok_s=0.001)
    sp = api.register(0.0, 0.0, 0.01, 0.0, 10, 1, False)
    api.cut(0.0, sp, 3)
    assert api.next_wake_s() == pytest.approx(0.031, rel=1e-12)
    api.advance(1.0)
    assert [t for t, _ in got["out"]] == pytest.approx([0.031], rel=1e-12)


def _setup(lib, hw_cache, mode, ov, **kw):
    return ServeSetup(lib.model("llama-3.1-8b"), hw_cache("h100-sxm"), FP8, Layout(tp=1),
                      replicas=kw.pop("replicas", 1), mode=mode, overheads=ov, **kw)


_OV = Overheads(api_request_s=3e-3, api_tokenize_s_per_input_token=5e-6,
                scheduler_s_per_running_request=2e-5, detokenize_s_per_output_token=4e-4,
                cuda_graph_max_tokens=512, cuda_graph_layer_fixed_scale=0.5)
"""Test inputs (not library values): an output handler that falls behind a large batch."""


@pytest.mark.parametrize("kw", [{}, {"max_concurrency": 48}, {"replicas": 2}])
def test_fast_mode_equals_token_mode_with_the_front_end(lib, hw_cache, kw):
    rng = np.random.default_rng(3)
    n = 300
    arr = rng.uniform(0, 2.0, n)  # 30% of the requests at once, the rest over two seconds
    arr[: n * 3 // 10] = 0.0
    burst = RequestChunk(np.sort(arr),
                         rng.integers(50, 2000, n), rng.integers(2, 300, n))
    fast = simulate(_setup(lib, hw_cache, "fast", _OV, **kw), [burst])
    token = simulate(_setup(lib, hw_cache, "token", _OV, **kw), [burst])
    assert fast.unfinished == token.unfinished == 0
    o1, o2 = np.argsort(fast.rid), np.argsort(token.rid)
    assert np.array_equal(fast.rid[o1], token.rid[o2])
    for col in ("first_token_s", "finish_s", "first_scheduled_s"):
        np.testing.assert_allclose(getattr(fast, col)[o1], getattr(token, col)[o2],
                                   rtol=1e-9, atol=0)
    assert fast.events < token.events


def test_streaming_a_large_batch_sets_the_inter_token_time(lib, hw_cache):
    """1000 requests of 8 tokens at once: the handlers finish together, so the engine runs
    them as one batch and the output handler (1000 tokens x 0.5 ms a step) paces every
    stream, well beyond the engine's own step; with the one FIFO server instead (fifo), the
    requests reach the engine one after the other and the first are served early."""
    n = 1000
    burst = RequestChunk(np.zeros(n), np.full(n, 8), np.full(n, 4))
    ov = Overheads(api_request_s=1e-3, detokenize_s_per_output_token=5e-4)
    eng = engine_config("vllm-v1", max_num_seqs=1024)
    res = simulate(_setup(lib, hw_cache, "fast", ov, engine=eng), [burst])
    s = summarize(res)
    ttft = res.first_token_s - res.arrival_s
    assert np.percentile(ttft, 10) > 0.9 * n * 1e-3  # nobody is served before the intake ends
    plain = summarize(simulate(_setup(lib, hw_cache, "fast", Overheads(api_request_s=1e-3),
                                      engine=eng), [burst]))
    assert 3 * plain["tpot_ms"]["mean"] < s["tpot_ms"]["mean"]
    assert s["tpot_ms"]["mean"] == pytest.approx(n * 0.5, rel=0.05)
    fifo = summarize(simulate(_setup(lib, hw_cache, "fast", Overheads(
        api_request_s=1e-3, detokenize_s_per_output_token=5e-4, front_end="fifo"),
        engine=eng), [burst]))
    assert fifo["ttft_ms"]["mean"] < 0.7 * s["ttft_ms"]["mean"]


def test_front_end_must_be_known():
    with pytest.raises(ValueError, match="front_end"):
        Overheads(front_end="threads")
    assert not Overheads().front_end_process
    assert Overheads(detokenize_s_per_output_token=1e-5).front_end_process
    assert Overheads(detokenize_s_per_output_token=1e-5).step_cpu_s(0, 10, 0) == 0.0
    assert Overheads(detokenize_s_per_output_token=1e-5, front_end="fifo").step_cpu_s(
        0, 10, 0) == pytest.approx(1e-4)
    assert math.isinf(_server()[0].next_wake_s())
    assert isinstance(_server()[0].register(0.0, 0.0, 1.0, 0.0, 1, 1, True), Span)
