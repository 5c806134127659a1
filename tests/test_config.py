"""Library files load; bad YAML gives one-line errors naming file, YAML path and fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.config.card import CardSpec
from sim.config.library import KINDS, Library
from sim.config.loader import ConfigError, load_file, parse_yaml

CARD_IDS = ("h100-sxm h100-pcie h100-nvl h200-sxm b200 gb200 a100-sxm l40s l40 l4 a10 rtx-3090 "
            "rtx-4090 rtx-5090 mi300x mi325x mi355x gaudi2 gaudi3").split()
MODEL_IDS = ("llama-2-70b llama-3.1-8b llama-3.1-70b llama-3.1-405b mixtral-8x7b mixtral-8x22b "
             "deepseek-v3 gpt-oss-120b qwen3-14b qwen3-32b codellama-34b").split()
WORKLOAD_IDS = ("mlperf-llama2-70b mlperf-llama3.1-8b mlperf-llama3.1-405b "
                "mlperf-mixtral-8x7b").split()


def test_required_ids_present(lib):
    assert set(CARD_IDS) <= set(lib.ids("card"))
    assert set(MODEL_IDS) <= set(lib.ids("model"))
    assert set(WORKLOAD_IDS) <= set(lib.ids("workload"))
    # every card has a calibration
    cal_cards = {i.split("@")[0] for i in lib.ids("calibration")}
    assert set(CARD_IDS) <= cal_cards


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_library_file_loads_with_sources(lib, kind):
    for ident in lib.ids(kind):
        rec = lib._get(kind, ident)
        if kind == "engine_fit":  # generated from the tables, which carry the sources
            assert rec.generated_by and all(f.tables for f in rec.cards.values())
            continue
        if kind == "training_fit":  # generated from the training tables it names
            assert rec.generated_by and rec.tables
            continue
        if kind == "software_trend":  # derived from the published tables it names
            assert rec.generated_by and rec.tables
            assert all(t in lib.ids("engine_table") for t in rec.tables)
            continue
        if kind == "serving_overheads":  # every value names a declared source
            from sim.config.base import CalValue

            vals = [v for v in dict(rec).values() if isinstance(v, CalValue)]
            assert len(vals) >= 7 and all(v.source in rec.sources for v in vals)
        if kind in ("engine_table", "collective"):  # one source per published table
            assert rec.source.tag in {"vendor", "independent"} and rec.source.citation
            continue
        assert rec.sources, f"{kind} {ident} declares no sources"
        for s in rec.sources.values():
            assert s.tag in {"vendor", "mlperf", "independent", "analyst", "derived", "assumed",
                             "secondary"}


def test_assumed_calibration_values_carry_a_rationale(lib):
    from sim.perf.hardware import Hardware

    for cid in CARD_IDS:
        hw = Hardware.load(cid, lib)
        for name, f in hw.factors.items():
            assert f.tier in {"measured", "published", "assumed"}, (cid, name)


H100 = Path(__file__).resolve().parents[1] / "hardware_specs" / "cards" / "h100-sxm.yaml"


def _mutated(tmp_path: Path, old: str, new: str) -> Path:
    text = H100.read_text()
    assert old in text
    d = tmp_path / "hardware_specs" / "cards"
    d.mkdir(parents=True)
    p = d / "h100-sxm.yaml"
    p.write_text(text.replace(old, new, 1))
    return p


def _err(p: Path) -> str:
    with pytest.raises(ConfigError) as ei:
        load_file(CardSpec, p, "hardware_specs/cards/h100-sxm.yaml")
    msg = str(ei.value)
    assert "\n" not in msg
    return msg


def test_negative_value_error_names_file_and_path(tmp_path):
    msg = _err(_mutated(tmp_path, "bandwidth_tbps: 3.35", "bandwidth_tbps: -3"))
    assert msg == "hardware_specs/cards/h100-sxm.yaml: memory.bandwidth_tbps: must be > 0 (got -3)"


def test_unknown_key_suggests_the_close_one(tmp_path):
    msg = _err(_mutated(tmp_path, "  bandwidth_tbps: 3.35", "  bandwith_tbps: 3.35"))
    assert "memory.bandwith_tbps: unknown key (did you mean 'bandwidth_tbps'?)" in msg


def test_wrong_type_nan_and_literal(tmp_path):
    assert "must be a number (got 'lots')" in _err(
        _mutated(tmp_path / "a", "tdp_w: 700", "tdp_w: lots"))
    assert "power.tdp_w: must be a finite number" in _err(
        _mutated(tmp_path / "b", "tdp_w: 700", "tdp_w: .nan"))
    assert "scale_up.topology: must be one of" in _err(
        _mutated(tmp_path / "c", "topology: switch", "topology: ring"))


def test_unknown_source_reference(tmp_path):
    msg = _err(_mutated(tmp_path, "  source: dgx-h100-guide", "  source: dgx-guide"))
    assert "scale_out.source: unknown source 'dgx-guide'" in msg


def test_missing_key(tmp_path):
    msg = _err(_mutated(tmp_path, "  capacity_gb: 80\n", ""))
    assert "memory.capacity_gb: required key is missing" in msg


def test_duplicate_keys_and_malformed_yaml():
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_yaml("a: 1\na: 2\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: malformed YAML \(line 2"):
        parse_yaml("a: [1, 2\nb: 3\n", "x.yaml")


def test_yaml_is_loaded_safely():
    with pytest.raises(ConfigError):
        parse_yaml("a: !!python/object/apply:os.system ['true']\n", "x.yaml")


def test_alias_bomb_is_refused():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    prev = "a"
    for i in range(1, 9):
        bomb += f"{chr(97 + i)}: &{chr(97 + i)} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
        prev = chr(97 + i)
    with pytest.raises(ConfigError, match="YAML nodes"):
        parse_yaml(bomb, "bomb.yaml")


def test_user_library_is_searched_first(tmp_path, lib):
    _mutated(tmp_path, "name: NVIDIA H100 SXM5 80GB", "name: My H100")
    mine = Library.default([tmp_path])
    assert mine.card("h100-sxm").name == "My H100"
    assert lib.card("h100-sxm").name != "My H100"


def test_env_library(tmp_path, monkeypatch):
    _mutated(tmp_path, "name: NVIDIA H100 SXM5 80GB", "name: Env H100")
    monkeypatch.setenv("FLEETSIM_LIBRARY", str(tmp_path))
    assert Library.default().card("h100-sxm").name == "Env H100"


def test_unknown_id_lists_known_and_suggests(lib):
    with pytest.raises(ConfigError, match="did you mean 'mi300x'"):
        lib.card("mi300")


def test_json_schema_for_every_kind(tmp_path):
    from sim.cli import main

    main(["schema", "--out", str(tmp_path)])
    for kind in KINDS:
        s = json.loads((tmp_path / f"{kind}.schema.json").read_text())
        assert s["type"] == "object" and "properties" in s
        assert s.get("additionalProperties") is False


def test_h100_visible_memory_is_our_measurement(lib):
    """The H100 SXM's memory is what torch read on our H100 (binary units less the driver's
    share), not the datasheet's 80 GB read as 80e9 bytes."""
    from sim.config.loader import read_yaml
    from sim.perf.hardware import Hardware

    raw = read_yaml(Path("benchmarks/results/calibration/h100-sxm-measured-2026-11-26.yaml"),
                    "measurement")
    measured = raw["provenance"]["total_memory_bytes"]
    assert Hardware.load("h100-sxm", lib).memory_bytes == measured
    assert measured != 80e9


