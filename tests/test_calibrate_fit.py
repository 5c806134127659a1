"""Fitting measured microbenchmarks into calibration, and checking the model against layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.calibrate.check import check
from sim.calibrate.fit import fit_file
from sim.config.calibration import Calibration
from sim.config.loader import load_file, read_yaml

REPO = Path(__file__).resolve().parents[1]
RAW = REPO / "benchmarks" / "results" / "calibration" / "h100-sxm-measured-2026-11-26.yaml"
GEMM_ALL = REPO / "benchmarks" / "results" / "calibration" / "h100-sxm-gemm-all-models-2026-11-26.yaml"
LAYERS = REPO / "benchmarks" / "results" / "calibration" / "h100-sxm-layers-2026-11-26.yaml"


@pytest.fixture(scope="module")
def raw():
    return read_yaml(RAW)


def test_fit_reproduces_the_committed_measured_file(tmp_path, lib):
    out = tmp_path / "h100-sxm@measured.yaml"
    rec = fit_file([GEMM_ALL, RAW, LAYERS], "h100-sxm", out, lib)
    cal = load_file(Calibration, out)
    committed = lib.calibration("h100-sxm@measured")
    assert cal.gemm.bf16.value == pytest.approx(committed.gemm.bf16.value, abs=1e-3)
    assert cal.memory.bandwidth_fraction.value == committed.memory.bandwidth_fraction.value
    # physically sensible: H100 copy/triad ~3.0 TB/s of 3.35; BF16 GEMMs ~80% of 989 TFLOPS
    assert 0.85 < rec["memory"]["bandwidth_fraction"]["value"] < 0.95
    assert 0.7 < rec["gemm"]["bf16"]["value"] < 0.9
    assert 0.8 < rec["gemm"]["sustained_fraction"]["value"] < 0.95
    assert all(v["tier"] == "measured" for v in rec["gemm"].values())


def test_measured_tier_wins_over_published(hw_cache):
    hw = hw_cache("h100-sxm")
    assert hw.factors["gemm_bf16"].tier == "measured"
    assert hw.factors["memory_bandwidth"].tier == "measured"
    # factors the measurement does not cover fall back to the card's main file
    assert hw.factors["allreduce_busbw"].tier == "published"
    assert hw.factors["training_mfu"].tier == "published"


def test_layer_check_covers_every_measured_layer(raw, lib):
    rows = check(raw, "h100-sxm", lib)
    assert len(rows) == len(raw["sections"]["layer"]["points"])
    assert all(r.predicted_s > 0 and r.measured_s > 0 for r in rows)
    # the roofline sum never predicts a layer slower than 1.5x what was measured
    assert all(r.error < 0.5 for r in rows)


def _cli(*args):
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=120)


@pytest.mark.parametrize("content,needle", [
    ("sections: [unclosed\n", "malformed YAML"),
    ("provenance: {device_name: X}\nsections: {}\n", "provenance: missing date_utc"),
    ("just: text\n", "sections: missing"),
])
def test_bad_measurement_files_are_rejected_in_one_line(tmp_path, content, needle):
    bad = tmp_path / "raw.yaml"
    bad.write_text(content)
    r = _cli("calibrate", "fit", str(bad), "--card", "h100-sxm", "--out",
             str(tmp_path / "x@measured.yaml"))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]
    assert not (tmp_path / "x@measured.yaml").exists()


def test_unknown_card_is_rejected(tmp_path):
    r = _cli("calibrate", "fit", str(RAW), "--card", "h100-sxn", "--out", str(tmp_path / "o.yaml"))
    assert r.returncode == 2 and "unknown card 'h100-sxn'" in r.stderr


def test_malformed_calibration_file_in_a_library_is_one_line(tmp_path):
    d = tmp_path / "hardware_specs" / "calibration"
    d.mkdir(parents=True)
    (d / "h100-sxm@measured.yaml").write_text(
        "card: h100-sxm\nstack: cuda\nstack_version: x\nsources: {}\n"
        "gemm: {bf16: {value: 2.5, tier: measured, source: nowhere}}\n")
    r = _cli("perf", "--library", str(tmp_path), "--card", "h100-sxm", "--isl", "10", "--osl",
             "10")
    assert r.returncode == 2
    assert r.stderr.startswith("error: hardware_specs/calibration/h100-sxm@measured.yaml:")
    assert len(r.stderr.strip().splitlines()) == 1


DATA = REPO / "tests" / "data"


def test_import_vllm_and_genai_perf_results():
    from sim.calibrate.serving_import import load_measurement

    v = load_measurement(DATA / "vllm_bench_serving_example.json")
    assert v.source_format == "vllm-benchmark-serving" and v.num_requests == 12
    assert v.request_rate == 4.0 and v.metrics["ttft_ms"]["p99"] == 41.5
    g = load_measurement(DATA / "genai_perf_example.json")
    assert g.source_format == "genai-perf" and g.metrics["tpot_ms"]["p50"] == 7.7
    assert sum(g.input_lens) / g.num_requests == 512


@pytest.mark.parametrize("content,needle", [
    ("{not json", "malformed JSON"),
    ('{"hello": 1}', "not a vLLM benchmark_serving result"),
    ('{"mean_ttft_ms": "fast", "completed": 3}', "mean_ttft_ms: must be a finite number"),
    ('{"mean_ttft_ms": 3, "completed": 2, "input_lens": [1, 0], "output_lens": [1, 1]}',
     "input_lens: must be integers >= 1"),
])
def test_bad_serving_results_are_one_line(tmp_path, content, needle):
    bad = tmp_path / "r.json"
    bad.write_text(content)
    r = _cli("calibrate", "import", str(bad))
    assert r.returncode == 2 and needle in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_serving_check_compares_every_metric(lib):
    from sim.calibrate.serving_import import check_serving, load_measurement
    from sim.perf.hardware import Hardware
    from sim.perf.memory import Layout
    from sim.perf.precision import Precision
    from sim.serving.simulate import ServeSetup

    meas = load_measurement(DATA / "vllm_bench_serving_example.json")
    setup = ServeSetup(lib.model("llama-3.1-8b"), Hardware.load("h100-sxm", lib),
                       Precision.preset("fp8"), Layout(tp=1))
    rows = check_serving(meas, setup)
    names = {r["metric"] for r in rows}
    assert {"ttft_ms p99", "tpot_ms p50", "e2e_ms mean", "output tokens/s"} <= names
    assert all(r["predicted"] > 0 for r in rows)
