"""Fleet timeline: conservation, determinism, campaigns, and more cards never serve less."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sim.fleet.timeline import (HOURS_PER_YEAR, Campaign, Demand, FleetError, FleetOption,
                                Purchase, Reliability, Workload, simulate_fleet)

CHAT = Workload("chat", Demand(base_rps=40.0, growth_per_year=0.8, diurnal_amplitude=0.4,
                               weekend_factor=0.7, events=((2000.0, 48.0, 2.0),)),
                input_tokens=1000, output_tokens=200,
                capacity_rps_per_card={"h100-sxm": 0.5, "mi300x": 0.45},
                rent_card="h100-sxm", rent_cap_cards=40)


def option(h100=120, mi300x=0, lead_h=0.0):
    buys = [Purchase("h100-sxm", h100, 0.0, lead_h)]
    if mi300x:
        buys.append(Purchase("mi300x", mi300x, 4000.0))
    return FleetOption("opt", tuple(buys))


TRAIN = [Campaign("yearly", "h100-sxm", cards=64, card_hours=64 * 24 * 20.0,
                  earliest_hour=1000.0)]


def test_card_hours_and_demand_are_conserved():
    tl = simulate_fleet(option(mi300x=40), [CHAT], TRAIN, horizon_years=2, seed=3)
    for card, d in tl.per_card.items():
        total = d["training"] + d["serving"] + d["idle"] + d["unavailable"] + d["unpowered"]
        np.testing.assert_allclose(total, d["owned"], rtol=0, atol=1e-9)
        assert (d["available"] >= 0).all() and (d["training"] <= d["available"] + 1e-9).all()
    dem = tl.demand_rps["chat"]
    np.testing.assert_allclose(tl.served_rps["chat"] + tl.rented_rps["chat"]
                               + tl.unserved_rps["chat"], dem, rtol=1e-12, atol=1e-9)
    assert (tl.unserved_rps["chat"] >= -1e-9).all()
    df = tl.per_hour()
    assert len(df) == 2 * HOURS_PER_YEAR and "h100-sxm.training" in df


def test_deterministic_by_seed():
    a = simulate_fleet(option(), [CHAT], TRAIN, 1, seed=1)
    b = simulate_fleet(option(), [CHAT], TRAIN, 1, seed=1)
    c = simulate_fleet(option(), [CHAT], TRAIN, 1, seed=2)
    assert np.array_equal(a.per_card["h100-sxm"]["failed"], b.per_card["h100-sxm"]["failed"])
    assert not np.array_equal(a.per_card["h100-sxm"]["failed"], c.per_card["h100-sxm"]["failed"])


def test_campaign_duration_and_lead_time():
    no_fail = FleetOption("o", (Purchase("h100-sxm", 100, 0.0, 500.0, burn_in_hours=0.0),),
                          Reliability(0.0, 0.0, 72.0, 0.0))
    tl = simulate_fleet(no_fail, [CHAT], [Campaign("t", "h100-sxm", 50, 50 * 100.0, 0.0,
                                                   ettr=1.0)], 1)
    run = tl.campaigns[0]
    # cards arrive at hour 500; 5,000 card-hours on 50 cards at ETTR 1 take exactly 100 hours
    assert run["start_hour"] == 500 and run["end_hour"] == 600 and run["completed"]
    assert tl.per_card["h100-sxm"]["owned"][499] == 0


def test_campaign_that_cannot_finish_is_reported():
    tl = simulate_fleet(option(), [CHAT], [Campaign("huge", "h100-sxm", 100, 1e9, 0.0)], 1)
    assert tl.campaigns[0]["completed"] is False and "horizon" in tl.campaigns[0]["reason"]


@pytest.mark.parametrize("bad,needle", [
    (dict(h100=-1), "count: must be >= 0"),
])
def test_bad_input(bad, needle):
    with pytest.raises(FleetError, match=needle):
        simulate_fleet(option(**bad), [CHAT], [], 1)
    with pytest.raises(FleetError, match="can never fit"):
        simulate_fleet(option(h100=10), [CHAT], [Campaign("x", "h100-sxm", 64, 10.0)], 1)
    with pytest.raises(FleetError, match="life_years"):
        simulate_fleet(FleetOption("o", (Purchase("h100-sxm", 1, 0.0, life_years=0.0),)),
                       [CHAT], [], 1)


@given(n=st.integers(20, 200), extra=st.integers(1, 80), seed=st.integers(0, 5))
def test_more_cards_never_increase_unserved_demand(n, extra, seed):
    a = simulate_fleet(option(h100=n), [CHAT], TRAIN if n >= 64 else [], 1, seed=seed)
    b = simulate_fleet(option(h100=n + extra), [CHAT], TRAIN if n >= 64 else [], 1, seed=seed)
    assert (b.unserved_rps["chat"] <= a.unserved_rps["chat"] + 1e-9).all()


def test_poisson_inverse_cdf_matches_scipy():
    from scipy.stats import poisson

    from sim.fleet.timeline import poisson_inverse_cdf

    rng = np.random.default_rng(1)
    u = rng.random(20000)
    mu = rng.random(20000) * rng.choice([1e-4, 0.05, 2.0, 40.0], 20000)
    assert np.array_equal(poisson_inverse_cdf(u, mu), poisson.ppf(u, mu))


def test_site_power_cap_leaves_cards_unpowered_and_conserves():
    opt = FleetOption("capped", (Purchase("h100-sxm", 200, 0.0),), Reliability(),
                      {"h100-sxm": 1.275}, site_power_cap_kw=100 * 1.275)
    tl = simulate_fleet(opt, [CHAT], [], 1, seed=2)
    d = tl.per_card["h100-sxm"]
    assert d["unpowered"].max() == 100
    np.testing.assert_allclose(d["training"] + d["serving"] + d["idle"] + d["unavailable"]
                               + d["unpowered"], d["owned"], atol=1e-9)
    assert (d["provisioned_kw"] <= 100 * 1.275 + 1e-9).all()


def test_reserved_capacity_serves_during_its_term():
    from sim.fleet.timeline import Reserved

    opt = FleetOption("rsv", (Purchase("h100-sxm", 10, 0.0, burn_in_hours=0.0),),
                      Reliability(0.0, 0.0, 72.0, 0.0), {"h100-sxm": 1.275},
                      reserved=(Reserved("h100-sxm", 30, 1000.0, 0.5, 2.0),))
    tl = simulate_fleet(opt, [CHAT], [], 1)
    d = tl.per_card["h100-sxm"]
    term = (tl.hours >= 1000) & (tl.hours < 1000 + 0.5 * HOURS_PER_YEAR)
    assert (d["reserved"][term] == 30).all() and (d["reserved"][~term] == 0).all()
    np.testing.assert_allclose(d["reserved_serving"] + d["reserved_idle"], d["reserved"])
    assert tl.unserved_rps["chat"][term].mean() < tl.unserved_rps["chat"][~term].mean()


def test_lead_time_distribution_is_seeded_and_bounded():
    from sim.fleet.timeline import LeadTime

    p = Purchase("h100-sxm", 50, 0.0, lead_time=LeadTime(8, 12), burn_in_hours=0.0)
    opt = FleetOption("lt", (p,))
    first = [int(np.argmax(simulate_fleet(opt, [CHAT], [], 1, seed=s).per_card["h100-sxm"]
                           ["owned"] > 0)) for s in (0, 0, 1)]
    assert first[0] == first[1] and 8 * 168 <= first[0] <= 12 * 168 + 1
    assert first[0] != first[2]


def test_deadline_derives_cards_and_reports_whether_it_was_met():
    no_fail = FleetOption("o", (Purchase("h100-sxm", 200, 0.0, burn_in_hours=0.0),),
                          Reliability(0.0, 0.0, 72.0, 0.0))
    c = Campaign("dl", "h100-sxm", None, card_hours=100 * 240.0, earliest_hour=0.0, ettr=1.0,
                 deadline_hour=240.0)
    tl = simulate_fleet(no_fail, [CHAT], [c], 1)
    r = tl.campaigns[0]
    assert r["cards"] == 100 and r["met_deadline"] is True and r["end_hour"] == 240
    late = Campaign("late", "h100-sxm", 10, card_hours=100 * 240.0, deadline_hour=240.0)
    r2 = simulate_fleet(no_fail, [CHAT], [late], 1).campaigns[0]
    assert r2["completed"] and r2["met_deadline"] is False


def test_per_year_frame_adds_up():
    tl = simulate_fleet(option(mi300x=40), [CHAT], TRAIN, horizon_years=2, seed=3)
    py = tl.per_year()
    h = py[py.card == "h100-sxm"]
    assert len(h) == 2
    parts = h[["training_card_hours", "serving_card_hours", "idle_card_hours",
               "unavailable_card_hours", "unpowered_card_hours"]].sum(axis=1)
    np.testing.assert_allclose(parts, h["owned_card_hours"], rtol=1e-9)
    total = h["chat.served_requests"] + h["chat.rented_requests"] + h["chat.unserved_requests"]
    np.testing.assert_allclose(total, h["chat.demand_requests"], rtol=1e-9)


def test_quarterly_growth_matches_annual_growth_when_the_rates_agree():
    g = 0.8
    q = (1 + g) ** 0.25 - 1
    hours = np.arange(0, 5 * HOURS_PER_YEAR, 37.0)
    annual = Demand(10.0, growth_per_year=g).growth_factor(hours)
    quarterly = Demand(10.0, growth_by_quarter=(q,) * 3).growth_factor(hours)  # last holds
    np.testing.assert_allclose(quarterly, annual, rtol=1e-12)


def test_quarterly_growth_by_hand():
    qh = HOURS_PER_YEAR / 4
    d = Demand(10.0, growth_by_quarter=(0.1, 0.5, 0.0))
    hours = np.array([0.0, qh, 1.5 * qh, 2 * qh, 3 * qh, 4.5 * qh])
    want = [1.0, 1.1, 1.1 * 1.5 ** 0.5, 1.65, 1.65, 1.65]  # 0% holds after the third quarter
    np.testing.assert_allclose(d.growth_factor(hours), want, rtol=1e-12)
    np.testing.assert_allclose(d.rps(hours[:1]), [10.0])


def test_events_multiply_only_inside_their_window():
    plain = Demand(10.0, diurnal_amplitude=0.3)
    ev = Demand(10.0, diurnal_amplitude=0.3, events=((100.0, 48.0, 3.0), (120.0, 10.0, 0.5)))
    h = np.arange(0.0, 400.0)
    ratio = ev.rps(h) / plain.rps(h)
    want = np.where((h >= 100) & (h < 148), 3.0, 1.0) * np.where((h >= 120) & (h < 130), 0.5, 1)
    np.testing.assert_allclose(ratio, want, rtol=1e-12)


def test_adding_a_card_type_or_a_lease_leaves_other_draws_unchanged():
    from sim.fleet.timeline import Lease, LeadTime

    rel = Reliability(failures_per_card_year=2.0, infant_mortality=0.1, repair_hours=48.0)
    h100 = Purchase("h100-sxm", 64, 0.0, 0.0, lead_time=LeadTime(2.0, 10.0))
    base = FleetOption("a", (h100,), rel)
    more = FleetOption("b", (h100, Purchase("mi300x", 32, 500.0, 0.0,
                                            lead_time=LeadTime(1.0, 3.0))), rel,
                       leases=(Lease("mi300x", 16, 100.0, 2.0, 1500.0),))
    wl = [Workload("chat", Demand(base_rps=10.0), 100, 100,
                   {"h100-sxm": 1.0, "mi300x": 1.0}, rent_cap_cards=0)]
    a = simulate_fleet(base, wl, [], 1.0, seed=5)
    b = simulate_fleet(more, wl, [], 1.0, seed=5)
    assert a.delivery_hours[0] == b.delivery_hours[0]
    for k in ("arrived", "failed", "in_repair"):
        np.testing.assert_array_equal(a.per_card["h100-sxm"][k], b.per_card["h100-sxm"][k])


def test_retiring_cards_take_their_share_of_the_cards_in_repair():
    """Cards in repair at hour t are the failures of the last `repair_hours` hours, each
    discounted by the share of the type's cards that retired since (cards retire at random
    among their type), checked against that definition summed hour by hour."""
    rel = Reliability(failures_per_card_year=40.0, infant_mortality=0.0, repair_hours=120.0)
    opt = FleetOption("r", (Purchase("h100-sxm", 300, 0.0, 0.0, life_years=0.1),
                            Purchase("h100-sxm", 100, 0.0, 0.0, life_years=20.0),
                            Purchase("h100-sxm", 200, 1200.0, 0.0, life_years=0.05)), rel)
    wl = [Workload("chat", Demand(base_rps=10.0), 100, 100, {"h100-sxm": 1.0},
                   rent_cap_cards=0)]
    tl = simulate_fleet(opt, wl, [], 0.25, seed=3)
    d = tl.per_card["h100-sxm"]
    failed, owned, retired = d["failed"], d["owned"], d["retired"]
    assert retired.sum() == 500 and failed.sum() > 0
    keep = np.ones(len(owned))
    keep[retired > 0] = owned[retired > 0] / (owned + retired)[retired > 0]
    want = np.zeros(len(failed))
    for t in range(len(failed)):
        for s in range(max(t - 119, 0), t + 1):
            want[t] += failed[s] * np.prod(keep[s + 1:t + 1])
    np.testing.assert_allclose(d["in_repair"], np.minimum(want, owned), rtol=1e-9, atol=1e-9)
    e = int(np.flatnonzero(retired)[0])  # the first retirement: 300 of 400 cards
    assert d["in_repair"][e] < d["in_repair"][e - 1] * 0.5
