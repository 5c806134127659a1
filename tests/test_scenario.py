"""Scenario schema: the flagship loads; bad input fails in one line with file and YAML path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.config.loader import ConfigError
from sim.config.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
FLAGSHIP = REPO / "scenarios" / "flagship.yaml"


def test_flagship_loads_and_resolves(lib):
    scn = load_scenario(FLAGSHIP, lib)
    assert set(scn.options) == {"all-h200", "h200+mi300x", "h200+l40s", "h200+rent"}
    assert scn.site.resolved()["colo_usd_per_kw_month"] == 184.0
    assert scn.training["yearly-frontier"].cards == 4096


def _write(tmp_path, old, new):
    text = FLAGSHIP.read_text()
    assert old in text
    p = tmp_path / "s.yaml"
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize("old,new,needle", [
    ("{card: mi300x, count: 6000", "{card: mi300, count: 6000",
     "options.h200+mi300x.buy[1].card: unknown card 'mi300' (did you mean 'mi300x'?)"),
    ("count: 8192", "count: -5", "options.all-h200.buy[0].count: must be >= 0 (got -5)"),
    ("horizon_years: 5", "horizon_years: 0", "horizon_years: must be >= 0.01 (got 0)"),
    ("model: llama-3.1-70b\n    precision", "model: llama-3.1-71b\n    precision",
     "workloads.chat-70b.model: unknown model 'llama-3.1-71b'"),
    ("    cards: 4096\n", "", "training.yearly-frontier: give `cards`"),
    ("mi300x: {price_usd", "mi300x: {prize_usd",
     "cards.mi300x.prize_usd: cannot be overridden (did you mean 'price_usd'?)"),
    ("discount_rate: 0.08", "discount_rat: 0.08",
     "finance.discount_rat: unknown key (did you mean 'discount_rate'?)"),
    ("{card: mi300x, count: 6000, at: 2026-01", "{card: mi300x, count: 6000, at: 2031-01",
     "options.h200+mi300x.buy[1].at: 2031-01 is after the horizon (2026-01-01 + 5 years)"),
    ("{card: mi300x, count: 6000, at: 2026-01", "{card: mi300x, count: 6000, at: 2025-12",
     "options.h200+mi300x.buy[1].at: 2025-12 is before the scenario's start 2026-01-01"),
    ("    start: 2026-03\n", "    start: 2035-03\n",
     "training.yearly-frontier.start: 2035-03 is after the horizon"),
    ("weekend_factor: 0.75,", "weekend_factor: 0.75, events: {launch: {at: 2032-01-01, days: 7, "
     "multiplier: 2}},", "workloads.chat-70b.traffic.events.launch.at: 2032-01-01 is after the "
     "horizon"),
    ("weekend_factor: 0.75,", "weekend_factor: 0.75, events: {launch: {at: 2026-06-01, days: 7}},",
     "workloads.chat-70b.traffic.events.launch.multiplier: required key is missing"),
    ("count: 8192", "count: 0",
     "options.all-h200: the option has no cards (every buy, lease and reserve count is 0)"),
    ("growth_per_year: 0.8,", "growth_per_year: 0.8, growth_by_quarter: [0.1, 0.2],",
     "workloads.chat-70b.traffic: give `growth_per_year` or `growth_by_quarter`, not both"),
    ("\ncards:\n", "\nengine: {plan: pinned, pinned: {mi300x: trtllm-0.20}}\ncards:\n",
     "engine.pinned.mi300x: engine 'trtllm-0.20' does not run on card 'mi300x'"),
    ("\ncards:\n", "\nengine: {plan: pinned, pinned: {h200-sxm: trtllm-9.0}}\ncards:\n",
     "engine.pinned.h200-sxm: unknown engine 'trtllm-9.0'"),
    ("    policy: elastic", "    policy: elastic\n    engine: {plan: explicit, upgrades: "
     "[{at: 2027-01, engine: trtllm-9.0}]}",
     "options.all-h200.engine.upgrades[0].engine: unknown engine 'trtllm-9.0'"),
    ("    policy: elastic", "    policy: elastic\n    engine: {plan: explicit, upgrades: "
     "[{at: 2032-01, engine: trtllm-1.2}]}",
     "options.all-h200.engine.upgrades[0].at: 2032-01 is after the horizon"),
    ("    policy: elastic", "    policy: elastic\n    engine: {plan: explicit, upgrades: "
     "[{at: 2025-01, engine: trtllm-1.2}]}",
     "options.all-h200.engine.upgrades[0].at: 2025-01 is before the scenario's start"),
    ("\ncards:\n", "\nengine: {plan: follow-releases, upgrade_lag_months: -2}\ncards:\n",
     "engine.upgrade_lag_months"),
    ("\ncards:\n", "\nsoftware_rate_per_year: {rocm: -0.1}\ncards:\n",
     "software_rate_per_year.rocm"),
    ("\ncards:\n", "\nsoftware_rate_per_year: {roc: 0.1}\ncards:\n",
     "software_rate_per_year.roc: unknown stack 'roc'"),
])
def test_bad_scenarios_fail_in_one_line(tmp_path, lib, old, new, needle):
    p = _write(tmp_path, old, new)
    with pytest.raises(ConfigError) as ei:
        load_scenario(p, lib)
    msg = str(ei.value)
    assert msg.startswith(str(p) + ": ") and "\n" not in msg
    assert needle in msg, msg


def test_scenario_json_schema(tmp_path):
    from sim.cli import main

    main(["schema", "--out", str(tmp_path)])
    s = json.loads((tmp_path / "scenario.schema.json").read_text())
    assert "options" in s["properties"] and s["additionalProperties"] is False


def test_every_shipped_scenario_loads(lib):
    paths = sorted((REPO / "scenarios").glob("*.yaml"))
    assert len(paths) >= 5
    for p in paths:
        scn = load_scenario(p, lib)
        assert scn.options and scn.workloads
