"""A card with its calibration, resolved into SI rates and tier-tagged efficiency factors.

`Hardware` is what every performance function takes: peak rates in FLOP/s and B/s, achieved
fractions, all-reduce parameters, and for each factor the calibration tier it came from.
When several calibration files exist for one card (e.g. `h100-sxm.yaml` with published values
and `h100-sxm@measured.yaml` from our own microbenchmarks), each factor is taken from the file
with the best tier: measured, then published, then assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sim.config.base import TIER_RANK, CalValue
from sim.config.calibration import Calibration
from sim.config.card import CardSpec
from sim.config.engine import CardFit, EngineSpec
from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.perf.precision import Precision, PrecisionError

TB = 1e12
GB = 1e9
TFLOP = 1e12
MIB = 2**20


REQUIRED_FACTORS = ("gemm_bf16", "gemm_m_half_tokens", "gemm_kernel_latency_us",
                    "gemm_sustained",
                    "memory_bandwidth",
                    "allreduce_latency_us", "allreduce_busbw", "attention_prefill",
                    "attention_decode_bw", "step_overhead_ms", "layer_fixed_us", "training_mfu",
                    "engine_compute", "engine_bandwidth", "engine_seq_overhead_us")

ENGINE_FACTORS = {"engine_compute": "compute", "engine_bandwidth": "bandwidth",
                  "step_overhead_ms": "step_overhead_ms",
                  "engine_seq_overhead_us": "seq_overhead_us"}
"""Hardware factor name -> `EngineFactors` field: what an engine's fit sets on a card."""


def _as_of_key(date: str) -> str:
    """YYYY[-MM[-DD]] padded so that text order is date order."""
    parts = (date.split("-") + ["01", "01"])[:3]
    return "-".join(parts)


def engines_for(card_id: str, library: Library) -> list[tuple[str, EngineSpec]]:
    """(id, engine) of the engines that run on `card_id`, oldest release first (ties by id)."""
    found = [(eid, library.engine(eid)) for eid in library.ids("engine")]
    found = [x for x in found if card_id in x[1].runs_on]
    return sorted(found, key=lambda x: (_as_of_key(x[1].release_date), x[0]))


def resolve_engine(card_id: str, library: Library, engine: str | None = None,
                   as_of: str | None = None) -> str | None:
    """The engine id a card runs: `engine` when given (checked to run on the card), else the
    newest release of an engine for that card released on or before `as_of` (default: today).
    None when no engine in the library runs on the card at all (a user's new card): it then
    runs with neutral engine factors, each tagged `assumed` with that reason."""
    if engine is not None:
        spec = library.engine(engine)  # unknown id: one-line error with a suggestion
        if card_id not in spec.runs_on:
            raise ConfigError(f"engine '{engine}' ({spec.name} {spec.version}) does not run on "
                              f"card '{card_id}' (it runs on: {', '.join(spec.runs_on)})")
        return engine
    import datetime as _dt

    limit = _as_of_key(as_of or _dt.date.today().isoformat())
    cands = engines_for(card_id, library)
    if not cands:
        return None
    before = [x for x in cands if _as_of_key(x[1].release_date) <= limit]
    if not before:
        first_id, first = cands[0]
        raise ConfigError(f"no engine for card '{card_id}' was released by {as_of} (the first, "
                          f"'{first_id}', dates from {first.release_date})")
    return before[-1][0]


@dataclass(frozen=True)
class Factor:
    """One efficiency factor: value, tier and where it came from."""

    value: float
    tier: str
    source: str

    @classmethod
    def of(cls, cv: CalValue, cal: Calibration) -> "Factor":
        src = cal.sources[cv.source].citation
        return cls(cv.value, cv.tier, src)


def _best(cals: list[Calibration], getter) -> tuple[CalValue, Calibration] | None:
    best: tuple[CalValue, Calibration] | None = None
    for cal in cals:
        try:
            cv = getter(cal)
        except AttributeError:
            cv = None
        if cv is None:
            continue
        if best is None or TIER_RANK[cv.tier] < TIER_RANK[best[0].tier]:
            best = (cv, cal)
    return best


