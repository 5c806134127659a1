"""Stage 3b, fleet: one option's purchases, leases and reservations, its workloads with the
capacity its cards have hour by hour, and its hourly timeline (sim.fleet)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.config.loader import ConfigError
from sim.fleet.timeline import (Demand, FleetError, FleetOption, Lease, LeadTime, Purchase,
                                Reliability, Reserved, Timeline, Workload, simulate_fleet)
from sim.perf.software import CardSoftware
from sim.stages.capacity import Capacity, software
from sim.stages.inputs import (card_value, hours_from, purchase_price_usd, server_kw,
                               serving_cards)
from sim.stages.resolve import RENTED, Resolved
from sim.stages.training import Training


@dataclass(frozen=True)
class OptionFleet:
    """The fleet stage's output for one option."""

    name: str
    option: FleetOption
    workloads: list[Workload]
    timeline: Timeline
    prices_usd: dict[str, float]
    """Price per card of each card it buys."""
    serving: tuple[str, ...]
    software: list[dict]
    """Per (workload, card) that serves: the releases it runs (`Result.software` rows)."""


def purchases(rv: Resolved, oname: str) -> tuple[tuple[Purchase, ...], dict[str, float]]:
    """An option's purchases and the price per card of each card it buys. The most specific
    lead time wins: the purchase's own, else `cards.<id>.lead_time_weeks`, else the default."""
    scn, lib = rv.scenario, rv.library
    buys, prices = [], {}
    for b in scn.options[oname].buy:
        lt = b.lead_time_weeks if "lead_time_weeks" in b.model_fields_set else \
            card_value(scn, b.card, "lead_time_weeks", b.lead_time_weeks)
        lt = tuple(lt) if isinstance(lt, list) else lt
        lead = LeadTime(lt[0], lt[1]) if isinstance(lt, tuple) else None
        buys.append(Purchase(b.card, b.count, hours_from(scn.start, b.at),
                             0.0 if lead else float(lt) * 168, 72.0, b.life_years, lead))
        prices[b.card] = purchase_price_usd(scn, lib, b.card, b.price_usd)
    return tuple(buys), prices


def fleet_option(rv: Resolved, oname: str, buys: tuple[Purchase, ...]) -> FleetOption:
    scn, o = rv.scenario, rv.scenario.options[oname]
    cards_here = {b.card for b in (*o.buy, *o.lease, *o.reserve)}
    rel = scn.reliability
    return FleetOption(
        oname, buys, Reliability(failures_per_card_year=rel.failures_per_card_year,
                                 infant_mortality=rel.infant_mortality,
                                 repair_hours=rel.repair_hours, spare_fraction=o.spare_fraction),
        {c: server_kw(scn, rv.library, c) for c in cards_here},
        tuple(Reserved(x.card, x.count, hours_from(scn.start, x.at), x.term_years,
                       x.usd_per_card_hour) for x in o.reserve),
        tuple(Lease(x.card, x.count, hours_from(scn.start, x.at), x.term_years,
                    x.usd_per_card_month) for x in o.lease),
        site_power_cap_kw=scn.site.power_cap_mw * 1000 if scn.site.power_cap_mw else None)


def software_row(oname: str, wname: str, card: str, sw: CardSoftware, own: bool) -> dict:
    cap = sw.capacity_rps
    runs = [(st.from_hour, e) for st, e in zip(sw.steps, sw.in_force)]
    runs = [x for i, x in enumerate(runs) if i == 0 or x[1] != runs[i - 1][1]]
    return {"option": oname, "workload": wname, "card": card,
            "role": "own" if own else "rented",
            "engines": " -> ".join(f"{e} from hour {h:.0f}" for h, e in runs),
            "upgrade_hours": [float(h) for h, _ in runs[1:]],
            "upgrade_engines": [e or "" for _, e in runs[1:]],
            "engine_at_start": sw.in_force[0], "engine_at_end": sw.in_force[-1],
            "projected_from_hour": sw.projected_from_hour, "rate_per_year": sw.rate_per_year,
            "roofline_ceiling": sw.ceiling, "capacity_start_rps": float(cap[0]),
            "capacity_end_rps": float(cap[-1]), "capacity_mean_rps": float(cap.mean())}


