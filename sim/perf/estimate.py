"""One call from ids to a serving-performance estimate: what `fleetsim perf` prints.

Resolves card, calibration, model and length mix from the library, picks the tensor-parallel
degree that maximises offline tokens/s per card among those that fit (as a real deployment
would) unless one is given, and reports which calibration tier each factor came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.perf.hardware import Hardware
from sim.perf.memory import TP_CHOICES, Layout, min_tp
from sim.perf.offline import LengthMoments, OfflineResult, offline_throughput
from sim.perf.precision import Precision


@dataclass(frozen=True)
class PerfEstimate:
    card: str
    model: str
    precision: str
    isl: float
    osl: float
    fits: bool
    min_tp: int | None
    tp: int
    batch_size: int
    offline_tokens_per_s_per_card: float
    decode_step_s: float
    prefill_tokens_per_s_per_card: float
    weights_gb_per_card: float
    kv_tokens_capacity: int
    reason: str
    step_parts_s: dict[str, float] = field(default_factory=dict)
    calibration_tiers: dict[str, str] = field(default_factory=dict)
    calibration_sources: dict[str, str] = field(default_factory=dict)
    prefill_time_fraction: float = 0.0
    engine: str | None = None
    engine_version: str | None = None
    engine_date: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def lengths_for(library: Library, workload: str | None, isl: float | None,
                osl: float | None) -> LengthMoments:
    if workload:
        mix = library.lengths(workload)
        li, lo = mix.lengths.input_tokens, mix.lengths.output_tokens
        return LengthMoments(isl=isl or li.mean, osl=osl or lo.mean,
                             isl_sq=None if isl else li.second_moment,
                             osl_sq=None if osl else lo.second_moment,
                             osl_max=None if osl else float(lo.max))
    if isl is None or osl is None:
        raise ConfigError("give --isl and --osl, or --workload NAME")
    if isl < 1 or osl < 1:
        raise ConfigError(f"--isl and --osl must be >= 1 (got isl={isl}, osl={osl})")
    return LengthMoments(isl=float(isl), osl=float(osl))


def factors_used(hw: Hardware, prec: Precision, tp: int) -> list[str]:
    names = [f"gemm_{prec.compute}", "gemm_m_half_tokens", "gemm_kernel_latency_us",
             "gemm_sustained", "memory_bandwidth",
             "attention_prefill", "attention_decode_bw", "step_overhead_ms", "layer_fixed_us",
             "engine_compute", "engine_bandwidth", "engine_seq_overhead_us"]
    if prec.compute != "bf16":
        names.append("gemm_bf16")  # LM head and router stay 16-bit
    if tp > 1:
        names += ["allreduce_latency_us", "allreduce_busbw"]
    return names


def estimate(card: str, model: str, precision: Precision, lengths: LengthMoments,
             tp: int | None = None, library: Library | None = None, ep: bool = False,
             hardware: Hardware | None = None, engine: str | None = None,
             as_of: str | None = None) -> PerfEstimate:
    lib = library or Library.default()
    hw = hardware or Hardware.load(card, lib, engine=engine, as_of=as_of)
    spec = lib.model(model)
    hw.check_precision(precision)
    smallest = min_tp(spec, hw, precision)
    if tp is not None:
        candidates = [tp]
    else:
        candidates = [t for t in TP_CHOICES if spec.architecture.num_attention_heads % t == 0
                      and (smallest is not None and t >= smallest)
                      and t <= max(8, hw.card.scale_up.domain_size)]
    results: list[OfflineResult] = [
        offline_throughput(spec, hw, Layout(tp=t, ep=ep), precision, lengths) for t in candidates]
    fitting = [r for r in results if r.fits]
    if fitting:
        best = max(fitting, key=lambda r: r.offline_tokens_per_s_per_card)
    else:
        best = results[0] if results else offline_throughput(
            spec, hw, Layout(tp=TP_CHOICES[-1] if tp is None else tp, ep=ep), precision, lengths)
    reason = best.reason
    if not best.fits:
        if smallest is None:
            reason = (f"{spec.name} does not fit on {hw.card.name} at any tensor-parallel degree up "
                      f"to {TP_CHOICES[-1]} ({best.reason})")
        else:
            reason = (f"does not fit at TP {best.layout.tp} ({best.reason}); the smallest TP that "
                      f"fits is {smallest}")
    names = factors_used(hw, precision, best.layout.tp)
    return PerfEstimate(
        card=card, model=model, precision=precision.label, isl=lengths.isl, osl=lengths.osl,
        fits=best.fits, min_tp=smallest, tp=best.layout.tp, batch_size=best.batch_size,
        offline_tokens_per_s_per_card=best.offline_tokens_per_s_per_card,
        decode_step_s=best.decode_step_s,
        prefill_tokens_per_s_per_card=best.prefill_tokens_per_s_per_card,
        weights_gb_per_card=best.memory.weights_bytes / 1e9,
        kv_tokens_capacity=best.memory.kv_tokens_capacity, reason=reason,
        step_parts_s=best.step_parts, calibration_tiers=hw.tiers(names),
        calibration_sources={n: hw.factors[n].source for n in names if n in hw.factors},
        prefill_time_fraction=best.prefill_time_fraction,
        engine=hw.engine_id, engine_version=(f"{hw.engine.name} {hw.engine.version}"
                                             if hw.engine else None),
        engine_date=hw.engine.release_date if hw.engine else None)
