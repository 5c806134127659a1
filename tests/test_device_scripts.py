"""The GPU-side scripts run end to end on the CPU with tiny shapes (CI has the CPU torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def test_mixed_step_script_runs_on_cpu(tmp_path):
    if not os.environ.get("CI"):
        pytest.importorskip("torch")
    out = tmp_path / "m.yaml"
    r = subprocess.run([sys.executable, "benchmarks/device/mixed_step.py", "--device", "cpu",
                        "--quick", "--fp8", "--seconds", "0.2", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    doc = yaml.safe_load(out.read_text())
    cases = {p["case"]: p for p in doc["points"]}
    assert set(cases) == {"tiny", "tiny-fp8"}
    for p in cases.values():
        assert "error" not in p, p
        assert p["burst_median_s"] > 0 and p["sustained_median_s"] > 0
