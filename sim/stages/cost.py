"""Stage 4, cost: an option's timeline priced (sim.cost: cash flows, NPV, $/M tokens), its
per-year frame (cost by category, tokens served, SLO attainment, utilisation, capacity per
card) and its `OptionSummary`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.config.loader import ConfigError
from sim.cost.fleet_cost import OptionCost, price_timeline
from sim.cost.finance import SoftwareCost
from sim.fleet.timeline import HOURS_PER_YEAR
from sim.stages.capacity import mix_capacity
from sim.stages.fleet import OptionFleet
from sim.stages.inputs import adoption_hour
from sim.stages.records import OptionSummary
from sim.stages.resolve import Resolved
from sim.stages.training import Training, campaign_records


@dataclass(frozen=True)
class OptionResult:
    """The cost stage's output for one option."""

    summary: OptionSummary
    per_year: pd.DataFrame


def software_cost(rv: Resolved, oname: str) -> SoftwareCost:
    """Porting and ongoing engineers, both from the option's adoption date."""
    o = rv.scenario.options[oname]
    adopt_y = adoption_hour(rv.scenario, rv.library, oname) / HOURS_PER_YEAR
    return SoftwareCost(porting_engineer_years=o.software.porting_engineer_years,
                        ongoing_engineers=o.software.ongoing_engineers,
                        usd_per_engineer_year=o.software.usd_per_engineer_year,
                        porting_time_years=adopt_y, ongoing_start_years=adopt_y)


def price(rv: Resolved, of: OptionFleet) -> OptionCost:
    try:
        cost = price_timeline(of.timeline, of.option, of.workloads, of.prices_usd, rv.finance,
                              software_cost(rv, of.name))
    except ValueError as exc:  # the cost layer's user errors (e.g. unpriced unserved demand)
        raise ConfigError(f"{rv.where}: {str(exc).splitlines()[0]}") from None
    if not (math.isfinite(cost.npv_usd) and math.isfinite(cost.total_cost_usd)):
        raise ConfigError(f"{rv.where}: options.{of.name}: its cost overflows (not a finite "
                          "number): a price, rent or rate is too large")
    return cost


def _served(of: OptionFleet, w) -> np.ndarray:
    return of.timeline.served_rps[w.name] + of.timeline.rented_rps[w.name]


def per_year(of: OptionFleet, cost: OptionCost) -> pd.DataFrame:
    """The cost layer's per-year frame with tokens served, SLO attainment, utilisation and
    capacity per card at the demand mix."""
    tl, wls = of.timeline, of.workloads
    py = cost.per_year.copy()
    years = py["year"].to_numpy().astype(int)
    year_of_hour = (tl.hours // HOURS_PER_YEAR).astype(int)
    n_years = max(int(years.max()) + 1 if len(years) else 0, int(year_of_hour.max()) + 1)

    def by_year(x: np.ndarray) -> np.ndarray:
        return np.bincount(year_of_hour, weights=x, minlength=n_years)[years]

    d_y = by_year(sum(tl.demand_rps[w.name] for w in wls))
    s_y = by_year(sum(_served(of, w) for w in wls))
    oh = by_year(sum(d["owned"] for d in tl.per_card.values()))
    uh = by_year(sum(d["serving"] + d["training"] for d in tl.per_card.values()))
    py["output_tokens_served"] = by_year(sum(_served(of, w) * 3600 * w.output_tokens
                                             for w in wls))
    py["input_tokens_served"] = by_year(sum(_served(of, w) * 3600 * w.input_tokens
                                            for w in wls))
    py["slo_attainment"] = np.divide(s_y, d_y, out=np.ones_like(s_y), where=d_y > 0)
    py["utilization"] = np.divide(uh, oh, out=np.zeros_like(uh), where=oh > 0)
    counts = by_year(np.ones(len(tl.hours)))
    for c, rate in sorted(mix_capacity(wls, tl).items()):
        py[f"capacity_req_per_s_per_card.{c}"] = by_year(rate) / counts
    return py


def software_gain(of: OptionFleet) -> float | None:
    """How much more an option's own serving cards could serve, on average over the hours they
    served, than on the releases in force at the start: sum(serving x cap / cap_0) / sum(serving)
    - 1, at each hour's demand mix. None when none of its cards served."""
    tl = of.timeline
    mix = mix_capacity(of.workloads, tl)
    num = den = 0.0
    for c in of.serving:
        if c not in mix or c not in tl.per_card or mix[c][0] <= 0:
            continue
        busy = tl.per_card[c]["serving"]
        num += float((busy * mix[c] / mix[c][0]).sum())
        den += float(busy.sum())
    return num / den - 1.0 if den > 0 else None


def summarise(rv: Resolved, tr: Training, of: OptionFleet, cost: OptionCost,
              slo_tolerance: float) -> OptionSummary:
    tl, wls, fin = of.timeline, of.workloads, rv.finance
    demand = sum(tl.demand_rps[w.name].sum() for w in wls)
    served = sum(_served(of, w).sum() for w in wls)
    owned_h = sum(d["owned"].sum() for d in tl.per_card.values())
    used_h = sum((d["serving"] + d["training"]).sum() for d in tl.per_card.values())
    energy_j = float(cost.per_year["energy_usd"].sum() / fin.electricity_usd_per_kwh
                     / fin.pue * 3.6e6)
    tokens = cost.tokens_in + cost.tokens_out
    lev = cost.levelized
    return OptionSummary(
        of.name, cost.npv_usd, cost.total_cost_usd, cost.after_tax.after_tax_npv_usd,
        lev.usd_per_m_tokens, lev.usd_per_m_input_tokens, lev.usd_per_m_output_tokens,
        energy_j / tokens if tokens else None, served / demand if demand else 1.0,
        used_h / owned_h if owned_h else 0.0, cost.usd_per_card_hour, software_gain(of),
        campaign_records(tr, tl.campaigns), of.serving, slo_tolerance)


def cost(rv: Resolved, tr: Training, of: OptionFleet, slo_tolerance: float) -> OptionResult:
    c = price(rv, of)
    return OptionResult(summarise(rv, tr, of, c, slo_tolerance), per_year(of, c))
