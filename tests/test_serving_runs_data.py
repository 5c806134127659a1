"""Public vLLM serving runs (benchmarks/data/serving_runs): schema, sources, library ids, split."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, model_validator

REPO = Path(__file__).resolve().parents[1]
RUNS_DIR = REPO / "benchmarks" / "data" / "serving_runs"
CARDS_DIR = REPO / "hardware_specs" / "cards"
MODELS_DIR = REPO / "workloads" / "models"
EXAMPLE_JSON = RUNS_DIR / "vllm_result_example.json"
EXAMPLE_RUN_ID = "vllm-recipes-llama3.3-70b-rocm/fp8-8k1k-c64"
MIN_USABLE_RUNS = 30
TAGS = {"vendor", "mlperf", "independent", "analyst", "derived", "assumed"}

# keys benchmarks/benchmark_serving.py writes with --save-result (vllm_result_example.source.md)
VLLM_SETUP_KEYS = ["date", "backend", "model_id", "tokenizer_id", "num_prompts",
                   "request_rate", "burstiness", "max_concurrency"]
VLLM_TOTAL_KEYS = ["duration", "completed", "total_input_tokens", "total_output_tokens",
                   "request_throughput", "request_goodput:", "output_throughput",
                   "total_token_throughput"]
VLLM_METRIC_KEYS = [f"{stat}_{m}_ms" for m in ("ttft", "tpot", "itl", "e2el")
                    for stat in ("mean", "median", "std", "p99")]


class Source(BaseModel):
    model_config = ConfigDict(extra="allow")
    citation: str
    tag: str
    url: str | None = None
    repo: str | None = None
    path: str | None = None
    commit: str | None = None
    date: str | None = None

    @model_validator(mode="after")
    def _located(self):
        if not (self.url or (self.repo and self.path)):
            raise ValueError(f"source '{self.citation}' has neither url nor repo+path")
        if self.tag not in TAGS:
            raise ValueError(f"source '{self.citation}': tag {self.tag!r} not in {sorted(TAGS)}")
        return self


class Results(BaseModel):
    model_config = ConfigDict(extra="forbid")
    completed: int
    failed: int | None = None
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float | None = None
    peak_output_throughput: float | None = None
    peak_concurrent_requests: float | None = None
    mean_ttft_ms: float
    median_ttft_ms: float | None = None
    p99_ttft_ms: float | None = None
    mean_tpot_ms: float | None = None
    median_tpot_ms: float | None = None
    p99_tpot_ms: float | None = None
    mean_itl_ms: float | None = None
    median_itl_ms: float | None = None
    p99_itl_ms: float | None = None
    mean_e2el_ms: float | None = None
    median_e2el_ms: float | None = None
    p99_e2el_ms: float | None = None


class Run(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    label: str
    usable: bool
    unusable_reason: str | None = None
    split: Literal["calibrate", "validate"] | None = None
    group: str | None = None
    card: str | None
    card_stated: str | None = None
    card_assumed: bool = False
    gpus: int | None = None
    tp: int | None
    model: str | None
    model_name: str | None
    vllm_version: str | None
    v1_engine: bool | None
    dataset: str | None
    input_len: int | None = None
    output_len: int | None = None
    request_rate: float | str | None
    max_concurrency: int | None = None
    num_prompts: int | None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    chunked_prefill: bool | None = None
    prefix_caching: bool | None = None
    results: Results
    notes: list[str] = []

    @model_validator(mode="after")
    def _usable_rows_are_complete(self):
        if not self.usable:
            if not self.unusable_reason:
                raise ValueError(f"{self.id}: usable false without unusable_reason")
            if self.split is not None:
                raise ValueError(f"{self.id}: unusable row has a split")
            return self
        required = {"card": self.card, "tp": self.tp, "model_name": self.model_name,
                    "vllm_version": self.vllm_version, "dataset": self.dataset,
                    "num_prompts": self.num_prompts, "split": self.split}
        missing = [k for k, v in required.items() if v is None]
        if missing:
            raise ValueError(f"{self.id}: usable row misses {', '.join(missing)}")
        if self.v1_engine is not True:
            raise ValueError(f"{self.id}: usable row is not a V1-engine run")
        if self.request_rate is None and self.max_concurrency is None:
            raise ValueError(f"{self.id}: usable row states no request_rate or max_concurrency")
        if self.dataset == "random" and (self.input_len is None or self.output_len is None):
            raise ValueError(f"{self.id}: random dataset without input_len/output_len")
        if self.results.mean_tpot_ms is None and self.results.mean_itl_ms is None:
            raise ValueError(f"{self.id}: usable row has neither mean TPOT nor mean ITL")
        return self


class RunFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: Source
    runs: list[Run]


def _load_files() -> dict[str, RunFile]:
    files = sorted(RUNS_DIR.glob("*.yaml"))
    assert files, f"no run files in {RUNS_DIR}"
    return {p.name: RunFile.model_validate(yaml.safe_load(p.read_text())) for p in files}


@pytest.fixture(scope="module")
def run_files() -> dict[str, RunFile]:
    return _load_files()


@pytest.fixture(scope="module")
def usable(run_files) -> list[Run]:
    return [r for name in sorted(run_files) for r in run_files[name].runs if r.usable]


def _close(printed: float, derived: float) -> bool:
    """Printed values carry two decimals; allow that rounding plus 1%."""
    return abs(printed - derived) <= 0.006 + 0.01 * abs(derived)


def test_every_file_loads_with_a_located_source(run_files):
    ids = [r.id for f in run_files.values() for r in f.runs]
    assert len(ids) == len(set(ids)), "run ids must be unique"
    for name, f in run_files.items():
        assert f.runs, f"{name}: no runs"
        for r in f.runs:
            stem = name.removesuffix(".yaml")
            assert r.id.startswith(stem + "/"), f"{r.id}: id does not start with {stem}/"


def test_at_least_30_usable_runs_and_both_splits(usable):
    assert len(usable) >= MIN_USABLE_RUNS
    splits = {r.split for r in usable}
    assert splits == {"calibrate", "validate"}


def test_cards_and_models_exist_in_the_library(run_files):
    for f in run_files.values():
        for r in f.runs:
            if r.card is not None:
                assert (CARDS_DIR / f"{r.card}.yaml").is_file(), f"{r.id}: unknown card {r.card!r}"
            if r.model is not None:
                model_file = MODELS_DIR / f"{r.model}.yaml"
                assert model_file.is_file(), f"{r.id}: unknown model {r.model!r}"


def test_printed_totals_agree_with_printed_rates(run_files):
    """Catches transcription slips: throughputs are totals over the printed duration."""
    for f in run_files.values():
        for r in f.runs:
            res = r.results
            assert _close(res.request_throughput, res.completed / res.duration_s), r.id
            assert _close(res.output_throughput, res.total_output_tokens / res.duration_s), r.id
            if res.total_token_throughput is not None:
                total = res.total_input_tokens + res.total_output_tokens
                assert _close(res.total_token_throughput, total / res.duration_s), r.id
            for m in ("ttft", "tpot", "itl", "e2el"):
                median, p99 = getattr(res, f"median_{m}_ms"), getattr(res, f"p99_{m}_ms")
                if median is not None and p99 is not None:
                    assert p99 >= median, f"{r.id}: p99 {m} below its median"


def test_load_fields_are_well_formed(usable):
    for r in usable:
        assert r.results.completed <= r.num_prompts, r.id
        assert r.max_concurrency is None or r.max_concurrency >= 1, r.id
        rate = r.request_rate
        assert rate == "inf" or (isinstance(rate, float) and rate > 0 and math.isfinite(rate)), r.id


def _split_by_rule(run_files) -> dict[str, str]:
    """README rule: usable rows by (file name, position); a shared `group` keeps rows together."""
    out: dict[str, str] = {}
    turn = 0
    for name in sorted(run_files):
        last_group, last_split = None, None
        for r in run_files[name].runs:
            if not r.usable:
                continue
            if r.group is not None and r.group == last_group:
                out[r.id] = last_split
                continue
            last_split = "calibrate" if turn % 2 == 0 else "validate"
            out[r.id] = last_split
            last_group = r.group
            turn += 1
    return out


def test_split_follows_the_fixed_rule(run_files, usable):
    expected = _split_by_rule(run_files)
    for r in usable:
        assert r.split == expected[r.id], f"{r.id}: split {r.split}, rule gives {expected[r.id]}"


def test_result_example_has_vllm_keys_and_matches_its_run(run_files):
    data = json.loads(EXAMPLE_JSON.read_text())
    assert list(data) == VLLM_SETUP_KEYS + VLLM_TOTAL_KEYS + VLLM_METRIC_KEYS
    assert (RUNS_DIR / "vllm_result_example.source.md").is_file()
    run = next(r for f in run_files.values() for r in f.runs if r.id == EXAMPLE_RUN_ID)
    res = run.results
    assert data["num_prompts"] == run.num_prompts
    assert data["max_concurrency"] == run.max_concurrency
    assert data["request_rate"] == run.request_rate
    assert data["duration"] == res.duration_s
    assert data["completed"] == res.completed
    assert data["total_input_tokens"] == res.total_input_tokens
    assert data["total_output_tokens"] == res.total_output_tokens
    for key in ("request_throughput", "output_throughput", "total_token_throughput"):
        assert data[key] == getattr(res, key), key
    for m in ("ttft", "tpot", "itl", "e2el"):
        for stat in ("mean", "median", "p99"):
            key = f"{stat}_{m}_ms"
            assert data[key] == getattr(res, key), key
