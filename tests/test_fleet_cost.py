"""Fleet timeline priced: closed-form case by hand, categories, levelized cost."""

from __future__ import annotations

import numpy as np
import pytest

from sim.cost.finance import FinanceAssumptions, ResidualCurve
from sim.cost.fleet_cost import (IDLE_POWER_FRACTION, SERVING_POWER_FRACTION, price_timeline)
from sim.fleet.timeline import (HOURS_PER_YEAR, Demand, FleetOption, Purchase, Reliability,
                                Workload, simulate_fleet)

NO_RESIDUAL = ResidualCurve((0.0, 1.0), (0.0, 0.0), "test: no resale value")


def test_constant_fleet_matches_hand_arithmetic():
    # 100 H100 delivered at t=0, no failures or spares, constant demand needing 40 cards,
    # rate 0, no residual value: every dollar can be written down by hand.
    opt = FleetOption("flat", (Purchase("h100-sxm", 100, 0.0, 0.0, burn_in_hours=0.0),),
                      Reliability(0.0, 0.0, 72.0, 0.0), {"h100-sxm": 1.275})
    w = Workload("chat", Demand(20.0), 1000, 200, {"h100-sxm": 0.5},
                 prefill_time_fraction=0.3)
    tl = simulate_fleet(opt, [w], [], horizon_years=1)
    fin = FinanceAssumptions(discount_rate=0.0, electricity_usd_per_kwh=0.1, pue=1.25,
                             colo_usd_per_kw_month=180.0, server_multiplier=1.65,
                             network_share=0.15, maintenance_fraction_per_year=0.03,
                             residual_curve=NO_RESIDUAL)
    cost = price_timeline(tl, opt, [w], {"h100-sxm": 30_000.0}, fin)
    H = HOURS_PER_YEAR
    server = 100 * 30_000.0 * 1.65               # card + server multiplier
    capex = server / (1 - 0.15)                  # network is 15% of cluster capex
    kw = 1.275 * (40 * SERVING_POWER_FRACTION + 60 * IDLE_POWER_FRACTION)
    energy = kw * H * 1.25 * 0.1
    colo = 100 * 1.275 * 180.0 * 12              # nameplate power, $/kW-month
    maintenance = capex * 0.03
    expected = capex + energy + colo + maintenance
    assert cost.total_cost_usd == pytest.approx(expected, rel=1e-9)
    assert cost.npv_usd == pytest.approx(expected, rel=1e-9)
    py = cost.per_year
    cats = [c for c in py.columns if c.endswith("_usd") and c != "total_usd"]
    np.testing.assert_allclose(py[cats].sum(axis=1), py["total_usd"], rtol=1e-12)
    tokens_out = 20.0 * 3600 * H * 200
    assert cost.tokens_out == pytest.approx(tokens_out)
    # levelized: PV(cost) / PV(tokens) at rate 0; input and output split by GPU time shares
    lev = cost.levelized
    assert lev.input_pv_usd + lev.output_pv_usd == pytest.approx(lev.serving_pv_usd, rel=1e-9)
    assert lev.input_pv_usd / lev.serving_pv_usd == pytest.approx(0.3, rel=1e-9)


def test_unserved_demand_is_priced_at_the_rent():
    opt = FleetOption("small", (Purchase("h100-sxm", 10, 0.0, 0.0, burn_in_hours=0.0),),
                      Reliability(0.0, 0.0, 72.0, 0.0), {"h100-sxm": 1.275})
    w = Workload("chat", Demand(20.0), 1000, 200, {"h100-sxm": 0.5}, rent_usd_per_card_hour=3.0,
                 rent_card="h100-sxm", rent_cap_cards=10, prefill_time_fraction=0.3)
    tl = simulate_fleet(opt, [w], [], horizon_years=1)
    fin = FinanceAssumptions(discount_rate=0.0, residual_curve=NO_RESIDUAL)
    cost = price_timeline(tl, opt, [w], {"h100-sxm": 30_000.0}, fin)
    # needs 40 cards: 10 owned, 10 rented, 20 unserved, each hour
    py = cost.per_year
    assert py["rental_usd"].sum() == pytest.approx(10 * 3.0 * HOURS_PER_YEAR)
    assert py["unserved_penalty_usd"].sum() == pytest.approx(20 * 3.0 * HOURS_PER_YEAR)


