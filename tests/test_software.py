"""Software over time: stack improvement rates, engine plans, hourly capacity (issue 14)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config.engine import ReleaseLevel
from sim.config.scenario import EnginePlan, Upgrade, hours_after_start
from sim.perf.hardware import engines_for
from sim.perf.software import (EngineStep, card_capacity, default_rate, growth, rate_prior,
                               schedule, series)
from sim.units import HOURS_PER_YEAR

from tests.fuzzing import TINY

LAG3 = 3 * HOURS_PER_YEAR / 12


# ---------------------------------------------------------------- the fitted rates

def test_trend_files_are_what_the_fit_writes(lib):
    from sim.calibrate.software_trend import fit_trends

    fitted = {t.stack: t for t in fit_trends(lib)}
    assert set(fitted) == set(lib.ids("software_trend")) and fitted
    for stack, t in fitted.items():
        assert lib.software_trend(stack).model_dump() == t.model_dump(), stack


def test_leave_last_release_out_lands_within_the_stated_interval(lib):
    """The newest release's level, predicted by the line through the older ones, falls within
    the 95% prediction interval the fit states (every stack with enough releases)."""
    checked = 0
    for stack in lib.ids("software_trend"):
        t = lib.software_trend(stack)
        if t.leave_last_out is None:
            assert t.basis == "pooled"
            continue
        c = t.leave_last_out
        assert c.engine == t.releases[-1].engine
        assert abs(c.measured_log_level - c.predicted_log_level) <= c.interval_log, stack
        checked += 1
    assert checked >= 2


def test_release_levels_recover_a_synthetic_history(lib, monkeypatch):
    """Configurations with their own speeds, each release a known step faster: the two-way fit
    gives back the steps and the line the rate, whatever mix of rows each release published."""
    import sim.calibrate.software_trend as tr

    engines = [eid for eid, _ in engines_for("mi300x", lib)][:5]
    true = {e: 0.07 * i for i, e in enumerate(engines)}
    rng = np.random.default_rng(0)
    pts = []
    for k in range(12):
        base = math.log(500 + 300 * k)
        for e in engines:
            if rng.random() < 0.7 or k < 2:  # every release publishes a different subset
                pts.append((e, ("mi300x", "m", "fp8", 1, 100 * (k + 1), 100), math.exp(
                    base + true[e])))
    monkeypatch.setattr(tr, "_points", lambda stack, library: pts)
    levels = tr.release_levels("rocm", lib)
    assert [lv.engine for lv in levels] == engines
    for lv in levels:
        assert lv.log_level == pytest.approx(true[lv.engine], abs=1e-6)


def test_rate_line_recovers_its_slope():
    from sim.calibrate.software_trend import _line

    levels = [ReleaseLevel(engine=f"e{i}", release_date=f"{2024 + i // 12}-{i % 12 + 1:02d}",
                           log_level=0.1 * (i / 12) + (0.01 if i % 2 else -0.01), points=5)
              for i in range(0, 24, 3)]
    slope, _, se, _, _ = _line(levels)
    assert abs(slope - 0.1) < 3 * se and se < 0.05


def test_default_rate_is_the_median_of_the_drawn_prior(lib):
    """The headline run and the Monte Carlo rest on one assumption: the default rate is the
    median of the truncated normal the draws come from, and never negative."""
    from scipy import stats

    for stack in lib.ids("software_trend"):
        p = rate_prior(stack, lib)
        d = stats.truncnorm((p["low"] - p["mean"]) / p["sd"], (p["high"] - p["mean"]) / p["sd"],
                            loc=p["mean"], scale=p["sd"])
        assert default_rate(stack, lib) == pytest.approx(d.median(), abs=1e-6)
        assert default_rate(stack, lib) >= 0


# ---------------------------------------------------------------- plans and schedules

def test_follow_releases_upgrades_at_each_release_plus_lag(lib):
    start, horizon = "2025-03-01", 3 * HOURS_PER_YEAR
    steps = schedule("h200-sxm", EnginePlan(), start, horizon, lib)
    assert steps[0].engine == "trtllm-0.14"  # the newest out three months before the start
    rels = [(eid, e) for eid, e in engines_for("h200-sxm", lib)]
    later = [(eid, hours_after_start(start, e.release_date) + LAG3) for eid, e in rels
             if 0 < hours_after_start(start, e.release_date) + LAG3 < horizon]
    assert [(s.engine, s.from_hour) for s in steps[1:]] == later
    assert steps[0].from_hour == 0 and len(later) >= 3


def test_pinned_and_explicit_plans(lib):
    start, horizon = "2025-01-01", 2 * HOURS_PER_YEAR
    pinned = schedule("h100-sxm", EnginePlan(plan="pinned", pinned={"h100-sxm": "trtllm-0.20"}),
                      start, horizon, lib)
    assert pinned == (EngineStep(0.0, "trtllm-0.20"),)
    plan = EnginePlan(plan="explicit", upgrades=(Upgrade(at="2025-09", engine="trtllm-1.2"),
                                                 Upgrade(at="2025-09", engine="vllm-rocm-0.9.1")))
    steps = schedule("h100-sxm", plan, start, horizon, lib)
    assert [s.engine for s in steps][1:] == ["trtllm-1.2"]  # the ROCm upgrade is not for it
    assert steps[1].from_hour == hours_after_start(start, "2025-09")


def test_pinned_capacity_is_constant_and_follow_releases_steps_up_under_the_roofline(lib):
    start, H = "2024-06-01", int(3 * HOURS_PER_YEAR)
    hours = np.arange(H, dtype=float)
    rels = [eid for eid, _ in engines_for("h200-sxm", lib)]
    rps = {e: 1.0 + 0.1 * i - (0.15 if i == 2 else 0.0) for i, e in enumerate(rels)}
    roof = {e: 1.4 for e in rels}
    pinned = card_capacity("h200-sxm", EnginePlan(plan="pinned"), start, hours, lib, rps, roof,
                           0.3)
    assert np.all(pinned.capacity_rps == pinned.capacity_rps[0])
    follow = card_capacity("h200-sxm", EnginePlan(), start, hours, lib, rps, roof, 0.3)
    cap = follow.capacity_rps
    assert np.all(np.diff(cap) >= -1e-12)  # never a step down (a slower release is skipped)
    assert cap.max() <= follow.release_end_rps * 1.4 + 1e-12
    jumps = set(np.nonzero(np.diff(cap) > 1e-12)[0] + 1)
    releases = {int(math.ceil(s.from_hour)) for s in follow.steps[1:]}
    before = {int(h) for h in jumps if h < follow.projected_from_hour}
    assert before <= releases and before  # before the projection, steps only at upgrades
    assert cap[-1] > follow.release_end_rps  # and growth after the last release


@settings(max_examples=60, deadline=None)
@given(levels=st.lists(st.floats(0.1, 10), min_size=1, max_size=6),
       lag=st.floats(0, 24), rate=st.floats(0, 1), ceiling=st.floats(1, 4))
def test_follow_releases_never_steps_down_nor_passes_the_roofline(lib, levels, lag, rate,
                                                                  ceiling):
    rels = [eid for eid, _ in engines_for("mi300x", lib)]
    rps = {e: levels[i % len(levels)] for i, e in enumerate(rels)}
    hours = np.arange(0, int(2 * HOURS_PER_YEAR), 24, dtype=float)
    sw = card_capacity("mi300x", EnginePlan(upgrade_lag_months=lag), "2025-01", hours, lib,
                       rps, {e: ceiling for e in rels}, rate)
    assert np.all(np.diff(sw.capacity_rps) >= -1e-9)
    assert sw.capacity_rps.max() <= sw.release_end_rps * ceiling * (1 + 1e-12)


def test_growth_refuses_a_negative_rate_and_caps_at_the_ceiling():
    h = np.arange(0, 10 * HOURS_PER_YEAR, 100.0)
    with pytest.raises(ValueError, match=">= 0"):
        growth(h, 0.0, -0.1, 2.0)
    g = growth(h, 1000.0, 0.5, 2.0)
    assert g[0] == 1.0 and g.max() == pytest.approx(2.0)
    assert growth(h, None, 0.5, 2.0).tolist() == [1.0] * len(h)


def test_series_keeps_the_faster_release_only_when_following():
    hours = np.arange(10.0)
    steps = (EngineStep(0.0, "a"), EngineStep(5.0, "b"))
    follow, used = series(hours, steps, {"a": 2.0, "b": 1.0}, EnginePlan())
    assert follow.tolist() == [2.0] * 10 and used == ["a", "a"]
    explicit, used = series(hours, steps, {"a": 2.0, "b": 1.0}, EnginePlan(plan="explicit"))
    assert explicit.tolist() == [2.0] * 5 + [1.0] * 5 and used == ["a", "b"]


# ---------------------------------------------------------------- through a run

def _tiny(tmp_path, edit: dict, name: str = "s.yaml"):
    doc = yaml.safe_load(TINY.read_text())
    doc.pop("training")  # capacity over time is what is tested here
    doc.pop("engine", None)  # the default plan (the tiny scenario pins its engines)
    doc.update(edit)
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


@pytest.fixture(scope="module")
def runs(tmp_path_factory, lib):
    from sim.stages import run

    t = tmp_path_factory.mktemp("sw")
    base = {"start": "2025-01-01", "horizon_years": 2}
    out = {}
    for key, extra in (("pinned", {"engine": {"plan": "pinned"}}),
                       ("follow", {}),
                       ("fast", {"software_rate_per_year": {"cuda": 0.6}})):
        out[key] = run(_tiny(t, {**base, **extra}, f"{key}.yaml"), lib, detail=False)
    return out


def test_a_pinned_run_keeps_its_capacity_and_a_following_one_upgrades(runs, lib):
    p, f = runs["pinned"], runs["follow"]
    cols = [c for c in p.per_year if c.startswith("capacity_req_per_s_per_card.")]
    assert cols == sorted(cols) and "capacity_req_per_s_per_card.h100-sxm" in cols
    for c in cols:
        for _, g in p.per_year.groupby("option"):
            vals = g[c].dropna().to_numpy()  # NaN: the option has no such card
            assert len(vals) == 0 or np.all(vals == vals[0]), c
    sw = f.software[(f.software.card == "h100-sxm") & (f.software.role == "own")].iloc[0]
    hours = [hours_after_start("2025-01-01", lib.engine(e.split(" from hour ")[0])
                               .release_date) + LAG3
             for e in sw.engines.split(" -> ")[1:]]
    assert list(sw.upgrade_hours) == pytest.approx(hours)
    assert sw.capacity_end_rps >= sw.capacity_start_rps
    assert sw.capacity_end_rps <= sw.capacity_start_rps * 10  # sanity, not a tolerance
    assert sw.capacity_end_rps <= (f.trajectory[f.trajectory.card == "h100-sxm"]
                                   .roofline_rps.iloc[0]) + 1e-9


def test_a_faster_stack_serves_more_for_less(runs):
    f, fast = runs["follow"], runs["fast"]
    a = f.software.set_index(["option", "card", "role"]).capacity_end_rps
    b = fast.software.set_index(["option", "card", "role"]).capacity_end_rps
    assert (b >= a - 1e-12).all() and (b > a).any()
    for o in f.summary["options"]:
        assert fast.summary["options"][o]["npv_usd"] <= f.summary["options"][o]["npv_usd"] + 1e-6
        assert fast.summary["options"][o]["software_gain"] >= \
            f.summary["options"][o]["software_gain"] - 1e-12


def test_porting_is_dated_at_the_stacks_adoption(lib):
    from sim.config.scenario import load_scenario
    from sim.stages import adoption_hour

    scn = load_scenario("scenarios/flagship.yaml", lib)
    assert adoption_hour(scn, lib, "h200+mi300x") == 0.0
    doc = scn.model_dump(mode="json", exclude_unset=True)
    doc["options"]["h200+mi300x"]["buy"][1]["at"] = "2027-01"
    from sim.config.loader import validate
    from sim.config.scenario import Scenario

    later = validate(Scenario, doc, "t")
    assert adoption_hour(later, lib, "h200+mi300x") == hours_after_start("2026-01-01", "2027-01")
    assert adoption_hour(later, lib, "all-h200") == 0.0  # CUDA only: its first order


def _challenger(tmp_path):
    """Tiny, three years, demand outgrowing both fleets: an H100 fleet against an MI300X fleet
    that pays a port (1.4 engineer-years); the faster ROCm improves, the less the MI300X fleet
    rents or leaves unserved."""
    doc = yaml.safe_load(TINY.read_text())
    doc.pop("training")
    doc.pop("engine", None)  # follow releases (the default)
    doc["horizon_years"] = 3
    doc["workloads"]["chat-8b"]["traffic"].update(peak_rps=300.0, growth_per_year=0.8)
    doc["cards"]["mi300x"] = {"price_usd": 13000, "source": "reference-data A3 (test)"}
    doc["options"] = {
        "h100": {"buy": [{"card": "h100-sxm", "count": 16, "at": "2026-01",
                          "price_usd": 30000}]},
        "mi300x": {"buy": [{"card": "mi300x", "count": 16, "at": "2026-01"}],
                   "software": {"porting_engineer_years": 1.4}}}
    p = tmp_path / "challenger.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return p


def test_flip_finds_the_improvement_rate_at_which_two_options_cost_the_same(tmp_path, lib):
    from sim.config.paths import with_overrides
    from sim.config.scenario import load_scenario
    from sim.experiments.analyses import flip
    from sim.stages import run

    p = _challenger(tmp_path)
    scn = load_scenario(p, lib)
    path = "software_rate_per_year.rocm"
    res = flip(scn, path, (0.0, 1.0), ("mi300x", "h100"), base=tmp_path, library=lib)
    assert res.value is not None and 0 < res.value < 1, res.statement()
    assert res.below == "h100" and res.above == "mi300x"

    def gap(x):
        s = run(with_overrides(scn, {path: x}, lib), lib, base=tmp_path, detail=False).summary
        return s["options"]["mi300x"]["npv_usd"] - s["options"]["h100"]["npv_usd"]

    assert gap(res.value - 0.03) > 0 > gap(res.value + 0.03)
    none = flip(scn, path, (res.value + 0.1, 1.0), ("mi300x", "h100"), base=tmp_path,
                library=lib)
    assert none.value is None and "no flip in range" in none.statement()
