"""Any library value can be overridden in a scenario (`cards:` / `models:`), with its source."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.paths import scenario_library, with_overrides
from sim.config.scenario import load_scenario

TINY = Path(__file__).parent / "data" / "tiny_scenario.yaml"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scn():
    return load_scenario(TINY)


def test_library_record_override_reaches_the_performance_model(scn, tmp_path, monkeypatch,
                                                               run_cache):
    from sim.stages import run

    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path))
    lib = Library.default()
    bw = lib.card("l40s").memory.bandwidth_tbps
    base = run(scn, lib, base=TINY.parent, detail=False, cache=run_cache).capacity.set_index("card")
    fast = with_overrides(scn, {"cards.l40s.memory.bandwidth_tbps": 2 * bw}, lib)
    assert scenario_library(fast, lib).card("l40s").memory.bandwidth_tbps == 2 * bw
    assert lib.card("l40s").memory.bandwidth_tbps == bw  # the shared library is untouched
    got = run(fast, lib, base=TINY.parent, detail=False, cache=run_cache).capacity.set_index("card")
    # doubling the bandwidth raises capacity clearly, not twofold: the engine's per-step and
    # per-sequence costs and the compute-bound prefill do not shrink with it
    assert got.loc["l40s", "rps_per_card"] > base.loc["l40s", "rps_per_card"] * 1.15
    assert got.loc["h100-sxm", "rps_per_card"] == base.loc["h100-sxm", "rps_per_card"]


def test_model_ids_with_dots_and_nested_fields(scn):
    lib = Library.default()
    s = with_overrides(scn, {"models.llama-3.1-8b.architecture.num_layers": 24}, lib)
    assert scenario_library(s, lib).model("llama-3.1-8b").architecture.num_layers == 24
    assert s.models["llama-3.1-8b"].source  # every override carries a source


@pytest.mark.parametrize("path, value, message", [
    ("cards.l40s.memory.bandwith_tbps", 1.0, "did you mean 'bandwidth_tbps'"),
    ("cards.l40s.memory.bandwidth_tbps", -1.0, "must be > 0"),
    ("models.llama-3.1-8b.architecture.num_layer", 3, "did you mean 'num_layers'"),
])
def test_bad_overrides_are_one_line_errors(scn, path, value, message):
    with pytest.raises(ConfigError, match=message) as e:
        with_overrides(scn, {path: value}, Library.default())
    assert "\n" not in str(e.value)


def test_override_in_yaml_is_checked_and_reported(tmp_path):
    from sim.report.files import resolved_yaml
    from sim.report.html import assumption_rows

    text = TINY.read_text().replace(
        "cards:\n", "cards:\n  h100-sxm: {memory: {bandwidth_tbps: 3.0}, source: 'test: a "
        "slower HBM stack'}\n", 1)
    p = tmp_path / "s.yaml"
    p.write_text(text)
    s = load_scenario(p)
    rows = [r for r in assumption_rows(s) if r["path"].startswith("cards.h100-sxm")]
    assert rows and all(r["provenance"] == "override" for r in rows)
    assert "slower HBM" in resolved_yaml(s)
    p.write_text(text.replace("bandwidth_tbps: 3.0", "bandwidth_tbs: 3.0"))
    with pytest.raises(ConfigError, match=r"s\.yaml: cards\.h100-sxm\.memory\.bandwidth_tbs"):
        load_scenario(p)


def test_card_overrides_are_typed_and_library_paths_kept_apart():
    """Scenario-level keys are `CardOverride` fields validated by pydantic; any other key is a
    library path in `fields`; the override dumps as written (no `fields` key)."""
    from sim.config.scenario import CardOverride, ModelOverride

    ov = CardOverride.model_validate({"source": "a test", "lead_time_weeks": [2, 4],
                                      "memory": {"bandwidth_tbps": 3.0}, "price_usd": 9000})
    assert ov.price_usd == 9000 and ov.lead_time_weeks == (2, 4) and ov.tdp_w is None
    assert ov.fields == {"memory": {"bandwidth_tbps": 3.0}}
    assert ov.model_dump(mode="json") == {"source": "a test", "lead_time_weeks": [2, 4],
                                          "memory": {"bandwidth_tbps": 3.0}, "price_usd": 9000}
    assert list(ov.values()) == ["lead_time_weeks", "memory", "price_usd"]  # as written
    for bad, msg in (({"price_usd": -1}, "must be a number >= 0"),
                     ({"tdp_w": True}, "must be a number >= 0"),
                     ({"lead_time_weeks": [4, 2]}, r"must be \[low, high\] with low <= high")):
        with pytest.raises(ValueError, match=msg):
            CardOverride.model_validate({"source": "a test", **bad})
    assert ModelOverride.model_validate({"source": "a test", "price_usd": 1}).fields == {
        "price_usd": 1}  # a model has no scenario-level keys: a (bad) library path


def test_model_extra_is_read_nowhere():
    import re

    hits = [str(p) for p in (REPO / "sim").rglob("*.py") if re.search(r"\bmodel_extra\b",
                                                                      p.read_text())]
    assert not hits, hits
