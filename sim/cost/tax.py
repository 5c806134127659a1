"""Optional after-tax view: the only place where depreciation meets cash.

With tax rate tau, on the pre-tax cash flows (costs > 0, inflows < 0):
    capex                      unchanged (capitalised, not deductible when paid)
    operating costs            x (1 - tau)   (deductible when paid)
    depreciation tax shield    - tau x depreciation, hour by hour (start of the hour, as opex)
    resale value R at sale     tax on the gain over book value: + tau x (R - book_value),
                               at the horizon or at an earlier end of life
Taxes are taken to fall when the flow they belong to falls (no payment lag) and to be usable in
full (the buyer has other taxable profit). The discount rate is the same nominal rate as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sim.cost.capex import (book_value_usd, depreciation_hourly_usd, residual_value,
                             sale_time_years)
from sim.cost.finance import HOURS_PER_YEAR, FinanceAssumptions, Purchase
from sim.cost.flows import (
    CashFlowsLike,
    as_cash_flows,
    category_code,
    discount_factor,
    npv,
    pv_by_category,
    pv_hourly,
)


@dataclass(frozen=True)
class AfterTaxNpv:
    """Present values (USD at t = 0) of the after-tax view; `after_tax_npv_usd` is their sum."""

    pre_tax_npv_usd: float
    opex_tax_saving_pv_usd: float  # -tau x PV(operating costs)
    depreciation_shield_pv_usd: float  # -tau x PV(depreciation)
    residual_gain_tax_pv_usd: float  # tau x sum of (R - book value) x DF(sale)

    @property
    def after_tax_npv_usd(self) -> float:
        return (self.pre_tax_npv_usd + self.opex_tax_saving_pv_usd
                + self.depreciation_shield_pv_usd + self.residual_gain_tax_pv_usd)


def after_tax_npv(cash_flows: CashFlowsLike, purchases: Sequence[Purchase],
                  finance: FinanceAssumptions, horizon_years: float,
                  rate: float | None = None) -> AfterTaxNpv:
    """After-tax present value of net cost (module docstring); the rate defaults to finance's.
    Each purchase leaves the books when it is sold (`sale_time_years`: at its retirement, or at
    the horizon): the tax on its gain over book value falls then."""
    r = finance.discount_rate if rate is None else rate
    tau = finance.tax_rate
    cf = as_cash_flows(cash_flows)
    is_res = cf.code == category_code("residual")
    if np.any(cf.hourly_usd[category_code("residual")] != 0):
        raise ValueError("residual-value flows must be dated, not hourly, for the after-tax view")
    pv = pv_by_category(cf, r)
    opex_pv = sum(v for c, v in pv.items() if c not in ("capex", "residual"))
    num_hours = round(horizon_years * HOURS_PER_YEAR)
    shield_pv = -tau * pv_hourly(depreciation_hourly_usd(purchases, finance, num_hours), r)
    gain_pv = 0.0
    resale_usd = 0.0
    for p in purchases:
        value_usd = -sum(f.usd for f in residual_value([p], horizon_years, finance))
        sold = sale_time_years(p, horizon_years)
        gain_pv += (value_usd - book_value_usd([p], finance, sold)) * float(
            discount_factor(sold, r))
        resale_usd += value_usd
    flows_usd = -float(cf.usd[is_res].sum())
    if abs(flows_usd - resale_usd) > 1e-6 * max(1.0, abs(resale_usd)):
        raise ValueError(f"residual-value flows ({flows_usd:,.2f} USD) do not match the "
                         f"purchases' resale value ({resale_usd:,.2f} USD)")
    return AfterTaxNpv(
        pre_tax_npv_usd=npv(cf, r),
        opex_tax_saving_pv_usd=-tau * opex_pv,
        depreciation_shield_pv_usd=shield_pv,
        residual_gain_tax_pv_usd=tau * gain_pv,
    )
