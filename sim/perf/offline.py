"""Offline (batch) throughput of a model on a card for an input/output length mix.

Steady state of continuous batching with chunked prefill: B sequences decode together; each
step every one of them emits a token, and to keep B in flight the step also prefills the prompts
of the r = B/(OSL-1) requests that finish per step. One mixed step therefore holds
B decode tokens + r·ISL prefill tokens and emits B + r tokens:

    tokens/s per card = (B + r) / step_s(B decode + r prefills) / cards

The engine the card runs (`Hardware.engine`) sets what B can be:
- KV admission: a paged engine holds each running sequence's current context, whose mean over
  running sequences is length-biased, E[I] + E[O²]/(2·E[O]) (a sequence with a long output is
  running for more of the time); an engine that reserves (TensorRT-LLM's GUARANTEED_NO_EVICT)
  holds every sequence's prompt plus its maximum output;
- its batch cap (`max_batch`);
- static shapes: prompts are padded to the sequence bucket (compute and KV), batches to the batch
  bucket (compute).
B is the largest batch that fits unless given (a submitter's or vendor's stated batch), searched
on a grid in planning mode, since a bigger batch is not always faster once prefill dominates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config.model import ModelSpec
from sim.perf.hardware import Hardware
from sim.perf.memory import Layout, LayoutError, MemoryPlan, check_layout, plan_memory
from sim.perf.precision import Precision
from sim.perf.step import StepBatch, StepTime, step_time

PREFILL_CHUNK_TOKENS = 8192
"""Token budget of a prefill-only step (TensorRT-LLM / vLLM `max_num_batched_tokens` in
throughput-oriented configurations)."""

MAX_BATCH = 4096
"""Upper bound on concurrent sequences per replica searched (engines cap `max_num_seqs`)."""


@dataclass(frozen=True)
class LengthMoments:
    """Mean and second moment of input and output lengths (tokens); `osl_max` is the output cap
    a reserving engine budgets for (default: the mean, i.e. fixed lengths)."""

    isl: float
    osl: float
    isl_sq: float | None = None
    osl_sq: float | None = None
    osl_max: float | None = None

    @property
    def isl_second_moment(self) -> float:
        return self.isl**2 if self.isl_sq is None else self.isl_sq

    @property
    def osl_second_moment(self) -> float:
        return self.osl**2 if self.osl_sq is None else self.osl_sq

    @property
    def fixed(self) -> bool:
        return self.isl_second_moment <= self.isl**2 * (1 + 1e-12)

    def decode_context(self) -> float:
        """Mean KV context of a running decode sequence: E[I] + E[O²]/(2·E[O]) (length-biased:
        time spent decoding is proportional to O; equals I + O/2 for fixed lengths)."""
        osl = max(self.osl, 1.0)
        return self.isl + self.osl_second_moment / (2 * osl)

    def padded(self, bucket: int) -> "LengthMoments":
        """Prompts padded up to a multiple of `bucket` tokens: exact for fixed lengths; for a
        mix, the mean pad of a length spread over several buckets is bucket/2."""
        if bucket <= 1:
            return self
        if self.fixed:
            isl = float(-(-self.isl // bucket) * bucket)
            sq = None
        else:
            isl = self.isl + bucket / 2
            sq = self.isl_second_moment + self.isl * bucket + bucket**2 / 3
        return LengthMoments(isl, self.osl, sq, self.osl_sq, self.osl_max)


def kv_tokens_per_sequence(hw: Hardware, lengths: LengthMoments) -> float:
    """KV tokens one running sequence holds on average under the engine's admission rule."""
    eng = hw.engine
    if eng is not None and eng.rules.kv_admission == "reserve":
        return lengths.isl + (lengths.osl_max or lengths.osl)
    return lengths.decode_context()


def engine_lengths(hw: Hardware, lengths: LengthMoments) -> LengthMoments:
    """The lengths the engine computes on (prompts padded to its sequence bucket)."""
    eng = hw.engine
    if eng is not None and eng.rules.static_shapes is not None:
        return lengths.padded(eng.rules.static_shapes.seq_bucket_tokens)
    return lengths


