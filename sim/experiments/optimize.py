"""The cheapest purchase plan that meets the demand and the training calendar: a mixed-integer
programme on a yearly, linearised fleet model (`scipy.optimize.milp`), checked by simulating it.

Linearised model, per year y of the horizon and candidate card c:
    buy[c, y]   servers of `unit` cards ordered so that they arrive by the start of year y
                (ordered `lead time` earlier, never before the scenario starts), integer
    serve[c, w, y]  cards of c serving workload w at the year's peak, continuous
    rent[w, y]  cards rented at the peak (when the workload may rent), continuous, <= its cap
    use[c]      1 when any c is bought (pays that card's software porting), binary
    demand:     sum_c cap[c, w] serve[c, w, y] + cap_rent[w] rent[w, y] >= peak[w, y] (1 + margin)
    cards:      sum_w serve[c, w, y] <= a (owned[c, y] - training[c, y]),  a = (1 - spares) 0.99
    owned[c, y] = unit x (buys of the last `life` years)
Costs (present values at the scenario's discount rate, from the cost layer's own functions):
a card's capex, opex at the serving power share over its life within the horizon, less its
residual value; rent at the peak count for the whole year (an upper bound: the simulation
rents only the hours it needs); porting plus ongoing engineers for a card that needs them.
Capacities per card (after the scenario's efficiency factors), hourly demand and the training
calendar come from one pipeline run on a probe option, never from inside the pipeline.

The plan is then added to the scenario as an option and simulated hour by hour with the others.
If it serves less than the SLO tolerance (failures, lead times, diurnal peaks), the margin grows
and the programme is solved again (at most `max_rounds` times); the result says how it ended.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.scenario import Scenario
from sim.cost.capex import capex_cash_flows, residual_value
from sim.cost.finance import Purchase
from sim.cost.fleet_cost import SERVING_POWER_FRACTION
from sim.cost.flows import CashFlow, npv
from sim.cost.opex import opex_hourly
from sim.fleet.timeline import HOURS_PER_YEAR

PROBE = "__probe__"
PLAN = "optimised"


@dataclass
class OptimizeResult:
    plan: pd.DataFrame
    """card, year, servers, cards, order_date, delivered_by."""
    option: dict
    """The plan as a scenario option (YAML-ready)."""
    objective_usd: float
    """The linearised model's present cost of the plan."""
    simulated: dict
    """The plan's summary from the simulation (npv_usd, slo_attainment, ...)."""
    meets_slo: bool
    margin: float
    rounds: int
    comparison: pd.DataFrame
    """Every option of the scenario plus the plan: NPV, SLO attainment, meets SLOs."""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"plan": self.plan.to_dict(orient="records"), "option": self.option,
                "objective_usd": self.objective_usd, "simulated_npv_usd":
                self.simulated["npv_usd"], "simulated_slo_attainment":
                self.simulated["slo_attainment"], "meets_slo": self.meets_slo,
                "margin": self.margin, "rounds": self.rounds,
                "comparison": self.comparison.to_dict(orient="records"), "notes": self.notes}


def _date(start: str, years: float) -> str:
    parts = [int(x) for x in start.split("-")] + [1, 1]
    d = dt.date(parts[0], parts[1], parts[2]) + dt.timedelta(days=round(years * 365.25))
    return d.isoformat()


def _lead_weeks(scn: Scenario, card: str) -> tuple[float, float] | float:
    ov = scn.cards.get(card)
    v = ov.lead_time_weeks if ov is not None else None
    if v is not None:
        return tuple(v) if isinstance(v, (list, tuple)) else float(v)
    for o in scn.options.values():
        for b in o.buy:
            if b.card == card:
                return b.lead_time_weeks
    return 0.0


def _candidates(scn: Scenario, cards: list[str] | None) -> list[str]:
    if cards:
        return list(dict.fromkeys(cards))
    seen: dict[str, None] = {}
    for o in scn.options.values():
        for b in o.buy:
            seen.setdefault(b.card, None)
    for t in scn.training.values():
        seen.setdefault(t.card, None)
    return list(seen)


