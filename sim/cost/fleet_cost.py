"""Price one fleet option's timeline: cash flows, cost per year, NPV, $ per million tokens.

Power drawn per card, as a share of its server power per card (`FleetOption.power_per_card_kw`,
e.g. DGX H100 10.2 kW / 8 = 1.275 kW, reference-data E4):
    training 0.75 (E4: "during training, assume 75% of server TDP"),
    serving 0.55 (C5: average board power in decode ≈ 45-60% of TDP),
    idle, spare or in repair 0.15 (modeling-notes: idle ≈ 10-15% of TDP).
Colocation is paid on the nameplate power of every owned card. Rented capacity is priced at each
workload's rent; unserved demand, in card-hours of the rented card, at the rent unless the
finance assumptions set a penalty. Tokens count what was served by owned and rented cards; the
GPU time of a workload splits between prefill (input tokens) and decode (output tokens) by its
`prefill_time_fraction` (from `sim.perf`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.cost.finance import (HOURS_PER_MONTH, HOURS_PER_YEAR, FinanceAssumptions, Purchase,
                              SoftwareCost)
from sim.cost.flows import npv, per_year
from sim.cost.levelized import (
    HourlyUsage,
    LevelizedCost,
    effective_usd_per_card_hour,
    levelized_usd_per_m_tokens,
)
from sim.cost.opex import opex_hourly
from sim.cost.tax import AfterTaxNpv, after_tax_npv
from sim.cost.total import option_cash_flows
from sim.fleet.timeline import FleetOption, Timeline, Workload

TRAINING_POWER_FRACTION = 0.75  # E4 (Epoch model constants)
SERVING_POWER_FRACTION = 0.55  # C5 (InferenceX power experiment, decode 45-60% of TDP)
IDLE_POWER_FRACTION = 0.15  # modeling-notes.md: idle ≈ 10-15% of TDP


@dataclass(frozen=True)
class OptionCost:
    option: str
    per_year: pd.DataFrame
    npv_usd: float
    total_cost_usd: float
    levelized: LevelizedCost
    usd_per_card_hour: float
    tokens_in: float
    tokens_out: float
    after_tax: AfterTaxNpv


def cost_purchases(option: FleetOption, unit_price_usd: dict[str, float],
                   delivery_hours: tuple[float, ...] = ()) -> list[Purchase]:
    """The financial view of the option's orders (times in years, prices per card), delivered
    when the timeline delivered them (lead times may have been drawn)."""
    out = []
    for i, p in enumerate(option.purchases):
        if p.count == 0:
            continue
        if p.card not in unit_price_usd:
            raise ValueError(f"options.{option.name}: no price for card '{p.card}'")
        delivered = delivery_hours[i] if i < len(delivery_hours) else p.delivery_hour
        out.append(Purchase(p.card, p.count, p.order_hour / HOURS_PER_YEAR,
                            delivered / HOURS_PER_YEAR, unit_price_usd[p.card],
                            retire_time_years=delivered / HOURS_PER_YEAR + p.life_years))
    return out


def price_timeline(tl: Timeline, option: FleetOption, workloads: list[Workload],
                   unit_price_usd: dict[str, float], finance: FinanceAssumptions,
                   software: SoftwareCost | None = None) -> OptionCost:
    H = len(tl.hours)
    it_kw = np.zeros(H)
    prov_kw = np.zeros(H)
    serving_ch = np.zeros(H)
    training_ch = np.zeros(H)
    for card, d in tl.per_card.items():
        kw = option.power_per_card_kw.get(card)
        if kw is None:
            if not d["owned"].any():  # reserved cloud cards only: no site power
                serving_ch += d.get("reserved_serving", 0.0)
                continue
            raise ValueError(f"options.{option.name}: no server power per card for '{card}'")
        it_kw += kw * (TRAINING_POWER_FRACTION * d["training"] + SERVING_POWER_FRACTION
                       * d["serving"] + IDLE_POWER_FRACTION * (d["idle"] + d["unavailable"]))
        prov_kw += d["provisioned_kw"]  # nameplate of powered cards (site cap respected)
        serving_ch += d["serving"] + d.get("reserved_serving", 0.0)
        training_ch += d["training"]
    rented_ch = np.zeros(H)
    rent_usd = np.zeros(H)
    unserved_ch = np.zeros(H)
    unserved_usd = np.zeros(H)
    tokens_in = np.zeros(H)
    tokens_out = np.zeros(H)
    need = {}  # cards each workload keeps busy per hour (at its best card's capacity)
    for w in workloads:
        serving_ch = serving_ch + tl.rented_card_hours[w.name]  # rented cards serve too
        if w.prefill_time_fraction is None:
            raise ValueError(f"workloads.{w.name}: prefill_time_fraction is needed to split cost "
                             "between input and output tokens (sim.perf reports it)")
        rented_ch += tl.rented_card_hours[w.name]
        rent_usd += tl.rented_card_hours[w.name] * w.rent_usd_per_card_hour
        rent_rate = w.capacity(w.rent_card, H)
        ref = np.where(rent_rate > 0, rent_rate, w.best_capacity(H))
        short_ch = np.divide(tl.unserved_rps[w.name], ref, out=np.zeros(H), where=ref > 0)
        unserved_ch += short_ch
        # unserved demand is priced per workload: the finance penalty, else its on-demand rent
        pen = finance.unserved_penalty_usd_per_card_hour
        if pen is None:
            if w.rent_usd_per_card_hour <= 0 and short_ch.any():
                raise ValueError(f"workloads.{w.name}: unserved demand has no price (give "
                                 f"workloads.{w.name}.rent or "
                                 "finance.unserved_penalty_usd_per_card_hour)")
            pen = w.rent_usd_per_card_hour
        unserved_usd += short_ch * pen
        done_rps = tl.served_rps[w.name] + tl.rented_rps[w.name]
        tokens_in += done_rps * 3600.0 * w.input_tokens
        tokens_out += done_rps * 3600.0 * w.output_tokens
        best = w.best_capacity(H)
        need[w.name] = np.divide(tl.served_rps[w.name], best, out=np.zeros(H), where=best > 0)
    # serving card-hours split among workloads by the cards each keeps busy, then between
    # prefill (input tokens) and decode (output tokens) by each workload's prefill time share
    total_need = sum(need.values()) if need else np.zeros(H)
    prefill_h = np.zeros(H)
    for w in workloads:
        share = np.divide(need[w.name], total_need, out=np.zeros(H), where=total_need > 0)
        prefill_h += serving_ch * share * w.prefill_time_fraction
    decode_h = serving_ch - prefill_h
    for ls in option.leases:  # leases: paid monthly over the term from delivery (as rent)
        t0 = ls.start_hour + ls.lead_time_hours
        on = (tl.hours >= t0) & (tl.hours < t0 + ls.term_years * HOURS_PER_YEAR)
        rent_usd += np.where(on, ls.count * ls.usd_per_card_month / HOURS_PER_MONTH, 0.0)
        rented_ch += np.where(on, ls.count, 0.0)
    for r in option.reserved:  # reserved capacity is paid every hour of its term
        arr = np.where((tl.hours >= r.start_hour)
                       & (tl.hours < r.start_hour + r.term_years * HOURS_PER_YEAR), r.count, 0.0)
        rented_ch += arr
        rent_usd += arr * r.usd_per_card_hour
    price = np.divide(rent_usd, rented_ch, out=np.zeros(H), where=rented_ch > 0)
    purchases = cost_purchases(option, unit_price_usd, tl.delivery_hours)
    unserved_price = np.divide(unserved_usd, unserved_ch, out=np.zeros(H), where=unserved_ch > 0)
    opex = opex_hourly(purchases, finance, it_power_kw=it_kw, provisioned_kw=prov_kw,
                       rented_card_hours=rented_ch, rent_usd_per_card_hour=price,
                       unserved_card_hours=unserved_ch, software=software,
                       unserved_usd_per_card_hour=unserved_price)
    flows = option_cash_flows(purchases, finance, opex, software)
    horizon = H / HOURS_PER_YEAR
    frame = per_year(flows, horizon)
    frame.insert(0, "option", option.name)
    usage = HourlyUsage(tokens_in, tokens_out, prefill_h, decode_h, serving_ch, training_ch)
    lev = levelized_usd_per_m_tokens(flows, usage, finance.discount_rate)
    return OptionCost(option.name, frame, npv(flows, finance.discount_rate),
                      float(frame["total_usd"].sum()), lev,
                      # NaN when no card ever works (nothing delivered within the horizon)
                      effective_usd_per_card_hour(flows, serving_ch + training_ch,
                                                  finance.discount_rate)
                      if (serving_ch + training_ch).any() else float("nan"),
                      float(tokens_in.sum()), float(tokens_out.sum()),
                      after_tax_npv(flows, purchases, finance, horizon))