def test_every_card_memory_has_a_source_and_tag(lib):
    """Each card's visible memory names a declared source with a tag: `derived` exactly for a
    derived value, whose ratio is some read card's visible bytes over its nominal GiB."""
    read_ratios = {}
    for cid in lib.ids("card"):
        m = lib.card(cid).memory
        if m.visible.reading != "derived":
            read_ratios[cid] = m.visible_bytes() / (m.capacity_gb * 2**30)
    for cid in lib.ids("card"):
        card = lib.card(cid)
        v = card.memory.visible
        src = card.sources[v.source]
        assert src.tag and src.citation
        assert (src.tag == "derived") == (v.reading == "derived"), cid
        if v.reading == "derived":
            assert any(v.nominal_gib_ratio == r for r in read_ratios.values()), cid
        assert 0.9 < card.memory.visible_bytes() / (card.memory.capacity_gb * 2**30) <= 1.0


def test_visible_memory_needs_one_value(tmp_path):
    good = ("  visible: {source: visible-measured, reading: torch_total_memory, "
            "bytes: 85017493504}")
    bad = "  visible: {source: visible-measured, reading: derived, bytes: 85017493504}"
    msg = _err(_mutated(tmp_path, good, bad))
    assert "memory.visible" in msg and "needs exactly one of nominal_gib_ratio" in msg
