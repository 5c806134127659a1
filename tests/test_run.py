"""End to end: a tiny scenario through every layer, written atomically and deterministically."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_scenario.yaml"
PER_YEAR_COLS = ["option", "year", "capex_usd", "energy_usd", "colo_usd", "maintenance_usd",
                 "software_usd", "rental_usd", "unserved_penalty_usd", "total_usd",
                 "output_tokens_served", "input_tokens_served", "slo_attainment", "utilization"]


def _golden():
    """benchmarks/golden.py: the recorded hashes of every shipped scenario's outputs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_golden", REPO / "benchmarks" / "golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cli(*args, cache):
    env = {**os.environ, "COLUMNS": "200", "FLEETSIM_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    a = _cli("run", str(TINY), "--out", str(d / "a"), cache=d / "cache")
    b = _cli("run", str(TINY), "--out", str(d / "b"), cache=d / "cache2")  # cold cache again
    return d, a, b


def test_run_writes_everything(runs):
    d, a, _ = runs
    assert a.returncode == 0, a.stderr
    out = d / "a"
    py = pd.read_parquet(out / "results" / "per_year.parquet")
    assert list(py.columns[: len(PER_YEAR_COLS)]) == PER_YEAR_COLS or set(PER_YEAR_COLS) <= set(
        py.columns)
    summary = json.loads((out / "summary.json").read_text())
    for opt in summary["options"].values():
        for k in ("npv_usd", "total_cost_usd", "usd_per_m_tokens", "usd_per_m_input_tokens",
                  "usd_per_m_output_tokens", "joules_per_token", "slo_attainment", "utilization"):
            assert k in opt
    assert summary["winner"] in summary["options"]
    assert (out / "report.md").read_text().startswith("# Tiny test scenario")
    assert (out / "results" / "per_hour.parquet").is_file()
    assert not [p for p in d.iterdir() if p.name.startswith(".a.")]  # no temp folder left


def test_same_seed_gives_identical_bytes(runs):
    d, a, b = runs
    assert b.returncode == 0, b.stderr
    for rel in ("summary.json", "results/per_year.parquet", "results/per_hour.parquet"):
        assert (d / "a" / rel).read_bytes() == (d / "b" / rel).read_bytes(), rel


def test_tiny_scenario_matches_its_golden_hashes(runs):
    """summary.json, the Parquet files, report.md and the resolved scenario byte for byte as
    recorded in benchmarks/golden.json (the message says how to record an intended change)."""
    d, a, _ = runs
    assert a.returncode == 0, a.stderr
    assert (why := _golden().mismatch("tiny", d / "a")) is None, why


def test_refuses_to_overwrite_and_bad_input_is_one_line(runs, tmp_path):
    d, _, _ = runs
    r = _cli("run", str(TINY), "--out", str(d / "a"), cache=d / "cache")
    assert r.returncode == 2 and "already exists" in r.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("card: l40s, count: 8", "card: l40, count: -8"))
    r = _cli("run", str(bad), "--out", str(tmp_path / "o"), cache=d / "cache")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "options.h100+l40s.buy[1].count: must be >= 0" in r.stderr
    assert not (tmp_path / "o").exists()


def test_python_api_mirrors_the_cli(tmp_path, monkeypatch):
    import sim

    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path / "c"))
    res = sim.run(TINY)
    assert res.summary["winner"] in res.summary["options"]
    assert set(res.per_year["option"]) == set(res.summary["options"])


def test_resolved_scenario_has_defaults_and_sources(runs):
    import yaml

    d, _, _ = runs
    doc = yaml.safe_load((d / "a" / "scenario.resolved.yaml").read_text())
    assert doc["site"]["colo_usd_per_kw_month"] == 184.0
    assert doc["finance"]["discount_rate"] == 0.08
    assert "finance.discount_rate" in doc["sources"] and "E3" in doc["sources"]["site"]
    assert doc["sources"]["cards.l40s"].startswith("override:")


def test_traffic_events_and_quarterly_growth_reach_the_timeline(tmp_path, run_cache):
    """A launch spike written in YAML multiplies the hourly demand in its window only; a
    quarterly growth table equal to the annual rate gives the annual run's demand."""
    import numpy as np

    import sim

    text = TINY.read_text()
    base = sim.run(TINY, cache=run_cache).per_hour
    spiked = tmp_path / "spike.yaml"
    spiked.write_text(text.replace("growth_per_year: 0.5,", "growth_per_year: 0.5, events: "
                                   "{launch: {at: 2026-03-02, days: 7, multiplier: 2.5}},"))
    sp = sim.run(spiked, cache=run_cache).per_hour
    col = "chat-8b.demand_rps"
    for o in base.option.unique():
        a = base[base.option == o].set_index("hour")[col]
        b = sp[sp.option == o].set_index("hour")[col]
        h = a.index.to_numpy()
        start = (np.datetime64("2026-03-02") - np.datetime64("2026-01-01")).astype(int) * 24
        inside = (h >= start) & (h < start + 7 * 24)
        np.testing.assert_allclose((b / a).to_numpy(), np.where(inside, 2.5, 1.0), rtol=1e-9)
    quarterly = tmp_path / "q.yaml"
    q = (1.5 ** 0.25) - 1
    quarterly.write_text(text.replace("growth_per_year: 0.5,", f"growth_by_quarter: [{q!r}],"))
    qd = sim.run(quarterly, cache=run_cache).per_hour
    np.testing.assert_allclose(qd[col].to_numpy(), base[col].to_numpy(), rtol=1e-9)


