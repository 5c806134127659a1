"""End-to-end CLI: the `fleetsim perf` JSON contract, tables, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    env.pop("FLEETSIM_LIBRARY", None)
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env=env)


def test_perf_json_contract():
    r = run("perf", "--card", "h100-sxm", "--model", "llama-2-70b", "--precision", "fp8",
            "--tp", "8", "--isl", "1024", "--osl", "294", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("fits", "min_tp", "tp", "batch_size", "offline_tokens_per_s_per_card",
                "decode_step_s", "prefill_tokens_per_s_per_card", "weights_gb_per_card",
                "kv_tokens_capacity", "calibration_tiers"):
        assert key in out, key
    assert out["fits"] is True and out["tp"] == 8 and out["min_tp"] == 1  # TRT-LLM: 95% memory
    assert out["offline_tokens_per_s_per_card"] > 0
    assert out["engine"].startswith("trtllm-") and out["engine_version"].startswith("TensorRT-LLM")
    assert out["engine_date"]
    assert set(out["calibration_tiers"].values()) <= {"measured", "published", "assumed"}
    assert "gemm_fp8" in out["calibration_tiers"]


def test_perf_picks_best_tp_and_reads_workload():
    r = run("perf", "--card", "h100-sxm", "--model", "llama-2-70b", "--precision", "fp8",
            "--workload", "mlperf-llama2-70b", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tp"] >= out["min_tp"] == 1
    best = out["offline_tokens_per_s_per_card"]
    for tp in (1, 2, 4, 8):
        other = json.loads(run("perf", "--card", "h100-sxm", "--model", "llama-2-70b",
                               "--precision", "fp8", "--workload", "mlperf-llama2-70b", "--tp",
                               str(tp), "--json").stdout)
        assert other["offline_tokens_per_s_per_card"] <= best * (1 + 1e-9)


def test_model_that_does_not_fit_names_the_tp():
    """A layout that does not fit is refused (exit 2, one line), even with --json."""
    r = run("perf", "--card", "h100-sxm", "--model", "llama-2-70b", "--precision", "bf16",
            "--tp", "1", "--isl", "500", "--osl", "100", "--json")
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "smallest TP that fits is 2" in lines[0], r.stderr


@pytest.mark.parametrize("args,needle", [
    (["--card", "h100-sxmm", "--isl", "10", "--osl", "10"], "unknown card 'h100-sxmm'"),
    (["--card", "h100-sxm", "--model", "gpt5", "--isl", "10", "--osl", "10"], "unknown model"),
    (["--card", "h100-sxm", "--isl", "-5", "--osl", "10"], "must be >= 1"),
    (["--card", "a100-sxm", "--precision", "fp8", "--isl", "10", "--osl", "10"],
     "no native fp8"),
    (["--card", "h100-sxm", "--precision", "fp3", "--isl", "10", "--osl", "10"],
     "unknown precision"),
    (["--card", "h100-sxm", "--tp", "3", "--isl", "10", "--osl", "10"], "does not divide"),
    (["--card", "h100-sxm", "--isl", "x", "--osl", "10"], "--isl"),
    (["--card", "h100-sxm", "--workload", "nope"], "unknown workload 'nope'"),
])
def test_bad_input_is_one_line_exit_2(args, needle):
    r = run("perf", *args)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr


def test_malformed_library_yaml_is_one_line(tmp_path):
    d = tmp_path / "hardware_specs" / "cards"
    d.mkdir(parents=True)
    (d / "h100-sxm.yaml").write_text("name: [unclosed\n")
    r = run("perf", "--library", str(tmp_path), "--card", "h100-sxm", "--isl", "10", "--osl",
            "10")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: hardware_specs/cards/h100-sxm.yaml: malformed YAML")
    assert len(r.stderr.strip().splitlines()) == 1


def test_debug_shows_traceback():
    r = run("--debug", "perf", "--card", "nope", "--isl", "10", "--osl", "10")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_tables():
    r = run("cards")
    assert r.returncode == 0 and "mi300x" in r.stdout
    r = run("models")
    assert r.returncode == 0 and "deepseek-v3" in r.stdout


def test_import_sim_is_light():
    code = ("import sys, sim; import sim.calibrate; "
            "heavy = [m for m in ('pydantic', 'simpy', 'pandas', 'scipy', 'typer') "
            "if m in sys.modules]; print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_layers_import_only_leftwards():
    """config -> perf -> serving -> fleet -> cost -> report: no module imports a later layer."""
    order = ["config", "perf", "serving", "fleet", "cost", "report"]
    import ast

    for i, layer in enumerate(order):
        d = REPO / "sim" / layer
        if not d.is_dir():
            continue
        later = {f"sim.{x}" for x in order[i + 1:]} | {"sim.cli", "sim.experiments",
                                                         "sim.pipeline"}
        for py in d.rglob("*.py"):
            tree = ast.parse(py.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for n in names:
                    assert not any(n == x or n.startswith(x + ".") for x in later), (py, n)