def _software(scn: Scenario, cards: list[str]) -> dict[str, tuple[float, float, float]]:
    """Per card: (porting engineer-years, ongoing engineers, $ per engineer-year) from the
    options that port to it (the largest effort given)."""
    training_cards = {t.card for t in scn.training.values()}
    out: dict[str, tuple[float, float, float]] = {}
    for o in scn.options.values():
        sw = o.software
        if sw.porting_engineer_years <= 0 and sw.ongoing_engineers <= 0:
            continue
        ported = set(o.serve_on) or {b.card for b in o.buy}
        for c in ported - training_cards:
            if c in cards:
                prev = out.get(c, (0.0, 0.0, sw.usd_per_engineer_year))
                out[c] = (max(prev[0], sw.porting_engineer_years),
                          max(prev[1], sw.ongoing_engineers), sw.usd_per_engineer_year)
    return out


def _probe(scn: Scenario, cards: list[str], lib: Library, base: Path | None,
           allow_outside_paths: bool = False, cache=None):
    """One pipeline run with every candidate card owned from hour 0: capacities, hourly demand,
    the training calendar."""
    from sim.stages import run

    train_need = {}
    for t in scn.training.values():
        train_need[t.card] = max(train_need.get(t.card, 0), t.cards or 0)
    buys = [{"card": c, "count": max(train_need.get(c, 0) * 2, 8), "at": scn.start,
             "lead_time_weeks": 0.0} for c in cards]
    doc = scn.model_dump(mode="json", exclude_unset=True)
    doc["options"] = {PROBE: {"buy": buys, "serve_on": cards}}
    doc.pop("analysis", None)
    probe = Scenario.model_validate(doc)
    return run(probe, lib, base=base, allow_outside_paths=allow_outside_paths, cache=cache)


def _card_cost_pv(scn: Scenario, lib: Library, fin, card: str, year: int, price: float,
                  lead_years: float, life_years: float, horizon: float) -> tuple[float, float]:
    """(order time, present cost) of one card arriving by the start of `year`."""
    from sim.config.scenario import card_power_w
    from sim.stages import SERVER_POWER_PER_TDP

    order = max(0.0, year - lead_years)
    deliver = order + lead_years
    if deliver >= horizon:
        return order, math.inf
    p = Purchase(card, 1, order, deliver, price, retire_time_years=deliver + life_years)
    flows: list[CashFlow] = list(capex_cash_flows([p], fin, horizon))
    flows += residual_value([p], horizon, fin)
    hours = int(round(horizon * HOURS_PER_YEAR))
    h = np.arange(hours) / HOURS_PER_YEAR
    owned = (h >= deliver) & (h < deliver + life_years)
    kw = card_power_w(scn, lib.card(card).power.tdp_w, card) / 1000 * SERVER_POWER_PER_TDP
    op = opex_hourly([p], fin, it_power_kw=owned * kw * SERVING_POWER_FRACTION,
                     provisioned_kw=owned * kw)
    return order, npv(flows, fin.discount_rate) + npv(op, fin.discount_rate)