@dataclass(frozen=True)
class Hardware:
    """A card and its calibrated efficiency factors, in SI units."""

    card_id: str
    card: CardSpec
    factors: dict[str, Factor] = field(hash=False)
    engine_id: str | None = None
    engine: EngineSpec | None = field(default=None, hash=False)
    collectives: dict[int, tuple[tuple[float, float], ...]] = field(default_factory=dict,
                                                                    hash=False)
    """Group size -> published all-reduce curve ((bytes, busbw B/s), by size) for this card."""

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, card_id: str, library: Library | None = None, engine: str | None = None,
             as_of: str | None = None) -> "Hardware":
        """The card, its calibration and the engine it runs (`engine`, or the newest for the
        card released by `as_of`; see `resolve_engine`)."""
        lib = library or Library.default()
        card = lib.card(card_id)
        cal_ids = [i for i in lib.ids("calibration") if i == card_id or i.startswith(card_id + "@")]
        if not cal_ids:
            raise ConfigError(
                f"card '{card_id}' has no calibration (expected hardware_specs/calibration/"
                f"{card_id}.yaml); fleetsim does not guess efficiencies silently")
        cals = [lib.calibration(i) for i in cal_ids]
        for cid, cal in zip(cal_ids, cals):
            if cal.card != card_id:
                raise ConfigError(f"hardware_specs/calibration/{cid}.yaml: card: is '{cal.card}', "
                                  f"expected '{card_id}'")
        getters = {
            "gemm_bf16": lambda c: c.gemm.bf16,
            "gemm_fp8": lambda c: c.gemm.fp8,
            "gemm_fp4": lambda c: c.gemm.fp4,
            "gemm_int8": lambda c: c.gemm.int8,
            "gemm_m_half_tokens": lambda c: c.gemm.m_half_tokens,
            "gemm_kernel_latency_us": lambda c: c.gemm.kernel_latency_us,
            "gemm_sustained": lambda c: c.gemm.sustained_fraction,
            "gemm_compute_fixed_us": lambda c: c.gemm.compute_fixed_us,
            "gemm_fp8_beyond_cache": lambda c: c.gemm.fp8_beyond_cache,
            "memory_bandwidth": lambda c: c.memory.bandwidth_fraction if c.memory else None,
            "allreduce_latency_us": lambda c: c.allreduce.latency_us,
            "allreduce_busbw": lambda c: c.allreduce.busbw_fraction,
            "attention_prefill": lambda c: c.attention.prefill_efficiency,
            "attention_decode_bw": lambda c: c.attention.decode_bandwidth_efficiency,
            "step_overhead_ms": lambda c: c.step_overhead_ms,
            "layer_fixed_us": lambda c: c.layer_fixed_us,
            "training_mfu": lambda c: c.training_mfu,
        }
        factors: dict[str, Factor] = {}
        for name, get in getters.items():
            found = _best(cals, get)
            if found is not None:
                factors[name] = Factor.of(*found)
        factors.setdefault("gemm_compute_fixed_us", Factor(
            0.0, "assumed", f"hardware_specs/calibration/{card_id}.yaml has no gemm.compute_fixed_us "
            "(no GEMM sweep over large square shapes for this card): no fixed time beyond the "
            "kernel latency"))
        factors.setdefault("gemm_fp8_beyond_cache", Factor(
            1.0, "assumed", f"hardware_specs/calibration/{card_id}.yaml has no "
            "gemm.fp8_beyond_cache (no FP8 rate measured beyond a last-level cache): none"))
        eid = resolve_engine(card_id, lib, engine, as_of)
        spec = lib.engine(eid) if eid is not None else None
        factors.update(_engine_factors(eid, spec, card_id, lib, factors))
        missing = [n for n in REQUIRED_FACTORS if n not in factors]
        if missing:
            raise ConfigError(
                f"hardware_specs/calibration/{card_id}.yaml: missing calibration for "
                f"{', '.join(missing)}; fleetsim does not guess efficiencies silently")
        return cls(card_id, card, factors, eid, spec, _collective_curves(card_id, lib))

    def with_overrides(self, **values: float) -> "Hardware":
        """A copy with some factors replaced (tier 'assumed', source 'override'); for what-ifs."""
        f = dict(self.factors)
        for k, v in values.items():
            if k not in f:
                raise KeyError(f"unknown factor '{k}' (known: {', '.join(sorted(f))})")
            f[k] = Factor(float(v), "assumed", "override")
        return Hardware(self.card_id, self.card, f, self.engine_id, self.engine,
                        self.collectives)

    def roofline(self) -> "Hardware":
        """The card as physics bounds it: datasheet compute and memory bandwidth fully used,
        no kernel, layer, step or per-sequence overheads (the ceiling no software release
        passes; `sim.perf.software` caps projected throughput with it)."""
        ideal = {k: 1.0 for k in ("gemm_bf16", "gemm_fp8", "gemm_fp4", "gemm_int8",
                                  "gemm_sustained", "gemm_fp8_beyond_cache", "engine_compute",
                                  "memory_bandwidth", "engine_bandwidth", "attention_prefill",
                                  "attention_decode_bw", "allreduce_busbw") if k in self.factors}
        ideal.update({k: 0.0 for k in ("gemm_kernel_latency_us", "gemm_compute_fixed_us",
                                       "step_overhead_ms",
                                       "layer_fixed_us", "engine_seq_overhead_us",
                                       "allreduce_latency_us")})
        ideal["gemm_m_half_tokens"] = 1e-9
        return self.with_overrides(**ideal)

    # ---- rates (SI) -----------------------------------------------------------------------
    def peak_flops(self, precision: str) -> float:
        t = self.card.compute.peak_tflops(precision)
        if t is None:
            raise PrecisionError(f"card '{self.card_id}' has no native {precision} compute")
        return t * TFLOP

    def tiled_share(self, m_tokens):
        """Share of a GEMM of `m_tokens` rows that runs as a tiled kernel paying the compute-
        fixed time: m / (m + m_half), the rows scale of `gemm_efficiency` (a function of the
        shape only, not of the card's rates)."""
        m_half = self.factors["gemm_m_half_tokens"].value
        return m_tokens / (m_tokens + m_half)

    def gemm_efficiency(self, precision: str, m_tokens: float) -> float:
        """Achieved/peak for a GEMM with `m_tokens` rows under sustained load:
        large · sustained · engine compute · m / (m + m_half)."""
        f = self.factors.get(f"gemm_{precision}")
        if f is None:
            raise PrecisionError(
                f"card '{self.card_id}' has no calibrated {precision} GEMM efficiency")
        m_half = self.factors["gemm_m_half_tokens"].value
        return (f.value * self.factors["gemm_sustained"].value
                * self.factors["engine_compute"].value * m_tokens / (m_tokens + m_half))

    def cache_share(self, precision: str, m_tokens, k: float, n: float):
        """Rate of an (m x k)·(k x n) GEMM relative to `gemm_efficiency`'s: the calibration's
        `gemm.fp8_beyond_cache` where FP8 operands (m·k + k·n bytes) exceed the card's
        last-level cache, else 1."""
        llc = self.card.memory.last_level_cache_mb
        ratio = self.factors["gemm_fp8_beyond_cache"].value
        if precision != "fp8" or llc is None or ratio == 1.0:
            return 1.0
        return np.where((np.asarray(m_tokens) * k + k * n) > llc * MIB, ratio, 1.0)

    # The calibration files state fixed times in µs or ms (the factor names carry the unit);
    # these properties are the only place they become seconds.
    @property
    def gemm_latency_s(self) -> float:
        return self.factors["gemm_kernel_latency_us"].value * 1e-6

    @property
    def allreduce_latency_s(self) -> float:
        """Fixed time of one all-reduce (the alpha of alpha + S/busbw), s."""
        return self.factors["allreduce_latency_us"].value * 1e-6

    @property
    def layer_fixed_s(self) -> float:
        """Fixed time per transformer layer per step (kernel launches not hidden), s."""
        return self.factors["layer_fixed_us"].value * 1e-6

    @property
    def gemm_compute_fixed_s(self) -> float:
        """Fixed time of a compute-bound GEMM kernel beyond the kernel latency, s (charged by
        the tiled share, `tiled_share`, `sim.perf.step.gemm_time_s`)."""
        return self.factors["gemm_compute_fixed_us"].value * 1e-6

    @property
    def mem_bandwidth_bps(self) -> float:
        """Achieved memory bandwidth in the engine's kernels, B/s: spec x STREAM fraction x the
        engine's fitted bandwidth factor."""
        return (self.card.memory.bandwidth_tbps * TB * self.factors["memory_bandwidth"].value
                * self.factors["engine_bandwidth"].value)

    @property
    def seq_overhead_s(self) -> float:
        """Time per running sequence per engine step (sampling, scheduling), s."""
        return self.factors["engine_seq_overhead_us"].value * 1e-6

    @property
    def memory_bytes(self) -> float:
        """Device memory the driver exposes, bytes (`Memory.visible`: a reading, or the nominal
        capacity in GiB x a stated derived ratio), not the datasheet's GB read as 10^9."""
        return self.card.memory.visible_bytes()

    def link_bandwidth_bps(self, group: int) -> float:
        """Per-direction bandwidth (B/s) each GPU of a `group`-GPU collective can use.

        NVSwitch: the full per-GPU rate. Full mesh (MI300X, Gaudi): only group-1 of the
        mesh_links links serve the group. Pair bridges serve groups of 2; larger groups, and
        cards without a fabric, fall back to the PCIe host bus."""
        su = self.card.scale_up
        if group <= 1:
            return float("inf")
        if group > su.domain_size or su.topology == "none" or (su.topology == "pair" and group > 2):
            hb = self.card.host_bus.gbytes_per_s or 32.0  # PCIe Gen4 x16 per direction if unstated
            return hb * GB
        bw = su.per_direction_gbytes_per_s * GB
        if su.topology == "mesh":
            assert su.mesh_links is not None
            return bw * min(group - 1, su.mesh_links) / su.mesh_links
        return bw

    def allreduce_s(self, message_bytes, group: int):
        """Time of one all-reduce of S = `message_bytes` over n = `group` GPUs (NCCL convention).

        Model: alpha + S·2(n-1)/n / busbw, busbw = busbw_fraction x per-direction link bandwidth
        (measured busbw is defined as algbw·2(n-1)/n, so the ring factor appears once, here).
        Where a published nccl-tests/rccl-tests curve exists for this card and group size, it
        is the library's time at each size: S·2(n-1)/n / busbw(S), busbw interpolated in
        log(size) (constant time below the smallest size, the largest size's busbw above). An
        engine with its own custom all-reduce (TensorRT-LLM, vLLM) uses whichever is faster up
        to its message limit and the library above it; one without (the Gaudi stack's HCCL)
        uses the library's curve."""
        if group <= 1:
            return 0.0 * message_bytes
        S = np.asarray(message_bytes, dtype=float)
        alg = S * 2 * (group - 1) / group
        busbw = self.factors["allreduce_busbw"].value * self.link_bandwidth_bps(group)
        t = self.allreduce_latency_s + alg / busbw
        curve = self.collectives.get(group)
        if curve:
            t_lib = _curve_time(curve, S, group)
            rules = self.engine.rules if self.engine is not None else None
            if rules is None or rules.custom_allreduce:
                limit = (rules.custom_allreduce_max_mib if rules else None) or float("inf")
                t = np.where(S <= limit * 2**20, np.minimum(t, t_lib), t_lib)
            else:
                t = t_lib
        t = np.where(S > 0, t, 0.0)
        return t if isinstance(message_bytes, np.ndarray) else float(t)

    @property
    def step_overhead_s(self) -> float:
        return self.factors["step_overhead_ms"].value * 1e-3

    def check_precision(self, p: Precision) -> None:
        """Raise if the card cannot run this precision combination."""
        if not self.card.supports(p.compute):
            have = [x for x in ("bf16", "fp8", "fp4", "int8") if self.card.supports(x)]
            hint = ""
            if p.weights == p.activations and p.weights in ("fp8", "fp4", "int8"):
                hint = (f"; weight-only {p.weights} with 16-bit activations runs "
                        f"(--weights {p.weights} --activations bf16)")
            raise PrecisionError(
                f"card '{self.card_id}' has no native {p.compute} compute (has: "
                f"{', '.join(have)}){hint}")
        if f"gemm_{p.compute}" not in self.factors:
            raise PrecisionError(
                f"card '{self.card_id}' has no calibrated {p.compute} GEMM efficiency")

    def tiers(self, names: list[str]) -> dict[str, str]:
        return {n: self.factors[n].tier for n in names if n in self.factors}


