"""fleetsim serve as a drop-in for vLLM's benchmark_serving: flags, result keys, the diff."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.serving.vllm_bench import diff, random_requests

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "benchmarks" / "data" / "serving_runs" / "vllm_result_example.json"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("FLEETSIM_LIBRARY", None)
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env=env)


@pytest.fixture(scope="module")
def sim_result(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """The example run's command (vllm bench serve --dataset-name random --random-input-len
    8192 --random-output-len 1024 --max-concurrency 64 --num-prompts 128 --seed 123), scaled
    down to 16 prompts on an H100 so it stays quick."""
    out = tmp_path_factory.mktemp("bench") / "fleetsim.json"
    r = run("serve", "--card", "h100-sxm", "--model", "llama-3.1-70b", "--precision", "fp8",
            "--tp", "2", "--dataset-name", "random", "--random-input-len", "8192",
            "--random-output-len", "1024", "--max-concurrency", "4", "--num-prompts", "16",
            "--seed", "123", "--result-json", str(out), "--json")
    return r, out


def test_result_json_has_vllm_keys(sim_result):
    r, out = sim_result
    assert r.returncode == 0, r.stderr
    got = json.loads(out.read_text())
    want = json.loads(EXAMPLE.read_text())
    missing = [k for k in want if k not in got]
    assert not missing, missing
    assert got["completed"] == got["num_prompts"] == 16
    assert got["max_concurrency"] == 4 and got["request_rate"] == "inf"
    assert got["total_input_tokens"] == 16 * 8192 and got["total_output_tokens"] == 16 * 1024
    assert got["mean_e2el_ms"] > got["mean_ttft_ms"] > 0
    assert got["mean_tpot_ms"] == pytest.approx(got["mean_itl_ms"], rel=1e-9)  # equal lengths
    assert got["output_throughput"] == pytest.approx(16 * 1024 / got["duration"])
    printed = json.loads(r.stdout)["vllm_benchmark"]
    assert printed["mean_ttft_ms"] == got["mean_ttft_ms"]


def test_calibrate_check_diffs_two_result_files(sim_result):
    _, out = sim_result
    r = run("calibrate", "check", str(EXAMPLE), "--against", str(out))
    assert r.returncode == 0, r.stderr
    for key in ("mean_ttft_ms", "p99_tpot_ms", "mean_e2el_ms", "output_throughput"):
        assert key in r.stdout
    rows = {d["key"]: d for d in diff(json.loads(EXAMPLE.read_text()),
                                      json.loads(out.read_text()))}
    assert rows["mean_ttft_ms"]["measured"] == 11639.66
    assert "median_itl_ms" not in rows  # null in fleetsim's file: not diffed


def test_request_rate_and_burstiness_as_vllm_draws_them():
    ch = random_requests(20000, 100, 10, request_rate=5.0, burstiness=0.5, seed=1)
    gaps = np.diff(ch.arrival_s)
    assert gaps.mean() == pytest.approx(1 / 5.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(math.sqrt(1 / 0.5), rel=0.05)  # Gamma CV
    assert np.all(random_requests(5, 10, 2).arrival_s == 0.0)  # inf: all at once
    with pytest.raises(ValueError, match="--random-input-len"):
        random_requests(5, 0, 2)


def test_bad_dataset_is_one_line_error():
    r = run("serve", "--card", "h100-sxm", "--model", "llama-3.1-8b", "--dataset", "sharegpt",
            "--num-prompts", "4")
    assert r.returncode == 2
    assert "only 'random'" in r.stderr


def test_calibrate_check_predicts_a_serving_result_for_a_card():
    """A vLLM result JSON with --card and --model: the run it describes is simulated and each
    latency metric printed measured against predicted."""
    r = run("calibrate", "check", str(EXAMPLE), "--card", "h100-sxm", "--model", "llama-3.1-8b")
    assert r.returncode == 0, r.stderr
    assert "serving check" in r.stdout
    for metric in ("ttft_ms mean", "tpot_ms p99", "e2e_ms mean", "output tokens/s"):
        assert metric in r.stdout
