"""One call from ids to a serving-performance estimate: what `fleetsim perf` prints.

Resolves card, calibration, model and length mix from the library, picks the tensor-parallel
degree that maximises offline tokens/s per card among those that fit (as a real deployment
would) unless one is given, and reports which calibration tier each factor came from.

A serving replica's TP stays within `serving_tp_limit` (the card's scale-up domain, or one
8-card server over PCIe where that domain is smaller) unless `allow_scale_out_tp`: tensor
parallelism across servers puts two all-reduces per layer on the scale-out network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.perf.hardware import Hardware
from sim.perf.memory import TP_CHOICES, Layout, LayoutError, min_tp
from sim.perf.offline import LengthMoments, OfflineResult, offline_throughput
from sim.perf.precision import Precision


SERVER_CARDS = 8
"""Cards in one server: TP over PCIe inside one box is how cards without a scale-up fabric (L4,
L40S, A10) serve models larger than one card."""


def serving_tp_limit(hw: Hardware) -> int:
    """Widest TP a serving replica uses unless asked for more: the card's scale-up domain, or one
    `SERVER_CARDS`-card server where that domain is smaller."""
    return max(SERVER_CARDS, hw.card.scale_up.domain_size)


def tp_limit_words(hw: Hardware) -> str:
    """'one 8-card server (scale-up: none (PCIe only), domain 1)' or 'the 72-card scale-up
    domain (NVLink 5 ...)': what `serving_tp_limit` stands for on this card."""
    su = hw.card.scale_up
    if su.domain_size >= SERVER_CARDS:
        return f"the {su.domain_size}-card scale-up domain ({su.fabric})"
    return (f"one {SERVER_CARDS}-card server (scale-up: {su.fabric}, domain {su.domain_size})")


def scale_out_words(card: str, hw: Hardware, tp: int) -> str:
    """'TP 64 on l4 goes beyond one 8-card server (...)': the shared core of the refusal and of
    the warning."""
    return f"TP {tp} on {card} goes beyond {tp_limit_words(hw)}"


def check_serving_tp(card: str, hw: Hardware, tp: int, allow_scale_out_tp: bool) -> str | None:
    """None for a TP within `serving_tp_limit`; past it, a `LayoutError` unless
    `allow_scale_out_tp`, and then the one-line warning to print."""
    if tp <= serving_tp_limit(hw):
        return None
    words = scale_out_words(card, hw, tp)
    if not allow_scale_out_tp:
        raise LayoutError(f"{words}: its all-reduces would cross the scale-out network; pass "
                          f"--allow-scale-out-tp to serve that way anyway")
    return (f"warning: {words}: tensor-parallel all-reduces cross the scale-out network (timed "
            f"at the {hw.card.host_bus.kind} host-bus rate, an optimistic bound)")


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
    tp_limit: int = SERVER_CARDS
    """`serving_tp_limit` of the card: a wider TP crosses servers."""
    scale_out_tp: bool = False
    """The TP used goes beyond `tp_limit` (asked for with `allow_scale_out_tp` or `tp`)."""

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
             "gemm_compute_fixed_us", "gemm_sustained", "memory_bandwidth",
             "attention_prefill", "attention_decode_bw", "step_overhead_ms", "layer_fixed_us",
             "engine_compute", "engine_bandwidth", "engine_seq_overhead_us"]
    if prec.compute != "bf16":
        names.append("gemm_bf16")  # LM head and router stay 16-bit
    if prec.compute == "fp8" and hw.card.memory.last_level_cache_mb is not None:
        names.append("gemm_fp8_beyond_cache")  # the GEMMs whose operands outgrow the cache
    if tp > 1:
        names += ["allreduce_latency_us", "allreduce_busbw"]
    return names


def estimate(card: str, model: str, precision: Precision, lengths: LengthMoments,
             tp: int | None = None, library: Library | None = None, ep: bool = False,
             hardware: Hardware | None = None, engine: str | None = None,
             as_of: str | None = None, allow_scale_out_tp: bool = False) -> PerfEstimate:
    """Without `tp`: the TP with the most offline tokens/s per card among those that fit within
    `serving_tp_limit`; past it only with `allow_scale_out_tp` and only where nothing fits
    within it. Where nothing fits, the estimate says so (`fits` False, `reason`)."""
    lib = library or Library.default()
    hw = hardware or Hardware.load(card, lib, engine=engine, as_of=as_of)
    spec = lib.model(model)
    hw.check_precision(precision)
    smallest = min_tp(spec, hw, precision)
    limit = serving_tp_limit(hw)
    if tp is not None:
        best = offline_throughput(spec, hw, Layout(tp=tp, ep=ep), precision, lengths)
    else:
        divides = [t for t in TP_CHOICES if spec.architecture.num_attention_heads % t == 0]
        inside = [t for t in divides if t <= limit]
        best = _best(spec, hw, [t for t in inside if smallest is not None and t >= smallest],
                     ep, precision, lengths)
        if best is None and allow_scale_out_tp and smallest is not None:
            best = _best(spec, hw, [t for t in divides if t > limit and t >= smallest], ep,
                         precision, lengths)
        if best is None:  # nothing fits where allowed: report the widest allowed TP
            best = offline_throughput(spec, hw, Layout(tp=max(inside or [1]), ep=ep), precision,
                                      lengths)
    reason = best.reason if best.fits else _misfit_reason(spec.name, hw, best, smallest, limit,
                                                           tp is None)
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
        engine_date=hw.engine.release_date if hw.engine else None,
        tp_limit=limit, scale_out_tp=best.layout.tp > limit)


def _best(spec, hw: Hardware, tps: list[int], ep: bool, precision: Precision,
          lengths: LengthMoments) -> OfflineResult | None:
    """The fitting layout with the most offline tokens/s per card among `tps` (None if none
    fits)."""
    results = [offline_throughput(spec, hw, Layout(tp=t, ep=ep), precision, lengths) for t in tps]
    fitting = [r for r in results if r.fits]
    return max(fitting, key=lambda r: r.offline_tokens_per_s_per_card) if fitting else None


def _misfit_reason(name: str, hw: Hardware, best: OfflineResult, smallest: int | None,
                   limit: int, chosen: bool) -> str:
    at = f"at TP {best.layout.tp} ({best.reason})"
    if smallest is None:
        return (f"{name} does not fit on {hw.card.name} at any tensor-parallel degree up to "
                f"{TP_CHOICES[-1]}; {at}")
    if chosen and smallest > limit:
        return (f"does not fit within {tp_limit_words(hw)} {at}; the smallest TP that fits is "
                f"{smallest}, across servers (--allow-scale-out-tp)")
    return f"does not fit {at}; the smallest TP that fits is {smallest}"
