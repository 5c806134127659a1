"""The card as a training framework runs it: microbenchmark factors with the training fit."""

from __future__ import annotations

from dataclasses import dataclass

from sim.perf.hardware import Hardware

TRAIN_NEUTRAL = {"engine_bandwidth": 1.0, "step_overhead_ms": 0.0, "engine_seq_overhead_us": 0.0}
"""A serving engine's factors that do not apply to a training step (batching overheads)."""


@dataclass(frozen=True)
class TrainingHardware:
    hw: Hardware
    tp_overlap: float
    tier: str
    source: str


def training_hardware(card: str, library, compute: float | None = None,
                      tp_overlap: float | None = None,
                      fp8_compute: float | None = None) -> TrainingHardware:
    """The card as a training framework runs it: the card's microbenchmark factors with the
    training fit's compute factor in place of a serving engine's (its own fit, tier
    `published`, or a same-die sibling's written under its name, tier `assumed`:
    `sim.calibrate.training.SAME_SILICON`; else the pooled fit over every card, `assumed`;
    else neutral, `assumed`).
    The fit's FP8 factor scales the card's FP8 GEMM efficiency (the FP8 GEMMs only; attention
    and BF16 GEMMs of an FP8 run keep theirs).
    `compute` / `tp_overlap` / `fp8_compute` override the fit (calibration)."""
    base = Hardware.load(card, library)
    fit = library.training_fit(card)
    if fit is None:
        c, o, f8 = 1.0, 0.5, 1.0
        tier, src = "assumed", "no training fit: neutral compute, half overlap"
    else:
        c, o, f8 = fit.factors.compute, fit.factors.tp_overlap, fit.factors.fp8_compute
        tier = fit.tier if fit.card == card else "assumed"
        src = f"hardware_specs/training_fits/{fit.card}.yaml ({fit.points} points)"
    c = c if compute is None else compute
    o = o if tp_overlap is None else tp_overlap
    f8 = f8 if fp8_compute is None else fp8_compute
    over = dict(engine_compute=c, **TRAIN_NEUTRAL)
    if "gemm_fp8" in base.factors and f8 != 1.0:
        over["gemm_fp8"] = base.factors["gemm_fp8"].value * f8
    return TrainingHardware(base.with_overrides(**over), o, tier, src)