def test_reserved_capacity_is_paid_for_its_whole_term():
    from sim.fleet.timeline import Reserved

    opt = FleetOption("rsv", (Purchase("h100-sxm", 10, 0.0, 0.0, burn_in_hours=0.0),),
                      Reliability(0.0, 0.0, 72.0, 0.0), {"h100-sxm": 1.275},
                      reserved=(Reserved("h100-sxm", 5, 0.0, 0.5, 2.5),))
    w = Workload("chat", Demand(1.0), 1000, 200, {"h100-sxm": 0.5}, prefill_time_fraction=0.3)
    tl = simulate_fleet(opt, [w], [], horizon_years=1)
    fin = FinanceAssumptions(discount_rate=0.0, residual_curve=NO_RESIDUAL)
    cost = price_timeline(tl, opt, [w], {"h100-sxm": 30_000.0}, fin)
    # 5 cards x 4,380 hours x $2.5, used or not
    assert cost.per_year["rental_usd"].sum() == pytest.approx(5 * 0.5 * HOURS_PER_YEAR * 2.5)


def _flat(count=10, **kw):
    return FleetOption("o", (Purchase("h100-sxm", count, 0.0, 0.0, burn_in_hours=0.0, **kw),),
                       Reliability(0.0, 0.0, 72.0, 0.0), {"h100-sxm": 1.275})


def test_unserved_is_priced_even_when_nothing_can_be_rented():
    w = Workload("chat", Demand(20.0), 1000, 200, {"h100-sxm": 0.5}, rent_usd_per_card_hour=3.0,
                 rent_card="h100-sxm", rent_cap_cards=0, prefill_time_fraction=0.3)
    opt = _flat()
    tl = simulate_fleet(opt, [w], [], horizon_years=1)
    cost = price_timeline(tl, opt, [w], {"h100-sxm": 30_000.0},
                          FinanceAssumptions(discount_rate=0.0, residual_curve=NO_RESIDUAL))
    assert cost.per_year["unserved_penalty_usd"].sum() == pytest.approx(30 * 3.0 * HOURS_PER_YEAR)
    no_price = Workload("chat", Demand(20.0), 1000, 200, {"h100-sxm": 0.5},
                        prefill_time_fraction=0.3)
    with pytest.raises(ValueError, match="unserved demand has no price"):
        price_timeline(simulate_fleet(opt, [no_price], [], 1), opt, [no_price],
                       {"h100-sxm": 30_000.0}, FinanceAssumptions(discount_rate=0.0))


def test_capex_is_dated_at_the_drawn_delivery():
    from sim.fleet.timeline import LeadTime

    opt = _flat(lead_time=LeadTime(36, 52))
    w = Workload("chat", Demand(1.0), 1000, 200, {"h100-sxm": 0.5}, rent_usd_per_card_hour=3.0,
                 prefill_time_fraction=0.3)
    tl = simulate_fleet(opt, [w], [], horizon_years=2, seed=4)
    first_owned = int(np.argmax(tl.per_card["h100-sxm"]["owned"] > 0))
    assert tl.delivery_hours[0] == pytest.approx(first_owned, abs=1.0)
    fin = FinanceAssumptions(discount_rate=0.0, residual_curve=NO_RESIDUAL)
    cost = price_timeline(tl, opt, [w], {"h100-sxm": 30_000.0}, fin)
    year0_capex = cost.per_year["capex_usd"].iloc[0]
    assert (year0_capex > 0) == (tl.delivery_hours[0] < HOURS_PER_YEAR)


