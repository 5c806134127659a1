"""Achieved efficiencies per card and software stack (hardware_specs/calibration).

Each number is a `CalValue` with a tier (measured > published > assumed) and a source. The
performance model reads these through `sim.perf.efficiency`, which reports the tier it used.
"""

from __future__ import annotations

from pydantic import model_validator

from sim.config.base import CalValue, FleetsimModel, WithSources


class GemmCalibration(FleetsimModel):
    """Dense GEMM efficiency (achieved / peak) at large shapes per precision, and its shape curve.

    Shape curve: efficiency(m) = large · m / (m + m_half_tokens), where m is the number of token
    rows of the GEMM (batch·tokens); a skinny decode GEMM with m ≪ m_half runs far below peak
    (and is usually bandwidth-bound anyway). `kernel_latency_us` is the fixed device time every
    GEMM kernel takes on top of its roofline time (prologue, first wave, tail), which dominates
    small tensor-parallel shards. `sustained_fraction` is the share of the burst rate a
    compute-bound kernel keeps under sustained load at the card's power limit (clocks drop).
    `compute_fixed_us` is the further fixed time a compute-bound tiled GEMM kernel takes beyond
    `kernel_latency_us`: the intercept of kernel time against FLOPs between two large square
    shapes of one sweep, less the kernel latency. The step model charges it by the GEMM's rows,
    m / (m + m_half_tokens): libraries run a decode GEMM of a few rows as another (skinny,
    split-K) kernel that does not pay it, a GEMM of many rows as a tiled one; it weighs on
    small tensor-parallel shards. Absent: 0 (not measured), said in the factor.
    `fp8_beyond_cache` is the FP8 rate of a GEMM whose two operands (at one byte each) exceed
    the card's last-level cache (`Memory.last_level_cache_mb`), over the rate `fp8` holds (a
    sweep's large shapes that fit the cache). Absent: 1 (no such drop measured)."""

    bf16: CalValue | None = None
    fp8: CalValue | None = None
    fp4: CalValue | None = None
    int8: CalValue | None = None
    m_half_tokens: CalValue | None = None
    kernel_latency_us: CalValue | None = None
    sustained_fraction: CalValue | None = None
    compute_fixed_us: CalValue | None = None
    fp8_beyond_cache: CalValue | None = None


class MemoryCalibration(FleetsimModel):
    """Achieved HBM/GDDR bandwidth as a fraction of the spec (STREAM-like copy/triad)."""

    bandwidth_fraction: CalValue


class AllReduceCalibration(FleetsimModel):
    """All-reduce time = latency + bytes / busbw, busbw = busbw_fraction x per-direction link
    bandwidth of the group (busbw already contains 2(n-1)/n; see modeling-notes.md)."""

    latency_us: CalValue | None = None
    busbw_fraction: CalValue | None = None


class AttentionCalibration(FleetsimModel):
    """Attention kernels: `prefill_efficiency` is achieved / peak BF16 FLOP/s of the causal
    (flash) attention kernel at the prompt lengths of interest; `decode_bandwidth_efficiency` is
    the fraction of the achieved (STREAM) bandwidth that a paged decode-attention kernel reaches
    while reading the KV cache."""

    prefill_efficiency: CalValue | None = None
    decode_bandwidth_efficiency: CalValue | None = None


class Calibration(WithSources):
    """Achieved efficiencies of one card on one software stack.

    `layer_fixed_us`: device time per decoder layer of the non-GEMM kernels (attention launch,
    norms, RoPE, activation) beyond their roofline time, as replayed from a CUDA graph; it is what
    small-batch decode pays on top of reading the weights.

    The card's main file (`<card>.yaml`) must give every factor; extra files
    (`<card>@<label>.yaml`, e.g. `h100-sxm@measured.yaml` written by `fleetsim calibrate fit`)
    may give some, and each factor is taken from the file with the best tier."""

    card: str
    stack: str
    stack_version: str
    gemm: GemmCalibration = GemmCalibration()
    memory: MemoryCalibration | None = None
    allreduce: AllReduceCalibration = AllReduceCalibration()
    attention: AttentionCalibration = AttentionCalibration()
    step_overhead_ms: CalValue | None = None
    layer_fixed_us: CalValue | None = None
    training_mfu: CalValue | None = None

    @model_validator(mode="after")
    def _ranges(self) -> "Calibration":
        fractions = {
            "gemm.bf16": self.gemm.bf16, "gemm.fp8": self.gemm.fp8, "gemm.fp4": self.gemm.fp4,
            "gemm.int8": self.gemm.int8,
            "memory.bandwidth_fraction": self.memory.bandwidth_fraction if self.memory else None,
            "allreduce.busbw_fraction": self.allreduce.busbw_fraction,
            "attention.prefill_efficiency": self.attention.prefill_efficiency,
            "attention.decode_bandwidth_efficiency": self.attention.decode_bandwidth_efficiency,
            "training_mfu": self.training_mfu,
            "gemm.sustained_fraction": self.gemm.sustained_fraction,
        }
        for where, cv in fractions.items():
            if cv is not None and not 0 < cv.value <= 1.2:
                raise ValueError(f"{where}.value: must be a fraction in (0, 1.2] (got {cv.value})")
        non_negative = {
            "gemm.m_half_tokens": self.gemm.m_half_tokens,
            "gemm.kernel_latency_us": self.gemm.kernel_latency_us,
            "allreduce.latency_us": self.allreduce.latency_us,
            "step_overhead_ms": self.step_overhead_ms,
            "layer_fixed_us": self.layer_fixed_us,
        }
        for where, cv in non_negative.items():
            if cv is not None and cv.value < 0:
                raise ValueError(f"{where}.value: must be >= 0 (got {cv.value})")
        return self
