"""Capital cost: purchase cash flows, residual value at the horizon, depreciation (accounting only).

Per purchase of n cards at card price p (after the price decline to its order date):
    card    = n x p
    server  = card x (server_multiplier - 1)      or n x non_gpu_server_usd_per_card
    network = (card + server) x share / (1 - share)      (network is `share` of cluster capex)
Cash: deposit_fraction of the total at the order date, the balance at delivery.
Residual value at the horizon H (an inflow): curve(H - delivery) x (card + server). The network
fabric is site-specific and is given no resale value (E6 has no data for it).
Depreciation: straight line from delivery over `depreciation_years`, zero salvage, on the whole
capex. It is an accounting view: never part of cash totals or the pre-tax NPV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.cost.finance import HOURS_PER_YEAR, FinanceAssumptions, Purchase
from sim.cost.flows import CashFlow


@dataclass(frozen=True)
class CapexBreakdown:
    """Capex of one purchase (USD, at the price paid)."""

    card_usd: float
    server_usd: float  # the non-GPU part of the servers
    network_usd: float

    @property
    def total_usd(self) -> float:
        return self.card_usd + self.server_usd + self.network_usd

    @property
    def resaleable_usd(self) -> float:
        """Card plus server: what the residual-value curve applies to."""
        return self.card_usd + self.server_usd


def price_paid_usd_per_card(purchase: Purchase, finance: FinanceAssumptions) -> float:
    """Card price paid: unit_price_usd x (1 - price_decline_per_year)^order_time_years."""
    decline = 1.0 - finance.price_decline_per_year
    return purchase.unit_price_usd * decline ** purchase.order_time_years


def capex_breakdown(purchase: Purchase, finance: FinanceAssumptions) -> CapexBreakdown:
    """Card, non-GPU server and network capex of one purchase (USD)."""
    card_usd = purchase.count * price_paid_usd_per_card(purchase, finance)
    if purchase.non_gpu_server_usd_per_card is None:
        server_usd = card_usd * (finance.server_multiplier - 1.0)
    else:
        server_usd = purchase.count * purchase.non_gpu_server_usd_per_card
    network_usd = (card_usd + server_usd) * finance.network_share / (1.0 - finance.network_share)
    return CapexBreakdown(card_usd, server_usd, network_usd)


def _check_horizon(horizon_years: float) -> None:
    if not isinstance(horizon_years, (int, float)) or not math.isfinite(horizon_years) \
            or horizon_years <= 0:
        raise ValueError(f"horizon_years must be a finite number > 0, got {horizon_years!r}")


def capex_cash_flows(purchases: Sequence[Purchase], finance: FinanceAssumptions,
                     horizon_years: float | None = None) -> list[CashFlow]:
    """Capex payments: (order_time, deposit, "capex") and (delivery_time, balance, "capex").

    With `horizon_years`, payments dated after the horizon are left out (an order still in
    transit at the horizon is valued by `residual_value` at the deposit paid).
    """
    if horizon_years is not None:
        _check_horizon(horizon_years)
    flows: list[CashFlow] = []
    for p in purchases:
        total_usd = capex_breakdown(p, finance).total_usd
        deposit_usd = total_usd * p.deposit_fraction
        for t, usd in ((p.order_time_years, deposit_usd),
                       (p.delivery_time_years, total_usd - deposit_usd)):
            if usd != 0 and (horizon_years is None or t <= horizon_years):
                flows.append(CashFlow(float(t), float(usd), "capex"))
    return flows


def residual_value(purchases: Sequence[Purchase], horizon_years: float,
                   finance: FinanceAssumptions) -> list[CashFlow]:
    """Value of the fleet at the horizon, as inflows (negative usd) dated at `horizon_years`.

    Delivered by the horizon: curve(horizon - delivery) x (card + server capex paid).
    Ordered but not yet delivered: the deposit paid (an order taken as transferable at cost).
    Ordered after the horizon: nothing.
    """
    _check_horizon(horizon_years)
    flows: list[CashFlow] = []
    for p in purchases:
        b = capex_breakdown(p, finance)
        retire = p.retire_time_years
        if sale_time_years(p, horizon_years) < horizon_years:
            age_years = retire - p.delivery_time_years  # sold at end of life, before the horizon
            value_usd = finance.residual_curve.fraction_at(age_years) * b.resaleable_usd
            if value_usd != 0:
                flows.append(CashFlow(float(retire), -float(value_usd), "residual"))
            continue
        if p.delivery_time_years <= horizon_years:
            age_years = horizon_years - p.delivery_time_years
            value_usd = finance.residual_curve.fraction_at(age_years) * b.resaleable_usd
        elif p.order_time_years <= horizon_years:
            value_usd = b.total_usd * p.deposit_fraction
        else:
            value_usd = 0.0
        if value_usd != 0:
            flows.append(CashFlow(float(horizon_years), -float(value_usd), "residual"))
    return flows


def sale_time_years(p: Purchase, horizon_years: float) -> float:
    """When a purchase leaves the books: at its retirement when it is delivered and retires
    before the horizon (sold at end of life), else at the horizon."""
    retire = p.retire_time_years
    if retire is not None and retire < horizon_years and p.delivery_time_years <= retire:
        return float(retire)
    return float(horizon_years)


def _overlap(a0: np.ndarray | float, a1: np.ndarray | float, b0: float, b1: float) -> np.ndarray:
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0.0, None)


def depreciation_hourly_usd(purchases: Sequence[Purchase], finance: FinanceAssumptions,
                            num_hours: int) -> np.ndarray:
    """Straight-line depreciation charged in each hour of the horizon (USD per hour, accounting).

    Purchase capex C depreciates at C / depreciation_years per year from delivery, for
    depreciation_years or until it is sold (`sale_time_years`), whichever comes first; hour h
    carries the part of that line inside [h, h + 1).
    """
    h = np.arange(num_hours, dtype=float)
    out = np.zeros(num_hours)
    life_hours = finance.depreciation_years * HOURS_PER_YEAR
    for p in purchases:
        c_usd = capex_breakdown(p, finance).total_usd
        start_h = p.delivery_time_years * HOURS_PER_YEAR
        end_h = min(start_h + life_hours,
                    sale_time_years(p, num_hours / HOURS_PER_YEAR) * HOURS_PER_YEAR)
        out += c_usd / life_hours * _overlap(h, h + 1.0, start_h, end_h)
    return out


def book_value_usd(purchases: Sequence[Purchase], finance: FinanceAssumptions,
                   at_years: float) -> float:
    """Book value at `at_years`: capex less depreciation to date; deposits of undelivered orders."""
    total = 0.0
    for p in purchases:
        b = capex_breakdown(p, finance)
        if p.delivery_time_years <= at_years:
            used = min(at_years - p.delivery_time_years, finance.depreciation_years)
            total += b.total_usd * (1.0 - used / finance.depreciation_years)
        elif p.order_time_years <= at_years:
            total += b.total_usd * p.deposit_fraction
    return total


def depreciation_schedule(purchases: Sequence[Purchase], finance: FinanceAssumptions,
                          horizon_years: float) -> pd.DataFrame:
    """Accounting view per year: columns `year, depreciation_usd, book_value_usd` (at year end).

    Straight line over `finance.depreciation_years` from each delivery, zero salvage; the last
    row ends at the horizon. Never add these amounts to cash totals or NPV: the pre-tax view uses
    cash (`capex_cash_flows`, `residual_value`); only `tax.after_tax_npv` uses depreciation, for
    its tax shield.
    """
    _check_horizon(horizon_years)
    num_years = math.ceil(horizon_years - 1e-9)
    year = np.arange(num_years)
    ends = np.minimum(year + 1.0, horizon_years)
    dep = np.zeros(num_years)
    for p in purchases:
        c_usd = capex_breakdown(p, finance).total_usd
        d = p.delivery_time_years
        dep += c_usd / finance.depreciation_years * _overlap(
            year.astype(float), ends, d, d + finance.depreciation_years)
    book = [book_value_usd(purchases, finance, float(e)) for e in ends]
    return pd.DataFrame({"year": year, "depreciation_usd": dep, "book_value_usd": book})
