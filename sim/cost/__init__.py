"""Cost model: cash flows, NPV, cost per year, levelized $ per million tokens and per card-hour.

Pure functions over plain inputs (frozen dataclasses and numpy arrays): no simpy, no randomness,
no I/O. The fleet timeline (`sim/fleet`) produces the hourly arrays these functions price.

Modules:
  finance     inputs: `FinanceAssumptions`, `ResidualCurve`, `Purchase`, `SoftwareCost`, defaults
  flows       `CashFlow`, `CashFlows`, `combine`, `npv`, `pv_by_category`, `per_year`
  capex       `capex_breakdown`, `capex_cash_flows`, `residual_value`, `depreciation_schedule`
  opex        `OpexHourly`, `opex_hourly`, `software_cash_flows`
  tax         `after_tax_npv` (depreciation tax shield; the only place depreciation meets cash)
  levelized   `HourlyUsage`, `levelized_usd_per_m_tokens`, `effective_usd_per_card_hour`

Timing convention (one, everywhere): t = 0 is the start of the horizon and time is counted in
years of 8,760 hours. Every amount is dated and discounted at its exact date with
DF(t) = (1 + r)^(-t), r the nominal annual effective discount rate (nominal USD, nominal rate).
Hourly streams (energy, colocation, maintenance, ongoing software, rental, unserved penalty, and
the tokens and card-hours that levelized metrics divide by) sit at the START of their hour:
hour h is dated t = h / 8760. Lumps (deposit at order, balance at delivery, porting) sit at their
exact dates; residual value is an inflow at the horizon t = H / 8760. Costs are positive,
inflows (residual value) negative, so `npv` is the present value of net cost. Depreciation is an
accounting view only: it never enters cash totals or the pre-tax NPV.
"""