def _fit_for(eid: str, spec: EngineSpec, card_id: str, lib: Library,
             seen: tuple[str, ...] = ()) -> tuple[CardFit, str, str] | None:
    """(fit, engine whose fit it is, how it applies) for a card, in order of evidence: this
    release's fit for the card; the card's own fit on the newest earlier release of the same
    engine (the card's stack changes less between releases than across cards); this release's
    pooled fit over other cards; then `factors_from`."""
    fit = lib.engine_fit(eid)
    if fit is not None and card_id in fit.cards:
        return fit.cards[card_id], eid, "card"
    earlier = [(e_id, e) for e_id, e in engines_for(card_id, lib)
               if e.name == spec.name and _as_of_key(e.release_date) < _as_of_key(spec.release_date)]
    for e_id, _ in reversed(earlier):
        f = lib.engine_fit(e_id)
        if f is not None and card_id in f.cards:
            return f.cards[card_id], e_id, "card"
    if fit is not None and fit.pooled is not None:
        return fit.pooled, eid, "pooled"
    if spec.factors_from and spec.factors_from not in seen:
        src = spec.factors_from
        return _fit_for(src, lib.engine(src), card_id, lib, (*seen, eid))
    return None


def engine_fit_for(hw: "Hardware", lib: Library) -> tuple[CardFit, str, str] | None:
    """(fit, engine whose fit it is, 'card' or 'pooled') that set this card's engine factors."""
    if hw.engine_id is None or hw.engine is None:
        return None
    return _fit_for(hw.engine_id, hw.engine, hw.card_id, lib)