def padded_batch(hw: Hardware, batch: float) -> float:
    eng = hw.engine
    if eng is not None and eng.rules.static_shapes is not None:
        b = eng.rules.static_shapes.batch_bucket
        return float(-(-batch // b) * b)
    return batch


@dataclass(frozen=True)
class OfflineResult:
    fits: bool
    reason: str
    layout: Layout
    precision: Precision
    batch_size: int
    offline_tokens_per_s_per_card: float
    decode_step_s: float
    mixed_step_s: float
    prefill_tokens_per_s_per_card: float
    memory: MemoryPlan
    step_parts: dict[str, float] = field(hash=False)
    prefill_time_fraction: float = 0.0


def mixed_step(model: ModelSpec, hw: Hardware, layout: Layout, prec: Precision,
               lengths: LengthMoments, batch: float) -> tuple[StepTime, float]:
    """(step time, tokens emitted) of the steady-state mixed step with `batch` decoders."""
    a = model.architecture
    window = a.sliding_window.window_tokens if a.sliding_window else None
    osl = max(lengths.osl, 1.0)
    run = engine_lengths(hw, lengths)
    ctx = run.decode_context()
    computed = padded_batch(hw, batch)
    decode = StepBatch.decode(computed, ctx, window) if osl > 1 else StepBatch()
    r = batch / (osl - 1) if osl > 1 else batch
    pre = StepBatch.prefill(r, run.isl, run.isl_second_moment, window)
    st = step_time(model, hw, layout, prec, decode + pre)
    emitted = (batch if osl > 1 else 0.0) + r
    return st, emitted


def offline_throughput(model: ModelSpec, hw: Hardware, layout: Layout, prec: Precision,
                       lengths: LengthMoments, batch: int | None = None) -> OfflineResult:
    """Best offline tokens/s per card over batch sizes up to the largest that fits (planning),
    or at `batch` (capped by memory and the engine's batch limit) when given, as a submitter or
    a vendor table ran it."""
    check_layout(model, layout)
    if layout.pp > 1:
        raise LayoutError("pipeline parallelism is modelled for memory and training only; "
                          "serving throughput with pp > 1 is not (use tp)")
    hw.check_precision(prec)
    osl = max(lengths.osl, 1.0)
    run = engine_lengths(hw, lengths)
    seq_kv = kv_tokens_per_sequence(hw, run)
    chunk = hw.engine.rules.max_num_tokens if hw.engine is not None else PREFILL_CHUNK_TOKENS
    plan = plan_memory(model, hw, layout, prec, chunk,
                       min_sequence_tokens=int(run.isl + osl), mean_sequence_tokens=seq_kv)
    cards = layout.cards
    a = model.architecture
    window = a.sliding_window.window_tokens if a.sliding_window else None
    pre_seqs = max(PREFILL_CHUNK_TOKENS / max(lengths.isl, 1.0), 1.0)
    pre_st = step_time(model, hw, layout, prec,
                       StepBatch.prefill(pre_seqs, lengths.isl, lengths.isl_second_moment, window))
    prefill_tps = pre_seqs * lengths.isl / pre_st.total_s / cards
    if not plan.fits:
        return OfflineResult(False, plan.reason, layout, prec, 0, 0.0, float("nan"), float("nan"),
                             prefill_tps, plan, {})
    cap = hw.engine.rules.max_batch if hw.engine is not None else MAX_BATCH
    if batch is not None:
        # a stated batch is a fact about the run (the submitter's or the vendor's harness chose
        # it, whatever the engine's default admission): memory only has to hold it, at the
        # peak (I + O when fixed lengths grow in step, the running mean for a spread of them)
        seq_kv = run.isl + run.osl if run.fixed else run.decode_context()
        cap = max(cap, int(batch))
    b_max = int(min(plan.kv_tokens_capacity // seq_kv, cap))
    b_max = max(b_max, 1)
    if batch is not None:
        grid = np.array([max(min(int(batch), b_max), 1)])
    else:
        grid = np.unique(np.concatenate([np.geomspace(1, b_max, 40).round(), [b_max]])).astype(int)
    best = None
    for b in grid:
        st, emitted = mixed_step(model, hw, layout, prec, lengths, float(b))
        tps = emitted / st.total_s / cards
        if best is None or tps > best[0]:
            best = (tps, int(b), st)
    assert best is not None
    tps, b, st = best
    dec = step_time(model, hw, layout, prec,
                    StepBatch.decode(b, run.decode_context(), window))
    # share of GPU time spent on prompt tokens (for splitting cost between input and output)
    _, emitted = mixed_step(model, hw, layout, prec, lengths, float(b))
    pre_only = step_time(model, hw, layout, prec, StepBatch.prefill(
        b / (osl - 1) if osl > 1 else b, lengths.isl, lengths.isl_second_moment, window))
    frac = min(max((pre_only.total_s - pre_only.parts["overhead"]) /
                   max(st.total_s - st.parts["overhead"], 1e-12), 0.0), 1.0)
    return OfflineResult(True, "fits", layout, prec, b, tps, dec.total_s, st.total_s,
                         prefill_tps, plan, dict(st.parts), frac)
