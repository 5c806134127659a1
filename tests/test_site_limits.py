"""Site limits: liquid cooling, kW per rack, power-capped cards (cost and throughput)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.paths import with_overrides
from sim.config.scenario import load_scenario

TINY = Path(__file__).parent / "data" / "tiny_scenario.yaml"


@pytest.fixture(scope="module")
def scn():
    return load_scenario(TINY)


def test_liquid_cooled_card_needs_a_liquid_cooled_site(scn):
    lib = Library.default()
    s = with_overrides(scn, {"options.h100+l40s.buy[1].card": "mi355x"}, lib)
    with pytest.raises(ConfigError, match=r"options\.h100\+l40s\.buy\[1\]\.card: mi355x needs "
                                          "liquid cooling"):
        with_overrides(s, {"site.liquid_cooling": False}, lib)


def test_server_must_fit_the_rack_unless_capped(scn):
    lib = Library.default()
    # an 8 x H100 server draws 8 x 0.7 kW x 1.82 = 10.2 kW (DGX H100, reference-data E4)
    with_overrides(scn, {"site.rack_kw": 10.3}, lib)
    with pytest.raises(ConfigError, match=r"10\.2 kW, more than site\.rack_kw \(10 kW\)"):
        with_overrides(scn, {"site.rack_kw": 10.0}, lib)
    with_overrides(scn, {"site.rack_kw": 10.0, "cards.h100-sxm.power_cap_w": 600}, lib)


def test_power_cap_outside_the_cards_range_is_refused(scn):
    with pytest.raises(ConfigError, match="power_cap_w: 900 W is outside"):
        with_overrides(scn, {"cards.h100-sxm.power_cap_w": 900}, Library.default())


def test_power_cap_lowers_throughput_and_energy(scn, tmp_path, monkeypatch, run_cache):
    from sim.stages import run

    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path))
    lib = Library.default()
    base = run(scn, lib, base=TINY.parent, detail=False, cache=run_cache)
    capped = run(with_overrides(scn, {"cards.h100-sxm.power_cap_w": 500}, lib), lib,
                 base=TINY.parent, detail=False, cache=run_cache)
    b = base.capacity.set_index("card")
    c = capped.capacity.set_index("card")
    share = float(b.loc["h100-sxm", "prefill_time_fraction"])
    expect = 1 / ((1 - share) + share / (500 / 700) ** (1 / 3))
    assert c.loc["h100-sxm", "rps_per_card"] == pytest.approx(
        b.loc["h100-sxm", "rps_per_card"] * expect, rel=1e-12)
    assert c.loc["l40s", "rps_per_card"] == b.loc["l40s", "rps_per_card"]
    e_base = base.per_year[base.per_year.option == "h100"].energy_usd.sum()
    e_cap = capped.per_year[capped.per_year.option == "h100"].energy_usd.sum()
    assert e_cap < e_base


def test_power_cap_powers_cards_in_delivery_order():
    """Cards delivered first take the site's power; later ones wait until power frees up."""
    import numpy as np

    from sim.fleet.timeline import FleetOption, Purchase, Reliability, simulate_fleet

    from tests.test_fleet import CHAT

    kw = {"h100-sxm": 1.275, "mi300x": 1.2 * 750 / 700 * 1.275}
    # 60 H100s first, then 60 MI300Xs 1,000 hours later; power for 100 H100s
    early = Purchase("h100-sxm", 60, 0.0, 0.0, 0.0, life_years=0.5)
    late = Purchase("mi300x", 60, 1000.0, 0.0, 0.0)
    opt = FleetOption("capped", (late, early), Reliability(), kw, site_power_cap_kw=100 * 1.275)
    tl = simulate_fleet(opt, [CHAT], [], 1, seed=1)
    h100, mi = tl.per_card["h100-sxm"], tl.per_card["mi300x"]
    assert h100["unpowered"].max() == 0  # delivered first: all 60 powered
    room = 100 * 1.275 - 60 * 1.275
    assert mi["unpowered"][2000] == 60 - np.floor(room / kw["mi300x"] + 1e-9)
    retire = int(np.ceil(0.5 * 8760))
    assert mi["unpowered"][retire + 10] == 0  # the H100s retired: their power went to the MI300Xs
