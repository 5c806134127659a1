"""Operating cost per hour of the horizon, from the fleet timeline's hourly arrays.

For hour h (every stream dated at the start of its hour, t = h / 8760):
    energy_usd        = it_power_kw[h] x 1 h x PUE x electricity_usd_per_kwh   (actual IT draw)
    colo_usd          = provisioned_kw[h] x colo_usd_per_kw_month x 12 / 8760   (nameplate power)
    maintenance_usd   = sum over delivered purchases of capex x maintenance_fraction_per_year / 8760
    software_usd      = ongoing_engineers x usd_per_engineer_year / 8760  (from ongoing_start)
    rental_usd        = rented_card_hours[h] x rent_usd_per_card_hour[h]
    unserved_penalty  = unserved_card_hours[h] x (penalty, or the rent when the penalty is None)
A stream that starts inside an hour (a delivery, the start of ongoing software) counts the part
of the hour after it. The one-off porting cost is a dated lump: `software_cash_flows`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.cost.capex import capex_breakdown
from sim.cost.finance import (
    HOURS_PER_MONTH,
    HOURS_PER_YEAR,
    FinanceAssumptions,
    Purchase,
    SoftwareCost,
)
from sim.cost.flows import CashFlow, CashFlows

_STREAMS = ("energy", "colo", "maintenance", "software", "rental", "unserved_penalty")


@dataclass(frozen=True, eq=False)
class OpexHourly:
    """Operating cost per hour (USD), one array of length H per category."""

    energy_usd: np.ndarray
    colo_usd: np.ndarray
    maintenance_usd: np.ndarray
    software_usd: np.ndarray  # ongoing engineers; the porting lump is in `software_cash_flows`
    rental_usd: np.ndarray
    unserved_penalty_usd: np.ndarray

    @property
    def num_hours(self) -> int:
        return len(self.energy_usd)

    @property
    def horizon_years(self) -> float:
        return self.num_hours / HOURS_PER_YEAR

    @property
    def total_usd(self) -> np.ndarray:
        """Operating cost per hour, all categories (USD)."""
        return sum(getattr(self, f"{s}_usd") for s in _STREAMS)

    def cash_flows(self) -> CashFlows:
        return CashFlows.from_hourly({s: getattr(self, f"{s}_usd") for s in _STREAMS})


def _hourly(name: str, x: np.ndarray | float | None, num_hours: int, *,
            allow_scalar: bool = False) -> np.ndarray:
    if x is None:
        return np.zeros(num_hours)
    a = np.asarray(x, dtype=float)
    if a.ndim == 0 and allow_scalar:
        a = np.full(num_hours, float(a))
    if a.shape != (num_hours,):
        raise ValueError(f"{name} must be a 1-D array of {num_hours} hours, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        i = int(np.flatnonzero(~np.isfinite(a) | (a < 0))[0])
        raise ValueError(f"{name}[{i}] must be finite and >= 0, got {a[i]!r}")
    return a


def _from_hour(start_years: float, num_hours: int) -> np.ndarray:
    """Fraction of each hour [h, h + 1) at or after `start_years`."""
    h = np.arange(num_hours, dtype=float)
    return np.clip(h + 1.0 - start_years * HOURS_PER_YEAR, 0.0, 1.0)


def opex_hourly(purchases: Sequence[Purchase], finance: FinanceAssumptions, *,
                it_power_kw: np.ndarray, provisioned_kw: np.ndarray,
                rented_card_hours: np.ndarray | None = None,
                rent_usd_per_card_hour: np.ndarray | float | None = None,
                unserved_card_hours: np.ndarray | None = None,
                software: SoftwareCost | None = None,
                unserved_usd_per_card_hour: np.ndarray | float | None = None) -> OpexHourly:
    """Operating cost per hour over a horizon of H = len(it_power_kw) hours (formulas above).

    `it_power_kw`: actual IT draw (kW, mean over the hour); `provisioned_kw`: nameplate power paid
    for at the colocation rate (kW); card-hours are per hour of the timeline;
    `rent_usd_per_card_hour` is a scalar or an array of H. Unserved card-hours are priced at
    `finance.unserved_penalty_usd_per_card_hour`, or at the rent when that is None.
    """
    it = np.asarray(it_power_kw, dtype=float)
    if it.ndim != 1 or len(it) == 0:
        raise ValueError(f"it_power_kw must be a non-empty 1-D array, got shape {it.shape}")
    num_hours = len(it)
    it = _hourly("it_power_kw", it, num_hours)
    prov = _hourly("provisioned_kw", provisioned_kw, num_hours)
    rented = _hourly("rented_card_hours", rented_card_hours, num_hours)
    unserved = _hourly("unserved_card_hours", unserved_card_hours, num_hours)
    rent = None if rent_usd_per_card_hour is None else _hourly(
        "rent_usd_per_card_hour", rent_usd_per_card_hour, num_hours, allow_scalar=True)
    if rent is None and np.any(rented > 0):
        raise ValueError("rented_card_hours is nonzero but rent_usd_per_card_hour is not given")
    penalty = finance.unserved_penalty_usd_per_card_hour
    if unserved_usd_per_card_hour is not None:  # the caller priced each hour's shortfall
        penalty_usd = _hourly("unserved_usd_per_card_hour", unserved_usd_per_card_hour,
                              num_hours, allow_scalar=True)
    elif penalty is not None:
        penalty_usd = np.full(num_hours, float(penalty))
    elif rent is not None:
        penalty_usd = rent
    elif np.any(unserved > 0):
        raise ValueError("unserved_card_hours is nonzero but has no price: set FinanceAssumptions."
                         "unserved_penalty_usd_per_card_hour or pass rent_usd_per_card_hour")
    else:
        penalty_usd = np.zeros(num_hours)

    maintenance = np.zeros(num_hours)
    for p in purchases:
        usd_per_hour = (capex_breakdown(p, finance).total_usd
                        * finance.maintenance_fraction_per_year / HOURS_PER_YEAR)
        active = _from_hour(p.delivery_time_years, num_hours)
        if p.retire_time_years is not None:  # no maintenance after end of life
            active = active - _from_hour(p.retire_time_years, num_hours)
        maintenance += usd_per_hour * active

    software_usd = np.zeros(num_hours)
    if software is not None and software.ongoing_engineers > 0:
        software_usd = (software.ongoing_engineers * software.usd_per_engineer_year / HOURS_PER_YEAR
                        * _from_hour(software.ongoing_start_years, num_hours))

    return OpexHourly(
        energy_usd=it * finance.pue * finance.electricity_usd_per_kwh,
        colo_usd=prov * finance.colo_usd_per_kw_month / HOURS_PER_MONTH,
        maintenance_usd=maintenance,
        software_usd=software_usd,
        rental_usd=rented * (rent if rent is not None else 0.0),
        unserved_penalty_usd=unserved * penalty_usd,
    )


def software_cash_flows(software: SoftwareCost | None, horizon_years: float) -> list[CashFlow]:
    """The one-off porting cost, porting_engineer_years x usd_per_engineer_year, at its date."""
    if software is None or software.porting_engineer_years == 0:
        return []
    if software.porting_time_years > horizon_years:
        raise ValueError(f"SoftwareCost.porting_time_years {software.porting_time_years!r} "
                         f"is after the horizon ({horizon_years:.6g} years)")
    return [CashFlow(float(software.porting_time_years),
                     software.porting_engineer_years * software.usd_per_engineer_year, "software")]