def _engine_factors(eid: str | None, spec: EngineSpec | None, card_id: str, lib: Library,
                    card_factors: dict[str, Factor]) -> dict[str, Factor]:
    """The engine's fitted factors for this card, with tier and source: `published` when fitted
    on the engine's own tables for this card; `assumed` when taken from its fit over other cards,
    from another release (`factors_from`), or neutral (no table at all), each said in the source."""
    found = _fit_for(eid, spec, card_id, lib) if eid is not None and spec is not None else None
    label = (f"{spec.name} {spec.version} ({eid})" if spec is not None else
             f"no engine in the library runs on card '{card_id}' (add one under "
             "hardware_specs/engines/)")
    if found is None:
        step = card_factors.get("step_overhead_ms")
        note = (f"{label}: no published table fitted; neutral engine factors, the card "
                "calibration's step overhead")
        out = {"engine_compute": Factor(1.0, "assumed", note),
               "engine_bandwidth": Factor(1.0, "assumed", note),
               "engine_seq_overhead_us": Factor(0.0, "assumed", note)}
        if step is not None:
            out["step_overhead_ms"] = Factor(step.value, "assumed", note)
        return out
    fit, from_id, how = found
    if how == "card" and from_id == eid:
        tier, src = fit.tier, (f"{label}: least-squares fit to {fit.points} published points "
                               f"({', '.join(fit.tables)}); hardware_specs/engine_fits/{eid}.yaml")
    else:
        whose = f"release '{from_id}'" if from_id != eid else "this release"
        scope = ("the card's own fit on an earlier" if how == "card" and from_id != eid
                 else "the pooled fit over the cards of the tables of")
        tier, src = "assumed", (f"{label}: no published table for card '{card_id}' on this "
                                f"release; {scope} {whose} "
                                f"(hardware_specs/engine_fits/{from_id}.yaml)")
    return {name: Factor(float(getattr(fit.factors, attr)), tier, src)
            for name, attr in ENGINE_FACTORS.items()}