def demand(rv: Resolved, wname: str) -> Demand:
    """A workload's demand: the mean rate is peak / (1 + diurnal amplitude)."""
    scn, t = rv.scenario, rv.scenario.workloads[wname].traffic
    amp = t.diurnal_amplitude
    return Demand(t.peak_rps / (1 + amp), t.growth_per_year, amp,
                  weekend_factor=t.weekend_factor,
                  events=tuple((hours_from(scn.start, ev.at), ev.days * 24.0, ev.multiplier)
                               for _, ev in sorted(t.events.items())),
                  share_by_year=t.share_by_year, growth_by_quarter=t.growth_by_quarter)


def workload(rv: Resolved, cap: Capacity, oname: str, wname: str, cards_here: set[str],
             serving: set[str], sw_rows: list[dict]) -> Workload:
    """A workload in one option: its demand, lengths, capacity per card hour by hour under the
    option's plan (rented cards under the scenario's), rent terms and prefill share."""
    scn, w = rv.scenario, rv.scenario.workloads[wname]
    rows = cap.frame[cap.frame.workload == wname]
    rps: dict[str, float | np.ndarray] = {}
    for r in rows.itertuples():
        if r.card in serving or (w.rent and r.card == w.rent.card):
            own = r.card in serving
            sw = software(rv, cap, wname, r.card, rv.plans[oname] if own else rv.plans[RENTED])
            sw_rows.append(software_row(oname, wname, r.card, sw, own))
            rps[r.card] = sw.capacity_rps
    for c in cards_here - set(rps):
        rps[c] = 0.0
    own_rows = rows[rows.card.isin(serving)]
    pf = float(own_rows.prefill_time_fraction.mean()) if len(own_rows) else float(
        rows.prefill_time_fraction.mean())
    return Workload(
        wname, demand(rv, wname), float(rows.input_tokens.iloc[0]),
        float(rows.output_tokens.iloc[0]), rps,
        rent_usd_per_card_hour=card_value(scn, w.rent.card, "rent_usd_per_hour",
                                          w.rent.usd_per_hour) if w.rent else 0.0,
        rent_card=w.rent.card if w.rent else None,
        rent_cap_cards=(w.rent.max_cards if w.rent and w.rent.max_cards is not None
                        else math.inf),
        prefill_time_fraction=pf)


def fleet(rv: Resolved, cap: Capacity, tr: Training, oname: str,
          fleet_seed: int | None = None) -> OptionFleet:
    """One option's hourly timeline (`fleet_seed`: its random streams, default the
    scenario's seed)."""
    scn, o = rv.scenario, rv.scenario.options[oname]
    cards_here = {b.card for b in (*o.buy, *o.lease, *o.reserve)}
    buys, prices = purchases(rv, oname)
    opt = fleet_option(rv, oname, buys)
    serving = serving_cards(scn, oname)
    sw_rows: list[dict] = []
    workloads = [workload(rv, cap, oname, wname, cards_here, set(serving), sw_rows)
                 for wname in scn.workloads]
    try:
        tl = simulate_fleet(opt, workloads, [c for c in tr.campaigns if c.card in cards_here],
                            scn.horizon_years, seed=scn.seed if fleet_seed is None else fleet_seed)
    except FleetError as exc:  # a user error found only now: located like the others
        raise ConfigError(f"{rv.where}: {exc}") from None
    return OptionFleet(oname, opt, workloads, tl, prices, serving, sw_rows)


def per_hour(of: OptionFleet) -> pd.DataFrame:
    """The option's hourly frame with each workload's capacity per card in force."""
    H = len(of.timeline.hours)
    return pd.concat([of.timeline.per_hour(), pd.DataFrame({
        f"{w.name}.{c}.capacity_rps_per_card": w.capacity(c, H)
        for w in of.workloads for c in sorted(w.capacity_rps_per_card)})], axis=1)
