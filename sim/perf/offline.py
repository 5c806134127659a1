"""Offline (batch) throughput of a model on a card for an input/output length mix.

Steady state of continuous batching with chunked prefill: B sequences decode together; each
step every one of them emits a token, and to keep B in flight the step also prefills the prompts
of the r = B/(OSL-1) requests that finish per step. One mixed step therefore holds
B decode tokens + r·ISL prefill tokens and emits B + r tokens:

    tokens/s per card = (B + r) / step_s(B decode + r prefills) / cards

B is the largest batch whose KV cache, B · (ISL + OSL/2) tokens on average, fits in memory
(searched on a grid, since a bigger batch is not always faster once prefill dominates).
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
    """Mean and second moment of input and output lengths (tokens)."""

    isl: float
    osl: float
    isl_sq: float | None = None

    @property
    def isl_second_moment(self) -> float:
        return self.isl**2 if self.isl_sq is None else self.isl_sq


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
    ctx = lengths.isl + osl / 2
    decode = StepBatch.decode(batch, ctx, window) if osl > 1 else StepBatch()
    r = batch / (osl - 1) if osl > 1 else batch
    pre = StepBatch.prefill(r, lengths.isl, lengths.isl_second_moment, window)
    st = step_time(model, hw, layout, prec, decode + pre)
    emitted = (batch if osl > 1 else 0.0) + r
    return st, emitted


def offline_throughput(model: ModelSpec, hw: Hardware, layout: Layout, prec: Precision,
                       lengths: LengthMoments) -> OfflineResult:
    check_layout(model, layout)
    if layout.pp > 1:
        raise LayoutError("pipeline parallelism is modelled for memory and training only; "
                          "serving throughput with pp > 1 is not (use tp)")
    hw.check_precision(prec)
    osl = max(lengths.osl, 1.0)
    seq_kv = lengths.isl + osl / 2
    plan = plan_memory(model, hw, layout, prec, PREFILL_CHUNK_TOKENS,
                       min_sequence_tokens=int(lengths.isl + osl), mean_sequence_tokens=seq_kv)
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
    b_max = int(min(plan.kv_tokens_capacity // seq_kv, MAX_BATCH))
    b_max = max(b_max, 1)
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
                    StepBatch.decode(b, seq_kv, window))
    # share of GPU time spent on prompt tokens (for splitting cost between input and output)
    _, emitted = mixed_step(model, hw, layout, prec, lengths, float(b))
    pre_only = step_time(model, hw, layout, prec, StepBatch.prefill(
        b / (osl - 1) if osl > 1 else b, lengths.isl, lengths.isl_second_moment, window))
    frac = min(max((pre_only.total_s - pre_only.parts["overhead"]) /
                   max(st.total_s - st.parts["overhead"], 1e-12), 0.0), 1.0)
    return OfflineResult(True, "fits", layout, prec, b, tps, dec.total_s, st.total_s,
                         prefill_tps, plan, dict(st.parts), frac)