def test_rented_serving_carries_its_cost_into_tokens():
    from sim.fleet.timeline import Campaign

    w = Workload("chat", Demand(5.0), 1000, 200, {"h100-sxm": 0.5}, rent_usd_per_card_hour=3.0,
                 rent_card="h100-sxm", prefill_time_fraction=0.3)
    opt = _flat(count=16)
    camp = Campaign("t", "h100-sxm", 16, card_hours=1e9, ettr=1.0)  # trains all year
    tl = simulate_fleet(opt, [w], [camp], horizon_years=1)
    cost = price_timeline(tl, opt, [w], {"h100-sxm": 30_000.0},
                          FinanceAssumptions(discount_rate=0.0, residual_curve=NO_RESIDUAL))
    assert cost.levelized.serving_pv_usd > 0 and cost.tokens_out > 0


def test_colo_is_paid_on_powered_cards_only():
    capped = FleetOption("c", (Purchase("h100-sxm", 100, 0.0, 0.0, burn_in_hours=0.0),),
                         Reliability(0.0, 0.0, 72.0, 0.0), {"h100-sxm": 1.275},
                         site_power_cap_kw=50 * 1.275)
    w = Workload("chat", Demand(1.0), 1000, 200, {"h100-sxm": 0.5}, prefill_time_fraction=0.3)
    tl = simulate_fleet(capped, [w], [], horizon_years=1)
    fin = FinanceAssumptions(discount_rate=0.0, colo_usd_per_kw_month=180.0,
                             residual_curve=NO_RESIDUAL)
    cost = price_timeline(tl, capped, [w], {"h100-sxm": 30_000.0}, fin)
    assert cost.per_year["colo_usd"].sum() == pytest.approx(50 * 1.275 * 180.0 * 12)


def test_end_of_life_stops_maintenance_and_sells_the_cards():
    opt = FleetOption("eol", (Purchase("h100-sxm", 10, 0.0, 0.0, burn_in_hours=0.0,
                                       life_years=1.0),),
                      Reliability(0.0, 0.0, 72.0, 0.0), {"h100-sxm": 1.275})
    w = Workload("chat", Demand(1.0), 1000, 200, {"h100-sxm": 0.5}, rent_usd_per_card_hour=3.0,
                 prefill_time_fraction=0.3)
    tl = simulate_fleet(opt, [w], [], horizon_years=2)
    fin = FinanceAssumptions(discount_rate=0.0)
    py = price_timeline(tl, opt, [w], {"h100-sxm": 30_000.0}, fin).per_year
    assert py["maintenance_usd"].iloc[1] == pytest.approx(0.0, abs=1e-6)
    assert py["residual_usd"].iloc[1] < 0  # sold at end of life (t = 1 y, in year 1)


def test_leased_cards_serve_and_are_paid_monthly_without_capex():
    from sim.fleet.timeline import Lease

    opt = FleetOption("lease", (), Reliability(0.0, 0.0, 72.0, 0.0), {"h100-sxm": 1.275},
                      leases=(Lease("h100-sxm", 20, 0.0, 1.0, 1500.0),))
    w = Workload("chat", Demand(5.0), 1000, 200, {"h100-sxm": 0.5}, rent_usd_per_card_hour=3.0,
                 prefill_time_fraction=0.3)
    tl = simulate_fleet(opt, [w], [], horizon_years=1)
    assert tl.per_card["h100-sxm"]["owned"].max() == 20
    assert tl.unserved_rps["chat"].max() == 0
    fin = FinanceAssumptions(discount_rate=0.0, colo_usd_per_kw_month=180.0)
    py = price_timeline(tl, opt, [w], {}, fin).per_year
    assert py["capex_usd"].sum() == 0 and py["residual_usd"].sum() == 0
    assert py["rental_usd"].sum() == pytest.approx(20 * 1500.0 * 12)


def test_mix_shift_by_year_scales_demand():
    d = Demand(10.0, share_by_year=(0.2, 0.6))
    h = np.array([0.0, 1.5 * HOURS_PER_YEAR, 3 * HOURS_PER_YEAR])
    np.testing.assert_allclose(d.rps(h), [2.0, 6.0, 6.0])
