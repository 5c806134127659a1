"""All cash flows of one fleet option: capex, operating cost, porting and residual value.

    option_cash_flows = capex payments dated within the horizon + hourly opex
                        + the porting lump + residual value at the horizon (an inflow)

The horizon is the length of the hourly opex arrays, H = num_hours / 8760 years.
"""

from __future__ import annotations

from collections.abc import Sequence

from sim.cost.capex import capex_cash_flows, residual_value
from sim.cost.finance import FinanceAssumptions, Purchase, SoftwareCost
from sim.cost.flows import CashFlows, combine
from sim.cost.opex import OpexHourly, software_cash_flows


def option_cash_flows(purchases: Sequence[Purchase], finance: FinanceAssumptions,
                      opex: OpexHourly, software: SoftwareCost | None = None) -> CashFlows:
    """Every dated cash flow of one option over the horizon of `opex` (costs > 0, inflows < 0)."""
    horizon_years = opex.horizon_years
    return combine(capex_cash_flows(purchases, finance, horizon_years), opex,
                   software_cash_flows(software, horizon_years),
                   residual_value(purchases, horizon_years, finance))