def _collective_curves(card_id: str, lib: Library) -> dict[int, tuple[tuple[float, float], ...]]:
    """Per group size, the card's published nccl-/rccl-tests all-reduce curve with the most
    points (torch.distributed scripts time differently and are left out)."""
    best: dict[int, tuple[tuple[float, float], ...]] = {}
    for cid in lib.ids("collective"):
        t = lib.collective(cid)
        if t.card != card_id or "torch" in t.library.lower():
            continue
        c = t.curve()
        if len(c) >= 2 and len(c) > len(best.get(t.gpus, ())):
            best[t.gpus] = c
    return best


def _curve_time(curve: tuple[tuple[float, float], ...], S: np.ndarray, n: int) -> np.ndarray:
    sizes = np.array([c[0] for c in curve])
    bw = np.array([c[1] for c in curve])
    t_pts = sizes * 2 * (n - 1) / n / bw
    logS = np.log(np.maximum(S, 1.0))
    # time is interpolated in log-log (latency-flat at small sizes, bandwidth-bound at large)
    t = np.exp(np.interp(logS, np.log(sizes), np.log(t_pts)))
    above = S > sizes[-1]
    t = np.where(above, S * 2 * (n - 1) / n / bw[-1], t)
    return np.where(S < sizes[0], t_pts[0], t)
