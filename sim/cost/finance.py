"""Inputs of the cost model: finance assumptions, the residual-value curve, purchases, software.

Frozen dataclasses that check their fields on construction (a one-line `ValueError` naming the
field). Every default cites reference-data.md (section and provenance tag) or says it is assumed.
Units are in the names; prices are nominal USD; times are years from the start of the horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sim.units import HOURS_PER_MONTH, HOURS_PER_YEAR, MONTHS_PER_YEAR  # noqa: F401 (re-exported)


def _check_finite(owner: str, name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")


def _check(owner: str, name: str, value: float, ok: bool, rule: str) -> None:
    _check_finite(owner, name, value)
    if not ok:
        raise ValueError(f"{owner}.{name} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class ResidualCurve:
    """Fraction of the purchase price an asset keeps versus its age (years since delivery).

    Piecewise linear between the table points; constant at the last point (the floor) beyond it.
    """

    age_years: tuple[float, ...]
    fraction: tuple[float, ...]
    source: str

    def __post_init__(self) -> None:
        if len(self.age_years) == 0 or len(self.age_years) != len(self.fraction):
            raise ValueError("ResidualCurve.age_years and .fraction must be non-empty and of equal "
                             f"length, got {len(self.age_years)} and {len(self.fraction)}")
        for i, (a, f) in enumerate(zip(self.age_years, self.fraction)):
            _check("ResidualCurve", f"age_years[{i}]", a, a >= 0, ">= 0")
            _check("ResidualCurve", f"fraction[{i}]", f, 0 <= f <= 1, "in [0, 1]")
        if self.age_years[0] != 0:
            raise ValueError(f"ResidualCurve.age_years must start at 0, got {self.age_years[0]!r}")
        if any(b <= a for a, b in zip(self.age_years, self.age_years[1:])):
            raise ValueError("ResidualCurve.age_years must increase strictly, "
                             f"got {self.age_years}")

    def fraction_at(self, age_years: float | np.ndarray) -> float | np.ndarray:
        """Fraction of the purchase price kept at `age_years` (>= 0); the last point is a floor."""
        out = np.interp(age_years, self.age_years, self.fraction)
        return float(out) if np.ndim(out) == 0 else out


H100_LENDER_RESIDUAL = ResidualCurve(
    age_years=(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0),
    # 1-3 y: midpoints of reference-data E6 "Residual-value curves (lender view)", H100: 60-65%
    # after year 1, 40-45% after year 2, 25-35% after year 3 ("GPU Lease Rate Index" page) [S].
    # 4-6 y: extrapolated [D] with the year-2 -> year-3 retention ratio 0.30 / 0.425 = 0.71 per
    # year (0.30 -> 0.21 -> 0.15 -> 0.10), then held at a 10% floor. Conservative against E6's
    # used-market prices (used H100 $15k-28k; A100 SXM listings near their launch price) [S].
    fraction=(1.0, 0.625, 0.425, 0.30, 0.21, 0.15, 0.10),
    source="reference-data.md E6 lender view (H100) [S]; 4-6 y extrapolated, 10% floor [D]",
)


@dataclass(frozen=True)
class FinanceAssumptions:
    """Finance and site parameters shared by every fleet option.

    Capex per card = card price x `server_multiplier` (whole server / GPU price, so the non-GPU
    server share is card x (multiplier - 1)), plus network at `network_share` of cluster capex:
    network = server x share / (1 - share).
    """

    # Nominal annual effective rate, DF(t) = (1 + r)^-t. Assumed (a cost of capital for an AI
    # infrastructure buyer); reference-data has no discount rate. Use 0 to see undiscounted cash.
    discount_rate: float = 0.08
    # Straight-line life of the accounting view and tax shield: reference-data E5 / F, 5 years
    # (Epoch AI server life for 2023+ [A]; hyperscalers 5-6 years in their 10-Ks [V]).
    depreciation_years: float = 5.0
    # Only the after-tax view uses it: the US federal statutory corporate rate since 2018 (21%);
    # assumed, not in reference-data (state and foreign taxes ignored).
    tax_rate: float = 0.21
    # reference-data F: US $0.081/kWh (E1: EIA US industrial average 8.06 c (2023), 8.15 c (2024),
    # range 7.7-8.3 c) [V-gov].
    electricity_usd_per_kwh: float = 0.081
    # reference-data F: 1.2 for a modern AI data centre (E2: new facilities 1.3 or better,
    # hyperscale 1.1-1.2 [I]; industry average 1.56 (2024) [I]).
    pue: float = 1.2
    # reference-data E3 / F: CBRE N. America primary markets, 250-500 kW wholesale, H2 2024,
    # $184.06/kW-month [A]; paid on provisioned (nameplate) power.
    colo_usd_per_kw_month: float = 184.0
    # reference-data E4 / F: whole server / GPU price x1.64-1.66 (Epoch cost model) [A].
    server_multiplier: float = 1.65
    # reference-data F: 15% of cluster capex (E4: Epoch uses 19% [A]; range 10-20%).
    network_share: float = 0.15
    # Assumed, no source in reference-data: hardware support and spares at 3% of capex per year
    # from delivery (a judgement; range 0-8%). Set 0 where support is bundled in the price.
    maintenance_fraction_per_year: float = 0.03
    # Purchases ordered at t pay unit_price x (1 - decline)^t. Default 0: reference-data A3 shows
    # the HGX H100 price roughly flat 2023-25 ($249k -> $288k -> ~$255k) [S->A]; E5's 0.14 OOM/year
    # is price-performance across generations, not the price of one SKU.
    price_decline_per_year: float = 0.0
    residual_curve: ResidualCurve = field(default=H100_LENDER_RESIDUAL)
    # $ per card-hour of unserved demand; None prices it at the rent of the shortfall (the
    # on-demand rent passed to `opex_hourly`), modeling-notes "Unserved demand".
    unserved_penalty_usd_per_card_hour: float | None = None

    def __post_init__(self) -> None:
        o = "FinanceAssumptions"
        _check(o, "discount_rate", self.discount_rate, self.discount_rate > -1, "> -1")
        _check(o, "depreciation_years", self.depreciation_years, self.depreciation_years > 0, "> 0")
        _check(o, "tax_rate", self.tax_rate, 0 <= self.tax_rate < 1, "in [0, 1)")
        _check(o, "electricity_usd_per_kwh", self.electricity_usd_per_kwh,
               self.electricity_usd_per_kwh >= 0, ">= 0")
        _check(o, "pue", self.pue, self.pue >= 1, ">= 1")
        _check(o, "colo_usd_per_kw_month", self.colo_usd_per_kw_month,
               self.colo_usd_per_kw_month >= 0, ">= 0")
        _check(o, "server_multiplier", self.server_multiplier, self.server_multiplier >= 1, ">= 1")
        _check(o, "network_share", self.network_share, 0 <= self.network_share < 1, "in [0, 1)")
        _check(o, "maintenance_fraction_per_year", self.maintenance_fraction_per_year,
               self.maintenance_fraction_per_year >= 0, ">= 0")
        _check(o, "price_decline_per_year", self.price_decline_per_year,
               0 <= self.price_decline_per_year < 1, "in [0, 1)")
        if not isinstance(self.residual_curve, ResidualCurve):
            raise TypeError(f"{o}.residual_curve must be a ResidualCurve, "
                             f"got {type(self.residual_curve).__name__}")
        p = self.unserved_penalty_usd_per_card_hour
        if p is not None:
            _check(o, "unserved_penalty_usd_per_card_hour", p, p >= 0, ">= 0 or None")


@dataclass(frozen=True)
class Purchase:
    """One order of `count` cards: a deposit at order, the balance at delivery.

    `unit_price_usd` is the card-only price quoted at t = 0; the price paid is
    unit_price_usd x (1 - price_decline_per_year)^order_time_years. The server and network come
    from the finance multipliers unless `non_gpu_server_usd_per_card` gives an explicit server bill
    (the non-GPU part of the server, per card).
    """

    card_id: str
    count: int
    order_time_years: float
    delivery_time_years: float
    unit_price_usd: float
    # Assumed default 0: the whole price at delivery; set the deposit the contract states.
    deposit_fraction: float = 0.0
    non_gpu_server_usd_per_card: float | None = None
    retire_time_years: float | None = None
    """End of life: maintenance stops and the cards are sold at the residual curve's value for
    their age, as an inflow at that date (None: kept to the horizon)."""

    def __post_init__(self) -> None:
        o = f"Purchase({self.card_id!r})"
        if not isinstance(self.card_id, str) or not self.card_id:
            raise ValueError(f"Purchase.card_id must be a non-empty string, got {self.card_id!r}")
        if not isinstance(self.count, (int, np.integer)) or isinstance(self.count, bool) \
                or self.count <= 0:
            raise ValueError(f"{o}.count must be a positive integer, got {self.count!r}")
        _check(o, "order_time_years", self.order_time_years, self.order_time_years >= 0, ">= 0")
        _check(o, "delivery_time_years", self.delivery_time_years,
               self.delivery_time_years >= self.order_time_years,
               f">= order_time_years ({self.order_time_years!r})")
        _check(o, "unit_price_usd", self.unit_price_usd, self.unit_price_usd >= 0, ">= 0")
        _check(o, "deposit_fraction", self.deposit_fraction, 0 <= self.deposit_fraction <= 1,
               "in [0, 1]")
        s = self.non_gpu_server_usd_per_card
        if s is not None:
            _check(o, "non_gpu_server_usd_per_card", s, s >= 0, ">= 0 or None")


@dataclass(frozen=True)
class SoftwareCost:
    """Engineering cost of a software stack: a one-off port plus ongoing engineers.

    reference-data E8: no public source gives an engineer-month or dollar cost for a CUDA -> ROCm
    or SynapseAI port; both the effort and the price per engineer-year are explicit inputs. The
    throughput haircut of a less mature stack belongs to calibration (sim/perf), not here.
    """

    porting_engineer_years: float = 0.0
    porting_time_years: float = 0.0
    ongoing_engineers: float = 0.0
    ongoing_start_years: float = 0.0
    # Assumed, unsourced (E8 has no $ figure): a fully loaded US ML-systems / GPU-kernel engineer
    # (salary, benefits, overhead, tools) at $300k a year; specialists cost more, generalists less.
    usd_per_engineer_year: float = 300_000.0

    def __post_init__(self) -> None:
        o = "SoftwareCost"
        for name in ("porting_engineer_years", "porting_time_years", "ongoing_engineers",
                     "ongoing_start_years", "usd_per_engineer_year"):
            v = getattr(self, name)
            _check(o, name, v, v >= 0, ">= 0")
