"""The run's named stages (sim.stages): small functions, a frozen Result of typed records that
summary.json, the report and the experiments read."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_scenario.yaml"


def test_no_function_in_the_run_layer_is_over_80_lines():
    long = []
    for py in sorted((REPO / "sim" / "stages").glob("*.py")):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{py.name}:{node.name} ({n} lines)")
    assert not long, long


def test_the_run_layer_keeps_no_module_level_cache():
    """Module-level names of sim.stages are constants, functions and classes: no dict or list
    a run could fill (the in-process cache is a `RunCache` passed in)."""
    for py in sorted((REPO / "sim" / "stages").glob("*.py")):
        for node in ast.parse(py.read_text()).body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None and \
                    "__all__" not in ast.unparse(node):
                assert not isinstance(node.value, (ast.Dict, ast.List, ast.Set, ast.Call)), (
                    py.name, ast.unparse(node))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("stages-cache")


@pytest.fixture(scope="module")
def result(cache_dir):
    from sim.stages import run

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEETSIM_CACHE", str(cache_dir))
        return run(TINY)


def test_result_is_frozen_and_its_summary_comes_from_the_records(result):
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.options = {}
    s = result.summary
    assert s["winner"] == result.decision.winner and s["slo_tolerance"] == 0.99
    for name, o in result.options.items():
        assert s["options"][name]["npv_usd"] == o.npv_usd
        assert o.meets_slo == (o.slo_attainment >= o.slo_tolerance)
        assert o.serving_cards  # every tiny option serves on some card
        for c in o.campaigns:
            assert c.campaign == f"{c.training}#{c.run}" and c.card == "h100-sxm"
    # its serve_on, plus its training card under the (default) elastic policy
    assert result.options["h100+l40s"].serving_cards == ("h100-sxm", "l40s")


def test_the_report_reads_the_tolerance_as_a_number_not_from_the_rule_text(result):
    """A decision at another tolerance reaches the HTML headline as that number."""
    from sim.report.html import _context
    from sim.stages import decide

    d = decide(result.options, 0.5)
    ctx = _context(dataclasses.replace(result, decision=d))
    assert ctx["headline"]["tolerance"] == "50%" and ">= 50%" in ctx["headline"]["rule"]


def test_a_shared_cache_gives_the_same_answer_as_a_fresh_one(result, cache_dir, monkeypatch):
    from sim.stages import RunCache, run

    monkeypatch.setenv("FLEETSIM_CACHE", str(cache_dir))
    cache = RunCache()
    for _ in range(2):
        again = run(TINY, cache=cache, detail=False)
        assert again.summary == result.summary
        assert again.per_year.equals(result.per_year)
