"""MLPerf Training validation data (benchmarks/data/mlperf_training.yaml): the file carries its
source, every result row names its round, system, accelerators and results folder, derived scores
recompute from the run durations, card ids exist in the library, and the rows cover two or more
vendors with library cards."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "benchmarks" / "data" / "mlperf_training.yaml"
CARDS = REPO / "hardware_specs" / "cards"

ROUNDS = {"v4.0", "v4.1", "v5.0", "v5.1"}
BENCHMARKS = {"llama2_70b_lora", "gpt3", "llama31_405b", "llama31_8b"}
TAGS = {"mlperf", "derived"}
ROW_KEYS = ("round", "submitter", "system", "system_id", "card", "card_name",
            "accelerators_per_node", "nodes", "accelerators", "benchmark", "framework",
            "time_to_train_minutes", "tag", "path", "repo")
BENCH_KEYS = ("model", "max_sequence_length", "quality_target", "global_batch_rules",
              "convergence_rcp", "sources")
REGISTRY_HOSTS = ("pypi.org", "npmjs", "crates.io", "rubygems", "huggingface.co")


def _data() -> dict:
    data = yaml.safe_load(DATA.read_text())
    assert isinstance(data, dict)
    return data


def _rows() -> list[dict]:
    return _data()["results"]


def _card_vendors() -> dict[str, str]:
    return {p.stem: yaml.safe_load(p.read_text())["vendor"] for p in CARDS.glob("*.yaml")}


def test_header_and_benchmarks() -> None:
    data = _data()
    source = data["source"]
    assert source["citation"] and source["scoring"] and source["repos"]
    assert set(data["benchmarks"]) == BENCHMARKS
    for name, bench in data["benchmarks"].items():
        for key in BENCH_KEYS:
            assert bench.get(key) is not None, f"{name}: no {key}"
        assert bench["max_sequence_length"] > 0
        assert bench["sources"], f"{name}: no sources"


def test_no_registry_hosts() -> None:
    text = DATA.read_text().lower()
    for host in REGISTRY_HOSTS:
        assert host not in text


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r['round']}-{r['system_id']}-{r['benchmark']}")
def test_row_fields(row: dict) -> None:
    for key in ROW_KEYS:
        assert key in row, f"missing {key}"
        if key != "card":
            assert row[key] not in (None, ""), f"empty {key}"
    assert row["round"] in ROUNDS
    assert row["benchmark"] in BENCHMARKS
    assert row["tag"] in TAGS
    assert row["repo"].startswith("mlcommons/training_results_v")
    assert row["round"] in row["repo"]
    assert f"/{row['benchmark']}" in row["path"]
    assert row["accelerators"] == row["accelerators_per_node"] * row["nodes"]
    assert row["time_to_train_minutes"] > 0
    if row["tag"] == "mlperf":
        assert row.get("source_url"), "published row without source_url"


@pytest.mark.parametrize("row", [r for r in _rows() if r["tag"] == "derived"],
                         ids=lambda r: f"{r['round']}-{r['system_id']}-{r['benchmark']}")
def test_derived_scores_recompute(row: dict) -> None:
    runs = row["run_minutes"]
    assert row["runs"] == len(runs) >= 3
    ordered = sorted(runs)
    olympic = sum(ordered[1:-1]) / (len(ordered) - 2)
    assert olympic == pytest.approx(row["olympic_raw_minutes"], abs=2e-3)
    assert row["rcp_norm_factor"] >= 1.0
    assert row["olympic_raw_minutes"] * row["rcp_norm_factor"] == pytest.approx(
        row["time_to_train_minutes"], abs=2e-3)
    samples = row.get("samples_to_converge")
    if samples is not None:
        assert len(samples) == len(runs)


def test_card_ids_exist() -> None:
    vendors = _card_vendors()
    for row in _rows():
        if row["card"] is not None:
            assert row["card"] in vendors, f"{row['card']} not in hardware_specs/cards"


def test_coverage_with_library_cards() -> None:
    vendors = _card_vendors()
    with_card = [r for r in _rows() if r["card"] is not None]
    assert len(with_card) >= 15
    assert len({vendors[r["card"]] for r in with_card}) >= 2
    assert len({r["accelerators"] for r in with_card}) >= 3
