"""Training throughput tables (hardware_specs/training_tables): every file loads, carries its
source, names only library cards and models, and together they cover two or more vendors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TABLES = REPO / "hardware_specs" / "training_tables"
CARDS = REPO / "hardware_specs" / "cards"
MODELS = REPO / "workloads" / "models"

TOP_KEYS = ("id", "stack", "framework_version", "release_date", "vendor", "source", "metric",
            "conditions", "notes", "points")
POINT_KEYS = ("card", "card_name", "model", "model_name", "task", "gpus", "seq_len",
              "global_batch", "micro_batch", "tp", "pp", "cp", "vp", "ep", "dp", "precision",
              "tokens_per_s_per_gpu", "model_tflops_per_gpu", "step_time_s")
RATES = ("tokens_per_s_per_gpu", "model_tflops_per_gpu", "mfu", "tokens_per_s_system")
TASKS = {"pretrain", "finetune", "lora"}
PRECISIONS = {"bf16", "fp8", "fp8-cs", "mxfp8", "fp8-block", "nvfp4"}
TAGS = {"vendor", "independent", "analyst"}
YEAR_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _files() -> list[Path]:
    return sorted(TABLES.glob("*.yaml"))


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: top level is not a mapping"
    return data


def _card_vendors() -> dict[str, str]:
    return {p.stem: yaml.safe_load(p.read_text())["vendor"] for p in CARDS.glob("*.yaml")}


def _where(path: Path, i: int) -> str:
    return f"{path.name}: points[{i}]"


def test_the_folder_has_tables_and_a_readme_listing_them():
    assert len(_files()) >= 6
    readme = (TABLES / "README.md").read_text()
    for path in _files():
        assert f"`{path.name}`" in readme, f"README.md does not list {path.name}"


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_header_fields_and_source(path):
    data = _load(path)
    missing = [k for k in TOP_KEYS if k not in data]
    assert not missing, f"{path.name}: missing {missing}"
    assert data["id"] == path.stem, f"{path.name}: id {data['id']!r} != file name"
    assert YEAR_MONTH.match(str(data["release_date"])), f"{path.name}: release_date"
    src = data["source"]
    assert src.get("citation"), f"{path.name}: source.citation empty"
    assert src.get("url") or (src.get("repo") and src.get("path")), \
        f"{path.name}: source needs a url or repo + path"
    if src.get("commit"):
        assert re.fullmatch(r"[0-9a-f]{40}", src["commit"]), f"{path.name}: source.commit"
    assert src.get("tag") in TAGS, f"{path.name}: source.tag {src.get('tag')!r}"
    assert YEAR_MONTH.match(str(src.get("date"))), f"{path.name}: source.date"
    assert data["metric"].get("per") in {"gpu", "system"}, f"{path.name}: metric.per"
    assert isinstance(data["notes"], list) and data["notes"], f"{path.name}: notes"
    assert data["points"], f"{path.name}: no points"


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_points_are_complete_and_name_library_ids(path):
    cards = _card_vendors()
    models = {p.stem for p in MODELS.glob("*.yaml")}
    for i, pt in enumerate(_load(path)["points"]):
        where = _where(path, i)
        missing = [k for k in POINT_KEYS if k not in pt]
        assert not missing, f"{where}: missing {missing}"
        assert pt["card"] is None or pt["card"] in cards, f"{where}: card {pt['card']!r}"
        assert pt["model"] is None or pt["model"] in models, f"{where}: model {pt['model']!r}"
        assert pt["card_name"] and pt["model_name"], f"{where}: names must be as printed"
        assert pt["task"] in TASKS, f"{where}: task {pt['task']!r}"
        assert pt["precision"] is None or pt["precision"] in PRECISIONS, \
            f"{where}: precision {pt['precision']!r}"
        assert isinstance(pt["gpus"], int) and pt["gpus"] > 0, f"{where}: gpus"
        assert any(pt.get(k) is not None for k in RATES), f"{where}: no rate of any kind"
        for key in RATES:
            value = pt.get(key)
            assert value is None or value > 0, f"{where}: {key} must be positive"
        assert pt.get("mfu") is None or pt["mfu"] < 1, f"{where}: mfu is a fraction"
        for key in pt.get("derived", []):
            assert pt.get(key) is not None, f"{where}: derived key {key!r} has no value"


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.stem)
def test_parallel_layouts_fit_the_card_count(path):
    for i, pt in enumerate(_load(path)["points"]):
        where = _where(path, i)
        for key in ("tp", "pp", "cp", "vp", "ep", "dp"):
            d = pt[key]
            assert d is None or (isinstance(d, int) and d >= 1), f"{where}: {key} {d!r}"
        model_parallel = 1
        for key in ("tp", "pp", "cp"):
            model_parallel *= pt[key] or 1
        assert pt["gpus"] % model_parallel == 0, \
            f"{where}: tp*pp*cp={model_parallel} does not divide {pt['gpus']} cards"
        if pt["global_batch"] is not None and pt["micro_batch"] is not None:
            assert pt["micro_batch"] <= pt["global_batch"], f"{where}: micro above global batch"


def test_derived_per_gpu_rates_match_the_printed_system_rate():
    for path in _files():
        for i, pt in enumerate(_load(path)["points"]):
            system, per_gpu = pt.get("tokens_per_s_system"), pt.get("tokens_per_s_per_gpu")
            if system is not None and per_gpu is not None:
                assert per_gpu == pytest.approx(system / pt["gpus"], abs=0.06), _where(path, i)


def test_at_least_two_vendors_and_forty_points():
    vendors = _card_vendors()
    seen: set[str] = set()
    total = 0
    for path in _files():
        for pt in _load(path)["points"]:
            total += 1
            if pt["card"] is not None:
                seen.add(vendors[pt["card"]])
    assert total >= 40
    assert {"nvidia", "amd"} <= seen, seen
