"""Request-level discrete-event simulation of LLM serving (simpy stays inside this module).

Arrivals stream in chunks from a traffic source, a router assigns each to a replica, and each
replica runs the vLLM-V1-like scheduler of `engine.py`, asking `sim.perf` how long each step
(or each constant-batch span of decode steps, in fast mode) lasts. Arrivals join at step
boundaries: a request arriving during a step is seen when that step ends.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import simpy

from sim.config.model import ModelSpec
from sim.perf.hardware import Hardware
from sim.perf.memory import Layout, check_layout, plan_memory
from sim.perf.precision import Precision
from sim.perf.step import StepCostTable, StepModel
from sim.serving.api_server import ApiServer, Span
from sim.serving.engine import EngineConfig, Replica, Req, steps_until
from sim.serving.overheads import Overheads
from sim.serving.routers import ROUTERS


class ServingError(ValueError):
    """A user-facing serving configuration error (model does not fit, bad router, ...)."""


@dataclass(frozen=True)
class ServeSetup:
    model: ModelSpec
    hardware: Hardware
    precision: Precision
    layout: Layout = Layout()
    replicas: int = 1
    engine: EngineConfig = EngineConfig()
    router: str = "least_outstanding"
    mode: str = "fast"  # "fast" (constant-batch spans) or "token" (one event per step)
    seed: int = 0
    gpu_memory_utilization: float | None = None
    """vLLM's gpu_memory_utilization; None: the engine's own memory rule."""
    overheads: Overheads | None = None
    """API-server and engine CPU overheads (`sim.serving.overheads`); None: none."""
    max_concurrency: int | None = None
    """Client-side cap on requests in flight (vLLM benchmark's --max-concurrency): a request
    is sent at max(its arrival, the time a slot frees); latencies count from the send."""


@dataclass
class ServeResult:
    """Per-request arrays (finished requests, in finish order) and per-replica counters."""

    rid: np.ndarray
    arrival_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    first_scheduled_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    preemptions: np.ndarray
    replica: np.ndarray
    arrived: int
    rejected: int
    clipped: int
    unfinished: int
    replica_busy_s: list[float]
    replica_prefill_busy_s: list[float]
    replica_steps: list[int]
    replica_peak_blocks: list[int]
    replica_total_blocks: int
    end_s: float
    events: int
    sim_wall_s: float
    mode: str
    notes: list[str] = field(default_factory=list)
    timeline: dict[str, np.ndarray] = field(default_factory=dict)
    """One row per simulated event (a step, or a span of decode steps) per replica: replica,
    start_s, end_s, steps, batch (running requests), kv_blocks_used, prefill_tokens."""
    per_request_path: str | None = None
    """Set when the per-request results were streamed to this Parquet file (`simulate(...,
    per_request_out=)`): the per-request arrays above are then empty, the timeline is not
    kept, and `metrics.summarize` reads the file back in batches."""


class _Timeline:
    """Growable columns of per-event replica state (bounded by events, not requests)."""

    COLS = ("replica", "start_s", "end_s", "steps", "batch", "kv_blocks_used", "prefill_tokens")

    def __init__(self, capacity: int = 4096):
        self.n = 0
        self.cols = {c: np.empty(capacity, dtype=np.float64 if c in ("start_s", "end_s")
                                 else np.int64) for c in self.COLS}

    def add(self, replica: int, start: float, end: float, steps: int, batch: int, blocks: int,
            prefill: int) -> None:
        if self.n == len(self.cols["replica"]):
            for c, arr in self.cols.items():
                self.cols[c] = np.concatenate([arr, np.empty_like(arr)])
        i = self.n
        c = self.cols
        c["replica"][i], c["start_s"][i], c["end_s"][i] = replica, start, end
        c["steps"][i], c["batch"][i], c["kv_blocks_used"][i] = steps, batch, blocks
        c["prefill_tokens"][i] = prefill
        self.n += 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {c: a[: self.n].copy() for c, a in self.cols.items()}


class _Recorder:
    """Growable numpy columns for finished requests (no per-request Python objects kept)."""

    COLS = ("rid", "arrival_s", "first_token_s", "finish_s", "first_scheduled_s",
            "input_tokens", "output_tokens", "preemptions", "replica")

    def __init__(self, capacity: int = 4096):
        self.n = 0
        self.cols = {c: np.empty(capacity, dtype=np.int64 if c in (
            "rid", "input_tokens", "output_tokens", "preemptions", "replica") else np.float64)
            for c in self.COLS}

    def add(self, req: Req, finish_s: float, replica: int) -> None:
        if self.n == len(self.cols["rid"]):
            for c, arr in self.cols.items():
                self.cols[c] = np.concatenate([arr, np.empty_like(arr)])
        i = self.n
        c = self.cols
        c["rid"][i] = req.rid
        c["arrival_s"][i] = req.arrival_s
        c["first_token_s"][i] = req.first_token_s
        c["finish_s"][i] = finish_s
        c["first_scheduled_s"][i] = req.first_scheduled_s
        c["input_tokens"][i] = req.prompt
        c["output_tokens"][i] = req.output
        c["preemptions"][i] = req.preemptions
        c["replica"][i] = replica
        self.n += 1

    def arrays(self) -> dict[str, np.ndarray]:
        return {c: a[: self.n].copy() for c, a in self.cols.items()}


PER_REQUEST_COLUMNS = ("request_id", "replica", "arrival_s", "first_scheduled_s",
                       "first_token_s", "finish_s", "input_tokens", "output_tokens",
                       "preemptions", "queue_s", "ttft_s", "e2e_s", "tpot_s")
"""Columns of the streamed per-request Parquet file (rows in finish order); seconds, tokens.
tpot_s is NaN for a request with one output token."""
STREAM_BATCH_ROWS = 262_144
"""Rows buffered before a batch goes to the Parquet file (one row group): ~27 MB of columns."""


class _ParquetRecorder(_Recorder):
    """Finished requests streamed to a Parquet file in row groups of `batch_rows`: memory stays
    bounded by one batch whatever the number of requests. Written to a temporary file renamed
    over `path` by `close()` (atomic); `abort()` removes it."""

    def __init__(self, path, batch_rows: int | None = None):
        import os
        from pathlib import Path

        import pyarrow as pa

        super().__init__(batch_rows or STREAM_BATCH_ROWS)
        self.path = Path(os.fspath(path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self.total = 0
        self.schema = pa.schema([(c, pa.float64() if c.endswith("_s") else pa.int64())
                                 for c in PER_REQUEST_COLUMNS])
        self.writer = None

    def add(self, req: Req, finish_s: float, replica: int) -> None:
        if self.n == len(self.cols["rid"]):
            self.flush()
        super().add(req, finish_s, replica)

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, self.schema)
        if self.n == 0:
            return
        c = {k: a[: self.n] for k, a in self.cols.items()}
        out = c["output_tokens"]
        e2e, ttft = c["finish_s"] - c["arrival_s"], c["first_token_s"] - c["arrival_s"]
        with np.errstate(divide="ignore", invalid="ignore"):  # the same arithmetic as per_request
            tpot = np.where(out > 1, (e2e - ttft) / (out - 1), np.nan)
        cols = {"request_id": c["rid"], "replica": c["replica"], "arrival_s": c["arrival_s"],
                "first_scheduled_s": c["first_scheduled_s"],
                "first_token_s": c["first_token_s"], "finish_s": c["finish_s"],
                "input_tokens": c["input_tokens"], "output_tokens": out,
                "preemptions": c["preemptions"],
                "queue_s": c["first_scheduled_s"] - c["arrival_s"],
                "ttft_s": ttft, "e2e_s": e2e, "tpot_s": tpot}
        self.writer.write_batch(pa.record_batch([cols[k] for k in PER_REQUEST_COLUMNS],
                                                schema=self.schema))
        self.total += self.n
        self.n = 0

    def close(self) -> str:
        import os

        self.flush()
        self.writer.close()
        os.replace(self.tmp, self.path)
        return str(self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


class _NoTimeline(_Timeline):
    """Keeps no per-event rows (their number grows with the run): for streamed runs."""

    def __init__(self):
        super().__init__(0)

    def add(self, *args) -> None:
        pass


def _kv_blocks(setup: ServeSetup) -> tuple[int, int]:
    """(KV blocks of one replica, blocks every running sequence holds for its sliding-window
    layers). A block holds `block_size` tokens of the full-attention layers; a model with
    sliding-window layers keeps the window's KV per sequence on top (exact once a sequence is
    as long as the window, conservative below it), as vLLM's hybrid allocator does."""
    import sim.perf.memory as mem

    plan = plan_memory(setup.model, setup.hardware, setup.layout, setup.precision,
                       tokens_per_step=setup.engine.max_num_batched_tokens,
                       min_sequence_tokens=1,
                       memory_utilization=setup.gpu_memory_utilization)
    kv_bytes = plan.kv_budget_bytes
    bs = setup.engine.block_size
    per_token = mem.kv_bytes_per_token(setup.model, setup.layout, setup.precision)
    window_bytes = mem.kv_window_bytes_per_sequence(setup.model, setup.layout, setup.precision)
    if per_token <= 0:  # every layer windowed: blocks at the amortised rate
        per_token, window_bytes = plan.kv_bytes_per_token, 0.0
    if kv_bytes <= 0 or per_token <= 0:
        return 0, 0
    return int(kv_bytes // per_token) // bs, int(math.ceil(window_bytes / (per_token * bs)))


def iter_traffic(traffic) -> Iterator:
    """Request chunks from a traffic source (`iter_chunks()`) or an iterable of chunks."""
    it = traffic.iter_chunks() if hasattr(traffic, "iter_chunks") else iter(traffic)
    yield from it


def admit_lengths(p: int, o: int, max_len: int, cfg: EngineConfig,
                  max_req_tokens: int) -> tuple[int, int, str]:
    """Apply the context-window policy: (prompt, output, "ok" | "clipped" | "rejected")."""
    status = "ok"
    if p + o > max_len:
        if cfg.long_prompt_policy == "reject":
            return p, o, "rejected"
        status = "clipped"
        o = min(o, max_len - 1)
        p = max(1, max_len - o)
    if p + o > max_req_tokens:  # its KV could never fit one replica's cache
        return p, o, "rejected"
    return p, o, status


def pick_replica(router: str, first: int, count: int, outstanding: list[int], state: dict,
                 rng: np.random.Generator) -> int:
    """Route among replicas first..first+count-1 by the registered `router` (sim.serving.routers)."""
    return ROUTERS[router].pick(first, count, outstanding, state, rng)


def arrival_process(env: simpy.Environment, traffic, max_len: int, cfg: EngineConfig,
                    max_req_tokens: int, state: dict,
                    on_request: Callable[[int, float, int, int], None],
                    overheads: Overheads | None = None, max_concurrency: int | None = None):
    """The simpy process that releases each request at its arrival time, applies the context
    policy (counting clipped and rejected ones in `state`) and hands the rest to `on_request(
    request id, arrival s, prompt tokens, output tokens)`.

    `max_concurrency`: a request is sent only when fewer are in flight
    (`state["client_in_flight"]`, decremented by `release_slot`); `overheads`: the request reaches the engine after the
    FIFO API server (`Overheads.api_entry_s`), its arrival time staying the send time."""
    rid = 0
    api = overheads if overheads and (overheads.api_request_s
                                      or overheads.api_tokenize_s_per_input_token) else None
    state.setdefault("client_in_flight", 0)
    state["api_free_s"] = 0.0
    for ch in iter_traffic(traffic):
        arr, inp, out = ch.arrival_s, ch.input_tokens, ch.output_tokens
        for j in range(len(arr)):
            t = float(arr[j])
            if t > env.now:
                yield env.timeout(t - env.now)
            while max_concurrency and state["client_in_flight"] >= max_concurrency:
                state["slot"] = env.event()
                yield state["slot"]
            # a request held back (a concurrency cap) is sent, and timed, when it goes; one the
            # clock reached on time keeps its exact arrival (the clock reaches t within rounding)
            if env.now - t > 1e-9 * max(abs(t), 1.0):
                t = float(env.now)
            state["arrived"] += 1
            p, o, status = admit_lengths(int(inp[j]), int(out[j]), max_len, cfg, max_req_tokens)
            if status != "ok":
                state[status] += 1
            if status == "rejected":
                rid += 1
                continue
            state["client_in_flight"] += 1
            if api is not None:
                entry = api.api_entry_s(t, state["api_free_s"], p)
                state["api_free_s"] = entry
                if entry > env.now:
                    env.process(_enter_later(env, entry, on_request, rid, t, p, o))
                    rid += 1
                    continue
            on_request(rid, t, p, o)
            rid += 1


def _enter_later(env: simpy.Environment, entry_s: float, on_request, rid: int, t: float,
                 p: int, o: int):
    """Hand a request to the engine at `entry_s` (after the API server)."""
    yield env.timeout(entry_s - env.now)
    on_request(rid, t, p, o)


def release_slot(state: dict, count: int) -> None:
    """`count` requests finished: free their client slots (wakes a waiting sender)."""
    state["client_in_flight"] = state.get("client_in_flight", 0) - count
    ev = state.get("slot")
    if ev is not None and not ev.triggered:
        ev.succeed()


def notify_replica(i: int, admit_now: bool, fast: bool, wake: list, interrupt: list) -> None:
    """A request joined replica i's queue: wake it if idle, or end its decode span early (fast
    mode) if the request could be admitted at the next step boundary."""
    if wake[i] is not None and not wake[i].triggered:
        wake[i].succeed()
    elif fast and admit_now and interrupt[i] is not None and not interrupt[i].triggered:
        interrupt[i].succeed()


def replica_process(env: simpy.Environment, rep: Replica, fast: bool, wake: list, interrupt: list,
                    state: dict, tl: "_Timeline", done: Callable[[Replica, list[Req], float], None],
                    can_wait: Callable[[int], bool] = lambda i: False,
                    front: "FrontEnds | None" = None):
    """The simpy process of one replica: sleep while idle, else run one step, or (fast mode) a
    span of constant-batch decode steps that an admissible arrival may cut short at the first
    step boundary after it. `done` receives the requests that finished at each event's end;
    `can_wait(i)` says whether a replica with nothing schedulable may wait for blocks to come
    back (disaggregated prefill: KV still being sent) instead of reporting a stall.
    `front`: the replica's API server (`FrontEnds`), told of every step's emitted tokens."""
    i = rep.idx
    while True:
        if front is not None:
            front.sync(i)
        if not rep.has_work():
            wake[i] = env.event()
            yield wake[i]
            wake[i] = None
            continue
        state["events"] += 1
        k = rep.decode_span_limit() if fast else 0
        if k >= 2:
            a, b = rep.span_costs()
            start = env.now
            dur = k * a + b * k * (k - 1) / 2
            k_planned = k
            jobs = (front.span_jobs(i, start, a, b, k, len(rep.running),
                                    rep.steps_to_first_finish == k) if front else None)
            if rep.could_admit_new():  # an arrival may end the span early
                interrupt[i] = ev = env.event()
                yield env.timeout(dur) | ev
                interrupt[i] = None
            else:  # nothing that arrives can be admitted before a finish
                ev = None
                yield env.timeout(dur)
            if ev is not None and ev.triggered and env.now < start + dur:
                k = steps_until(start, a, b, env.now, k)
                end = start + k * a + b * k * (k - 1) / 2
                if end > env.now:
                    yield env.timeout(end - env.now)
            finished: list[Req] = []
            batch = len(rep.running)
            end = rep.apply_span(k, start, a, b, finished)
            if jobs is not None:
                front.span_done(i, jobs, k, k_planned, finished)
            tl.add(i, start, end, k, batch, rep.total_blocks - rep.free_blocks, 0)
            done(rep, finished, end)
            continue
        plan = rep.plan()
        if not plan.items:
            if can_wait(i):
                wake[i] = env.event()
                yield wake[i]
                wake[i] = None
                continue
            # nothing schedulable (the head request needs blocks only a finish frees, with
            # nothing running): it cannot progress
            raise ServingError("scheduler stalled with nothing running; a request needs "
                               "more KV blocks than the cache holds")
        start = env.now
        dur = rep.step_cost(plan)
        job = (front.step_job(i, start, dur, int(round(plan.batch.logits_tokens)),
                              rep.may_finish(plan)) if front else None)
        new = [r for r, _ in plan.items if r.generated == 0] if job is not None else []
        yield env.timeout(dur)
        finished = []
        tl.add(i, start, start + dur, 1, len(plan.items), rep.total_blocks - rep.free_blocks,
               int(plan.batch.prefill_tokens))
        rep.apply(plan, start, start + dur, finished)
        if job is not None:
            front.step_done(i, job, [r for r in new if r.generated >= 1], finished)
        done(rep, finished, start + dur)


class FrontEnds:
    """Every replica's API server (`sim.serving.api_server`) as a simpy process: the engine
    hands it each step's emitted tokens; requests reach the engine's queue when tokenised and
    their tokens reach the client when the output handler has processed them."""

    def __init__(self, env: simpy.Environment, ov: Overheads, replicas: int,
                 enqueue: Callable[[int, float, object], None],
                 deliver: Callable[[int, float, Span], None]):
        self.env = env
        self.deliver = deliver
        self.pending = [math.inf] * replicas  # the earliest wake-up scheduled per replica
        self.apis = [ApiServer(ov.api_request_s, ov.api_tokenize_s_per_input_token,
                               ov.detokenize_s_per_output_token,
                               (lambda t, pl, i=i: enqueue(i, t, pl)),
                               (lambda t, job, i=i: deliver(i, t, job)))
                     for i in range(replicas)]

    def _touch(self, i: int) -> None:
        """Schedule a wake-up at the front-end's next event if it is earlier than the one
        scheduled (a timeout with a callback: cheaper than a process)."""
        nxt = self.apis[i].next_wake_s()
        if nxt < self.pending[i]:
            self.pending[i] = nxt
            ev = self.env.timeout(max(nxt - self.env.now, 0.0))
            ev.callbacks.append(lambda _ev, i=i, t=nxt: self._fire(i, t))

    def _fire(self, i: int, t: float) -> None:
        if t != self.pending[i]:  # superseded by an earlier wake-up, which rescheduled
            return
        self.pending[i] = math.inf
        self.apis[i].advance(max(self.env.now, t))
        self._touch(i)

    def sync(self, i: int) -> None:
        self.apis[i].advance(self.env.now)

    def submit(self, i: int, prompt_tokens: int, payload) -> None:
        self.apis[i].submit(self.env.now, prompt_tokens, payload)
        self._touch(i)

    def step_job(self, i: int, start_s: float, dur_s: float, emitted: int,
                 finishes: bool) -> Span | None:
        """One engine step (token mode, or a step of fast mode that is not a decode span);
        `finishes`: it may finish a request (the simulator wakes at its delivery)."""
        if emitted <= 0:
            return None
        sp = self.apis[i].register(self.env.now, start_s, dur_s, 0.0, 1, emitted, finishes)
        self._touch(i)
        return sp

    def step_done(self, i: int, sp: Span, firsts: list[Req], finished: list[Req]) -> None:
        """The engine applied the span's last step: what it emitted goes with the span (at
        once if the output handler already delivered it, at this same instant)."""
        if sp.delivered:
            late = Span(sp.start_s, sp.a, sp.b, sp.k, 0.0, sp.c_end, False)
            late.firsts, late.finished = firsts, finished
            self.deliver(i, sp.c_end, late)
            return
        sp.firsts.extend(firsts)
        sp.finished.extend(finished)

    def span_jobs(self, i: int, start_s: float, a: float, b: float, k: int,
                  emitted: int, finishes: bool) -> Span:
        sp = self.apis[i].register(self.env.now, start_s, a, b, k, emitted, finishes)
        self._touch(i)
        return sp

    def span_done(self, i: int, sp: Span, k: int, k_planned: int,
                  finished: list[Req]) -> None:
        if k < k_planned:
            self.apis[i].cut(self.env.now, sp, k)
            self._touch(i)
        self.step_done(i, sp, [], finished)


def simulate(setup: ServeSetup, traffic: Iterable, per_request_out=None) -> ServeResult:
    """Replay `traffic` (an object with `iter_chunks()`, or an iterable of request chunks with
    `arrival_s`, `input_tokens`, `output_tokens` arrays) through the replicas.

    `per_request_out` (a path): stream each finished request to that Parquet file
    (`PER_REQUEST_COLUMNS`, in finish order, written atomically) instead of keeping the arrays,
    and keep no per-event timeline, so memory stays bounded however many requests arrive;
    `metrics.summarize` then reads the file back in batches into quantile sketches."""
    if setup.router not in ROUTERS:
        raise ServingError(f"unknown router '{setup.router}' (known: {', '.join(ROUTERS)})")
    if setup.mode not in ("fast", "token"):
        raise ServingError(f"unknown mode '{setup.mode}' (known: fast, token)")
    if setup.replicas < 1:
        raise ServingError(f"replicas must be >= 1 (got {setup.replicas})")
    check_layout(setup.model, setup.layout)
    if setup.layout.pp > 1:
        raise ServingError("pipeline-parallel serving is not modelled (use tp)")
    setup.hardware.check_precision(setup.precision)
    num_blocks, seq_blocks = _kv_blocks(setup)
    arch = setup.model.architecture
    max_len = setup.engine.max_model_len or arch.max_context_tokens
    if num_blocks * setup.engine.block_size < 2 * setup.engine.block_size:
        raise ServingError(
            f"{setup.model.name} does not fit on {setup.hardware.card.name} at TP "
            f"{setup.layout.tp}: no room for a KV cache")
    cfg = setup.engine
    if not cfg.enable_chunked_prefill and cfg.max_num_batched_tokens < max_len:
        # vLLM requires max_num_batched_tokens >= max_model_len without chunked prefill (V0's
        # default is max(max_model_len, 2048)); apply it rather than stall on long prompts
        cfg = dataclasses.replace(cfg, max_num_batched_tokens=max(max_len, 2048))
    ov = setup.overheads or Overheads()
    sm = StepModel(setup.model, setup.hardware, setup.layout, setup.precision,
                   fused_moe_efficiency=ov.moe_grouped_gemm_efficiency)
    costs = StepCostTable(sm, cfg.max_num_batched_tokens + cfg.max_num_seqs, cfg.max_num_seqs,
                          ov.graph_max_tokens(cfg.max_num_seqs, cfg.max_num_batched_tokens),
                          ov.cuda_graph_layer_fixed_scale)
    window = arch.sliding_window.window_tokens if arch.sliding_window else None
    reps = [Replica(i, cfg, costs, num_blocks, window, seq_blocks, ov)
            for i in range(setup.replicas)]
    rng = np.random.default_rng(np.random.SeedSequence(setup.seed).spawn(1)[0])
    env = simpy.Environment()
    rec = _Recorder() if per_request_out is None else _ParquetRecorder(per_request_out)
    tl = _Timeline() if per_request_out is None else _NoTimeline()
    state = {"arrived": 0, "rejected": 0, "clipped": 0, "events": 0, "rr": 0}
    outstanding = [0] * setup.replicas
    wake: list[simpy.Event | None] = [None] * setup.replicas
    interrupt: list[simpy.Event | None] = [None] * setup.replicas
    fast = setup.mode == "fast"
    max_req_tokens = (num_blocks - seq_blocks) * cfg.block_size

    def enqueue(i: int, rid: int, t: float, p: int, o: int) -> None:
        rep = reps[i]
        admit_now = rep.could_admit_new()
        rep.waiting.append(Req(rid, t, p, o))
        notify_replica(i, admit_now, fast, wake, interrupt)

    def on_request(rid: int, t: float, p: int, o: int) -> None:
        i = pick_replica(setup.router, 0, setup.replicas, outstanding, state, rng)
        outstanding[i] += p + o
        if front is not None:
            front.submit(i, p, (rid, t, p, o))
        else:
            enqueue(i, rid, t, p, o)

    def tokenised(i: int, entry_s: float, payload) -> None:
        if entry_s > env.now:
            env.process(_enter_later(env, entry_s, functools.partial(enqueue, i), *payload))
        else:
            enqueue(i, *payload)

    def delivered(i: int, t: float, job: Span) -> None:
        for r in job.firsts:
            r.first_token_s = t
        for r in job.finished:
            rec.add(r, t, i)
        if job.finished:
            release_slot(state, len(job.finished))

    def finish(rep: Replica, finished: list[Req], end_s: float) -> None:
        for r in finished:
            if front is None:
                rec.add(r, end_s, rep.idx)
            outstanding[rep.idx] -= r.prompt + r.output
        if finished and front is None:
            release_slot(state, len(finished))

    wall0 = time.perf_counter()
    front = (FrontEnds(env, ov, setup.replicas, tokenised, delivered)
             if ov.front_end_process else None)
    env.process(arrival_process(env, traffic, max_len, cfg, max_req_tokens, state, on_request,
                                None if front else ov, setup.max_concurrency))
    for rep in reps:
        env.process(replica_process(env, rep, fast, wake, interrupt, state, tl, finish,
                                    front=front))
    if per_request_out is None:
        env.run()
        path = None
    else:
        try:
            env.run()
            path = rec.close()
        except BaseException:
            rec.abort()
            raise
    wall = time.perf_counter() - wall0
    arrays = _Recorder(0).arrays() if path else rec.arrays()
    unfinished = sum(len(r.running) + len(r.waiting) for r in reps)
    return ServeResult(
        **arrays, arrived=state["arrived"], rejected=state["rejected"],
        clipped=state["clipped"], unfinished=unfinished,
        replica_busy_s=[r.busy_s for r in reps],
        replica_prefill_busy_s=[r.prefill_busy_s for r in reps],
        replica_steps=[r.steps for r in reps],
        replica_peak_blocks=[r.peak_blocks_used for r in reps], replica_total_blocks=num_blocks,
        end_s=float(env.now), events=state["events"], sim_wall_s=wall, mode=setup.mode,
        timeline=tl.arrays(), per_request_path=path)


def is_finite(x: float) -> bool:
    return not (math.isnan(x) or math.isinf(x))