def optimize(scn: Scenario, *, cards: list[str] | None = None, unit: int = 8,
             margin: float = 0.05, max_rounds: int = 4, base: Path | None = None,
             library: Library | None = None, time_limit_s: float = 60.0,
             allow_outside_paths: bool = False) -> OptimizeResult:
    from scipy.optimize import Bounds, LinearConstraint, milp

    from sim.stages import RunCache, card_price_usd, finance_assumptions, run

    lib = library or Library.default()
    cand = _candidates(scn, cards)
    for c in cand:
        if c not in lib.ids("card"):
            raise ConfigError(f"optimize: --cards: unknown card '{c}'")
    if unit < 1:
        raise ConfigError("optimize: --unit must be >= 1")
    fin = finance_assumptions(scn)
    H = float(scn.horizon_years)
    Y = int(math.ceil(H - 1e-9))
    cache = RunCache()  # the probe's capacities and training plans, reused by each round
    probe = _probe(scn, cand, lib, base, allow_outside_paths, cache)
    capdf = probe.capacity
    ph = probe.per_hour[probe.per_hour.option == PROBE]
    year_of = (ph["hour"].to_numpy() // HOURS_PER_YEAR).astype(int)
    W = list(scn.workloads)
    cap = {(c, w): float(capdf[(capdf.card == c) & (capdf.workload == w)].rps_per_card.iloc[0])
           if len(capdf[(capdf.card == c) & (capdf.workload == w)]) else 0.0
           for c in cand for w in W}
    peak = {(w, y): float(ph[f"{w}.demand_rps"].to_numpy()[year_of == y].max())
            for w in W for y in range(Y)}
    rent = {}
    for w, spec in scn.workloads.items():
        if spec.rent:
            rc = capdf[(capdf.card == spec.rent.card) & (capdf.workload == w)]
            rent[w] = (float(rc.rps_per_card.iloc[0]), spec.rent.usd_per_hour,
                       spec.rent.max_cards if spec.rent.max_cards is not None else math.inf)
    train = {(c, y): 0.0 for c in cand for y in range(Y)}
    for camp in probe.options[PROBE].campaigns:
        if not camp.started:
            continue
        if camp.card not in cand:
            raise ConfigError(f"optimize: training runs on '{camp.card}', which is not a "
                              "candidate")
        y0 = int(camp.start_hour // HOURS_PER_YEAR)
        y1 = int(min(camp.end_hour or H * HOURS_PER_YEAR, H * HOURS_PER_YEAR - 1)
                 // HOURS_PER_YEAR)
        for y in range(y0, min(y1, Y - 1) + 1):
            train[(camp.card, y)] = max(train[(camp.card, y)], float(camp.cards))
    spares = max((o.spare_fraction for o in scn.options.values()), default=0.05)
    avail = (1 - spares) * 0.99  # ~1% in repair (reference-data D2 failure rates)
    life = min((b.life_years for o in scn.options.values() for b in o.buy), default=5.0)
    software = _software(scn, cand)

    # ---- coefficients ----------------------------------------------------------------------
    buy_cost, order_at, lead_of = {}, {}, {}
    for c in cand:
        lt = _lead_weeks(scn, c)
        lead_years = (max(lt) if isinstance(lt, tuple) else lt) / 52.0
        lead_of[c] = lead_years
        price = card_price_usd(scn, lib, c)
        for y in range(Y):
            order_at[(c, y)], buy_cost[(c, y)] = _card_cost_pv(
                scn, lib, fin, c, y, price, lead_years, life, H)
    df_year = [(1 + fin.discount_rate) ** -(y + 0.5) for y in range(Y)]
    rent_cost = {(w, y): rent[w][1] * HOURS_PER_YEAR * min(1.0, H - y) * df_year[y]
                 for w in rent for y in range(Y)}
    sw_cost = {}
    for c, (port, ongoing, usd) in software.items():
        sw_cost[c] = port * usd + sum(ongoing * usd * min(1.0, H - y) * df_year[y]
                                      for y in range(Y))

    # ---- variables ---------------------------------------------------------------------------
    idx: dict[tuple, int] = {}
    for c in cand:
        for y in range(Y):
            idx[("buy", c, y)] = len(idx)
    for c in cand:
        for w in W:
            for y in range(Y):
                idx[("serve", c, w, y)] = len(idx)
    for w in rent:
        for y in range(Y):
            idx[("rent", w, y)] = len(idx)
    for c in software:
        idx[("use", c)] = len(idx)
    n = len(idx)
    cost = np.zeros(n)
    lo, hi = np.zeros(n), np.full(n, np.inf)
    integrality = np.zeros(n)
    for (kind, *k), i in idx.items():
        if kind == "buy":
            c, y = k
            cost[i] = buy_cost[(c, y)] * unit if math.isfinite(buy_cost[(c, y)]) else 0.0
            if not math.isfinite(buy_cost[(c, y)]):
                hi[i] = 0.0
            integrality[i] = 1
        elif kind == "rent":
            w, y = k
            cost[i] = rent_cost[(w, y)]
            hi[i] = rent[w][2]
        elif kind == "use":
            cost[i] = sw_cost[k[0]]
            hi[i] = 1.0
            integrality[i] = 1
    need_cards = sum(peak.values()) / max(min((v for v in cap.values() if v > 0),
                                              default=1.0), 1e-9)
    big_m = max(need_cards + sum(train.values()), 1.0) / unit * 4 + 10

    def solve(m: float):
        rows, lbs, ubs = [], [], []
        for w in W:
            for y in range(Y):
                a = np.zeros(n)
                for c in cand:
                    a[idx[("serve", c, w, y)]] = cap[(c, w)]
                if w in rent:
                    a[idx[("rent", w, y)]] = rent[w][0]
                rows.append(a)
                lbs.append(peak[(w, y)] * (1 + m))
                ubs.append(np.inf)
        for c in cand:
            for y in range(Y):
                a = np.zeros(n)
                for w in W:
                    a[idx[("serve", c, w, y)]] = 1.0
                for k in range(Y):
                    if k <= y < k + life:
                        a[idx[("buy", c, k)]] = -avail * unit
                rows.append(a)
                lbs.append(-np.inf)
                # training is elastic: short of its cards by the spares it slows, not stalls
                ubs.append(-avail * train[(c, y)])
        for c in software:
            for y in range(Y):
                a = np.zeros(n)
                a[idx[("buy", c, y)]] = 1.0
                a[idx[("use", c)]] = -big_m
                rows.append(a)
                lbs.append(-np.inf)
                ubs.append(0.0)
        res = milp(cost, constraints=LinearConstraint(np.array(rows), lbs, ubs),
                   integrality=integrality, bounds=Bounds(lo, hi),
                   options={"time_limit": time_limit_s, "disp": False})
        if res.x is None:
            raise ConfigError(f"optimize: no plan meets the demand with these cards "
                              f"({res.message})")
        return res

    notes: list[str] = []
    m = margin
    for rounds in range(1, max_rounds + 1):
        sol = solve(m)
        x = sol.x
        plan_rows, buys = [], []
        for c in cand:
            lt = _lead_weeks(scn, c)
            for y in range(Y):
                k = int(round(x[idx[("buy", c, y)]]))
                if k <= 0:
                    continue
                at = _date(scn.start, order_at[(c, y)])
                # ordered at the start when the lead time reaches back before it: the cards
                # then arrive after the year they are for begins (rent covers the wait)
                arrive = order_at[(c, y)] + lead_of[c]
                plan_rows.append({"card": c, "year": y, "servers": k, "cards": k * unit,
                                  "order_date": at, "arrives_by": _date(scn.start, arrive),
                                  "needed_by": _date(scn.start, y),
                                  "late": arrive > y + 1e-9})
                buys.append({"card": c, "count": k * unit, "at": at,
                             "lead_time_weeks": list(lt) if isinstance(lt, tuple) else lt,
                             "price_usd": card_price_usd(scn, lib, c), "life_years": life})
        serving = sorted({c for c in cand for w in W for y in range(Y)
                          if x[idx[("serve", c, w, y)]] > 1e-6})
        used_sw = [software[c] for c in software if x[idx[("use", c)]] > 0.5]
        option = {"buy": buys, "serve_on": serving or [b["card"] for b in buys],
                  "spare_fraction": spares,
                  "software": {"porting_engineer_years": sum(s[0] for s in used_sw),
                               "ongoing_engineers": sum(s[1] for s in used_sw),
                               **({"usd_per_engineer_year": used_sw[0][2]} if used_sw else {})}}
        if not buys:
            raise ConfigError("optimize: the cheapest plan buys nothing (all demand rented); "
                              "nothing to simulate")
        doc = scn.model_dump(mode="json", exclude_unset=True)
        doc["options"] = {**doc["options"], PLAN: option}
        doc.pop("analysis", None)
        with_plan = Scenario.model_validate(doc)
        res = run(with_plan, lib, base=base, detail=False,
                  allow_outside_paths=allow_outside_paths, cache=cache)
        planned = res.options[PLAN]
        sim_sum, tol, ok = planned.as_json(), planned.slo_tolerance, planned.meets_slo
        if ok:
            break
        notes.append(f"round {rounds}: margin {m:.0%} served {sim_sum['slo_attainment']:.2%} "
                     f"in simulation (< {tol:.0%}); solving again with a larger margin")
        m = m + 0.10
    comp = pd.DataFrame([{"option": o, "npv_usd": v.npv_usd,
                          "slo_attainment": v.slo_attainment, "meets_slo": v.meets_slo}
                         for o, v in res.options.items()])
    if not ok:
        notes.append(f"after {max_rounds} rounds the plan still serves "
                     f"{sim_sum['slo_attainment']:.2%} in simulation")
    return OptimizeResult(pd.DataFrame(plan_rows), option, float(sol.fun), sim_sum, ok, m,
                          rounds, comp, notes)

