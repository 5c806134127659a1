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
    (and is usually bandwidth-bound anyway)."""

    bf16: CalValue
    fp8: CalValue | None = None
    fp4: CalValue | None = None
    int8: CalValue | None = None
    m_half_tokens: CalValue


class MemoryCalibration(FleetsimModel):
    """Achieved HBM/GDDR bandwidth as a fraction of the spec (STREAM-like copy/triad)."""

    bandwidth_fraction: CalValue


class AllReduceCalibration(FleetsimModel):
    """All-reduce time = latency + bytes / busbw, busbw = busbw_fraction x per-direction link
    bandwidth of the group (busbw already contains 2(n-1)/n; see modeling-notes.md)."""

    latency_us: CalValue
    busbw_fraction: CalValue


class AttentionCalibration(FleetsimModel):
    """Attention kernels: `prefill_efficiency` is achieved / peak BF16 FLOP/s of the causal
    (flash) attention kernel at the prompt lengths of interest; `decode_bandwidth_efficiency` is
    the fraction of the achieved (STREAM) bandwidth that a paged decode-attention kernel reaches
    while reading the KV cache."""

    prefill_efficiency: CalValue
    decode_bandwidth_efficiency: CalValue


class Calibration(WithSources):
    """Achieved efficiencies of one card on one software stack."""

    card: str
    stack: str
    stack_version: str
    gemm: GemmCalibration
    memory: MemoryCalibration
    allreduce: AllReduceCalibration
    attention: AttentionCalibration
    step_overhead_ms: CalValue
    training_mfu: CalValue
    software_maturity: CalValue

    @model_validator(mode="after")
    def _ranges(self) -> "Calibration":
        checks = {
            "gemm.bf16.value": self.gemm.bf16.value,
            "memory.bandwidth_fraction.value": self.memory.bandwidth_fraction.value,
            "allreduce.busbw_fraction.value": self.allreduce.busbw_fraction.value,
            "training_mfu.value": self.training_mfu.value,
        }
        for prec in ("fp8", "fp4", "int8"):
            v = getattr(self.gemm, prec)
            if v is not None:
                checks[f"gemm.{prec}.value"] = v.value
        for where, v in checks.items():
            if not 0 < v <= 1.2:
                raise ValueError(f"{where}: must be a fraction in (0, 1.2] (got {v})")
        for where, v in {
            "gemm.m_half_tokens.value": self.gemm.m_half_tokens.value,
            "allreduce.latency_us.value": self.allreduce.latency_us.value,
            "step_overhead_ms.value": self.step_overhead_ms.value,
            "software_maturity.value": self.software_maturity.value,
        }.items():
            if v < 0:
                raise ValueError(f"{where}: must be >= 0 (got {v})")
        return self