def test_finance_section_sets_price_decline_residual_curve_and_tax(tmp_path):
    import math

    import sim
    from sim.config.loader import ConfigError

    text = TINY.read_text().replace("count: 16, at: 2026-01,", "count: 16, at: 2026-07-01,")

    def run_with(finance: str):
        f = tmp_path / "f.yaml"
        f.write_text(text.replace("site: {preset: us-colo}",
                                  f"site: {{preset: us-colo}}\nfinance: {finance}"))
        res = sim.run(f)
        py = res.per_year[res.per_year.option == "h100"]
        return res.summary["options"]["h100"], py

    flat, py_flat = run_with("{discount_rate: 0.08}")
    cheaper, py_cheap = run_with("{discount_rate: 0.08, price_decline_per_year: 0.1}")
    t_years = 181 * 24 / 8760  # 2026-07-01 is 181 days after the start
    assert py_cheap.capex_usd.sum() / py_flat.capex_usd.sum() == pytest.approx(
        0.9 ** t_years, rel=1e-12)
    assert py_flat.residual_usd.sum() < 0  # the default lender curve resells the cards
    _, py_zero = run_with("{residual: {age_years: [0], fraction: [0], source: 'scrap (test)'}}")
    assert py_zero.residual_usd.sum() == 0
    untaxed, _ = run_with("{tax_rate: 0}")
    assert untaxed["after_tax_npv_usd"] == pytest.approx(untaxed["npv_usd"], rel=1e-12)
    assert flat["after_tax_npv_usd"] < flat["npv_usd"]  # deductions and the shield save tax
    assert math.isfinite(flat["after_tax_npv_usd"])
    f = tmp_path / "bad.yaml"
    f.write_text(text.replace("site: {preset: us-colo}", "site: {preset: us-colo}\nfinance: "
                              "{residual: {age_years: [1, 2], fraction: [0.5, 0.3], "
                              "source: 'x (test)'}}"))
    with pytest.raises(ConfigError, match=r"bad.yaml: finance.residual: age_years must start "
                                          r"at 0 \(got 1\)$"):
        sim.load_scenario(f)


@pytest.mark.parametrize("scenario", sorted((REPO / "scenarios").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_scenario_runs_from_the_cli(tmp_path, scenario):
    """`fleetsim run` end to end on each shipped scenario (its `analysis:` section is covered by
    the experiments tests and `make demo`): the files, a winner among the options or none said
    plainly, finite costs, and the report naming the winner."""
    import math

    import yaml

    out = tmp_path / "out"
    env = {**os.environ, "COLUMNS": "200"}
    p = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(scenario), "--out", str(out),
                        "--skip-analysis"], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    summary = json.loads((out / "summary.json").read_text())
    names = set(yaml.safe_load(scenario.read_text())["options"])
    assert set(summary["options"]) == names
    assert summary["winner"] is None or summary["winner"] in names
    for v in summary["options"].values():
        assert math.isfinite(v["npv_usd"]) and math.isfinite(v["after_tax_npv_usd"])
        assert 0.0 <= v["slo_attainment"] <= 1.0 + 1e-12
    py = pd.read_parquet(out / "results" / "per_year.parquet")
    assert set(PER_YEAR_COLS) <= set(py.columns) and set(py.option) == names
    html = (out / "report.html").read_text()
    assert (summary["winner"] or "no option meets") in html
    assert f"winner: {summary['winner'] or 'none'}" in p.stdout
    # byte for byte as recorded (benchmarks/golden.py; its message says how to record a change)
    assert (why := _golden().mismatch(scenario.stem, out)) is None, why


def test_report_states_each_campaigns_layout_mfu_interruptions_and_time_to_train(runs):
    """Issue 15: each training campaign's layout, MFU, goodput (interruptions) and time to train
    (with and without failures) are in summary.json and in the HTML report, as the run
    computed them."""
    from sim.report.html import pct

    d, a, _ = runs
    assert a.returncode == 0, a.stderr
    summary = json.loads((d / "a" / "summary.json").read_text())
    html = (d / "a" / "report.html").read_text()
    assert summary["training"], "the tiny scenario trains"
    for name, t in summary["training"].items():
        assert 0 < t["mfu"] < 1 and 0 < t["goodput"] <= 1
        assert t["time_to_train_days"] >= t["ideal_days"] > 0
        for text in (name, t["layout"], pct(t["mfu"]), pct(t["goodput"]),
                     f"{t['time_to_train_days']:,.1f}", f"{t['ideal_days']:,.1f}"):
            assert text in html, text
