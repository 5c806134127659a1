"""The optimiser: a MILP plan, checked by simulating it beside the scenario's own options."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.config.loader import ConfigError
from sim.config.scenario import load_scenario

TINY = Path(__file__).parent / "data" / "tiny_scenario.yaml"


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    from sim.experiments.optimize import optimize

    mp = pytest.MonkeyPatch()
    mp.setenv("FLEETSIM_CACHE", str(tmp_path_factory.mktemp("cache")))
    try:
        scn = load_scenario(TINY)
        yield scn, optimize(scn, base=TINY.parent)
    finally:
        mp.undo()


def test_plan_meets_slos_in_simulation(plan):
    scn, res = plan
    assert res.meets_slo
    assert res.simulated["slo_attainment"] >= 0.99
    assert set(res.comparison.option) == {*scn.options, "optimised"}


def test_plan_is_no_dearer_than_any_given_option_that_meets_slos(plan):
    """Every given option is a feasible plan of the same cards, so the optimum (simulated) must
    not cost more than the cheapest of them that meets the SLOs (within the linearisation)."""
    _, res = plan
    c = res.comparison.set_index("option")
    given = c.drop(index="optimised")
    best = given[given.meets_slo].npv_usd.min()
    assert c.loc["optimised", "npv_usd"] <= best * 1.02


def test_plan_buys_whole_servers_and_its_option_validates(plan):
    scn, res = plan
    from sim.config.paths import with_overrides  # noqa: F401  (the option must be valid YAML data)
    from sim.config.scenario import Scenario

    assert len(res.plan) and (res.plan.cards % 8 == 0).all()
    doc = scn.model_dump(mode="json", exclude_unset=True)
    doc["options"]["optimised"] = res.option
    Scenario.model_validate(doc)  # raises if the plan is not a valid option
    # the training campaign's card is bought: the calendar needs it
    assert "h100-sxm" in set(res.plan.card)


def test_linearised_cost_is_close_to_the_simulated_cost(plan):
    _, res = plan
    assert abs(res.objective_usd - res.simulated["npv_usd"]) / res.simulated["npv_usd"] < 0.25


def test_unknown_candidate_card_is_a_one_line_error():
    from sim.experiments.optimize import optimize

    scn = load_scenario(TINY)
    with pytest.raises(ConfigError, match="unknown card 'h1OO'"):
        optimize(scn, cards=["h1OO"], base=TINY.parent)
