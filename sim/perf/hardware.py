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
from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.perf.precision import Precision, PrecisionError

TB = 1e12
GB = 1e9
TFLOP = 1e12


REQUIRED_FACTORS = ("gemm_bf16", "gemm_m_half_tokens", "gemm_kernel_latency_us",
                    "gemm_sustained",
                    "memory_bandwidth",
                    "allreduce_latency_us", "allreduce_busbw", "attention_prefill",
                    "attention_decode_bw", "step_overhead_ms", "layer_fixed_us", "training_mfu",
                    "software_maturity")


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

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def load(cls, card_id: str, library: Library | None = None) -> "Hardware":
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
            "memory_bandwidth": lambda c: c.memory.bandwidth_fraction if c.memory else None,
            "allreduce_latency_us": lambda c: c.allreduce.latency_us,
            "allreduce_busbw": lambda c: c.allreduce.busbw_fraction,
            "attention_prefill": lambda c: c.attention.prefill_efficiency,
            "attention_decode_bw": lambda c: c.attention.decode_bandwidth_efficiency,
            "step_overhead_ms": lambda c: c.step_overhead_ms,
            "layer_fixed_us": lambda c: c.layer_fixed_us,
            "training_mfu": lambda c: c.training_mfu,
            "software_maturity": lambda c: c.software_maturity,
        }
        factors: dict[str, Factor] = {}
        for name, get in getters.items():
            found = _best(cals, get)
            if found is not None:
                factors[name] = Factor.of(*found)
        missing = [n for n in REQUIRED_FACTORS if n not in factors]
        if missing:
            raise ConfigError(
                f"hardware_specs/calibration/{card_id}.yaml: missing calibration for "
                f"{', '.join(missing)}; fleetsim does not guess efficiencies silently")
        return cls(card_id, card, factors)

    def with_overrides(self, **values: float) -> "Hardware":
        """A copy with some factors replaced (tier 'assumed', source 'override'); for what-ifs."""
        f = dict(self.factors)
        for k, v in values.items():
            if k not in f:
                raise KeyError(f"unknown factor '{k}' (known: {', '.join(sorted(f))})")
            f[k] = Factor(float(v), "assumed", "override")
        return Hardware(self.card_id, self.card, f)

    # ---- rates (SI) -----------------------------------------------------------------------
    def peak_flops(self, precision: str) -> float:
        t = self.card.compute.peak_tflops(precision)
        if t is None:
            raise PrecisionError(f"card '{self.card_id}' has no native {precision} compute")
        return t * TFLOP

    def gemm_efficiency(self, precision: str, m_tokens: float) -> float:
        """Achieved/peak for a GEMM with `m_tokens` rows under sustained load:
        large · sustained · maturity · m / (m + m_half)."""
        f = self.factors.get(f"gemm_{precision}")
        if f is None:
            raise PrecisionError(
                f"card '{self.card_id}' has no calibrated {precision} GEMM efficiency")
        m_half = self.factors["gemm_m_half_tokens"].value
        return (f.value * self.factors["gemm_sustained"].value
                * self.factors["software_maturity"].value * m_tokens / (m_tokens + m_half))

    @property
    def gemm_latency_s(self) -> float:
        return self.factors["gemm_kernel_latency_us"].value * 1e-6

    @property
    def mem_bandwidth_bps(self) -> float:
        """Achieved memory bandwidth, B/s."""
        return self.card.memory.bandwidth_tbps * TB * self.factors["memory_bandwidth"].value

    @property
    def memory_bytes(self) -> float:
        return self.card.memory.capacity_gb * GB

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

    def allreduce_s(self, message_bytes: float, group: int) -> float:
        """Time of one all-reduce of S = `message_bytes` over n = `group` GPUs (NCCL convention):
        alpha + S·2(n-1)/n / busbw, with busbw = busbw_fraction x per-direction link bandwidth.
        Measured busbw (B3) is defined as algbw·2(n-1)/n, so the ring factor appears once, here,
        and is not applied again to the link bandwidth."""
        if group <= 1:
            return 0.0 * message_bytes
        busbw = self.factors["allreduce_busbw"].value * self.link_bandwidth_bps(group)
        alg_bytes = message_bytes * 2 * (group - 1) / group
        t = self.factors["allreduce_latency_us"].value * 1e-6 + alg_bytes / busbw
        return np.where(message_bytes > 0, t, 0.0) if isinstance(t, np.ndarray) else (
            t if message_bytes > 0 else 0.0)

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
