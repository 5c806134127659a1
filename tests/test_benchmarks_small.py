"""Small versions of every benchmark (the full ones run from `make bench`): they must run end
to end and write their results; targets are checked on the recorded full runs, not here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


def test_fidelity_benchmark_runs(tmp_path):
    """Every MLPerf offline row with a library card is predicted with an engine of the card's
    stack, released by the round's date unless flagged, and the summary is computed from them."""
    from sim.config.library import Library

    mod = _load("fidelity_mlperf")
    mod.main(out_dir=tmp_path)
    data = json.loads((tmp_path / "fidelity_mlperf.json").read_text())
    pts = data["points"]
    assert len(pts) >= 30
    assert {p["benchmark"] for p in pts} == {"llama2-70b", "mixtral-8x7b", "llama3.1-405b",
                                             "llama3.1-8b"}
    lib = Library.default()
    for p in pts:
        e = lib.engine(p["engine"])
        assert p["card"] in e.runs_on
        newer = e.release_date[:7] > mod.ROUND_DATE[p["round"]]
        assert newer == ("engine newer than the round" in p["flags"]), p
        assert p["error"] == pytest.approx(p["predicted_tok_s_per_card"]
                                           / p["published_tok_s_per_card"] - 1, abs=1e-3)
    s = data["summary"]
    assert s["n"] == len(pts) and set(s["by_vendor"]) == {"NVIDIA", "AMD", "Intel"}
    assert "offline rows: median |error|" in (tmp_path / "fidelity_mlperf.md").read_text()


def test_serving_speed_benchmark_small(tmp_path):
    out = _load("serving_speed").main(max_requests=400, out_dir=tmp_path)
    assert out["requests"] == 400
    assert out["max_relative_timestamp_difference"] < 1e-9
    assert out["fast_events"] < out["token_events"]


def test_mlperf_server_benchmark_small(tmp_path):
    rows = _load("mlperf_server").main(requests=300, cards=("h200-sxm",), out_dir=tmp_path,
                                       benchmarks=("llama2-70b",))
    assert {r["round"] for r in rows} == {"v4.0", "v4.1", "v5.0"}
    assert all(r["max_rate_rps_per_replica"] > 0 and r["engine"].startswith("trtllm-")
               for r in rows)
    assert (tmp_path / "mlperf_server.md").is_file()


def test_fleet_speed_benchmark_small(tmp_path):
    out = _load("fleet_speed").main(repeats=3, out_dir=tmp_path)
    assert out["hours"] == 5 * 8760 and out["median_ms"] > 0


def test_run_speed_benchmark_small(tmp_path):
    out = _load("run_speed").main("tests/data/tiny_scenario.yaml", out_dir=tmp_path)
    assert out["cold_s"] > 0 and out["warm_s"] > 0 and (tmp_path / "run_speed.md").is_file()


def test_scale_benchmark_small(tmp_path):
    out = _load("scale").main(requests=3000, options=3, years=2.0, out_dir=tmp_path)
    assert out["replay"]["finished"] == 3000 and out["replay_small"]["finished"] == 300
    assert out["horizon"]["options"] == 3 and out["horizon"]["hours"] == 2 * 8760
    assert "peak RSS" in (tmp_path / "scale.md").read_text()


def test_fuzz_large_benchmark_small(tmp_path):
    out = _load("fuzz_large").main(scale=0.02, workers=1, out_dir=tmp_path)
    assert out["passed"] and len(out["tests"]) == 6 and out["cases"] >= 6 * 5
    assert (tmp_path / "fuzz_large.md").is_file()


def test_fidelity_serving_small(tmp_path):
    """A handful of validation rows at 40 prompts each: the serving fidelity benchmark runs end
    to end and writes its files (targets are judged on the full run in make bench)."""
    mod = _load("fidelity_serving")
    ids = ["gpustack-qwen3-14b-a100/random-2k", "gpustack-gpt-oss-120b-h100/sharegpt-c4",
           "gpustack-deepseek-r1-h200/random-2k", "vllm-recipes-llama3.3-70b-rocm/mxfp4-8k1k-c64"]
    res = mod.main(out_dir=tmp_path, num_prompts=40, ids=ids)
    assert res["runs"] == 4 and res["split"] == "validate"
    assert {r["run"] for r in res["rows"]} == set(ids)
    assert set(res["summary"]) == {"e2e_ms", "ttft_ms", "tpot_ms"}
    assert (tmp_path / "fidelity_serving.md").read_text().startswith("# Serving fidelity")
    assert res["wall_s"] < 30
