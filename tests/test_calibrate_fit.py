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


@pytest.fixture(scope="module")
def raw():
    return read_yaml(RAW)


def test_fit_reproduces_the_committed_measured_file(tmp_path, lib):
    out = tmp_path / "h100-sxm@measured.yaml"
    rec = fit_file(RAW, "h100-sxm", out, lib)
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
