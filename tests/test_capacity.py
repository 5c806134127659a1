"""Capacity curves and the SLO-constrained max-rate search, with the on-disk cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.perf.memory import Layout
from sim.perf.precision import Precision
from sim.serving.capacity import (cache_key, cached, capacity_curve, max_rate, meets,
                                   run_point)
from sim.serving.metrics import Slo, summarize
from sim.serving.simulate import ServeSetup, simulate
from sim.serving.traffic import LognormalLengths, PoissonTraffic

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(lib):
    from sim.perf.hardware import Hardware

    return ServeSetup(lib.model("llama-3.1-8b"), Hardware.load("h100-sxm", lib),
                      Precision.preset("fp8"), Layout(tp=1))


@pytest.fixture(scope="module")
def traffic_at(lib):
    lengths = LognormalLengths.from_mix(lib.lengths("mlperf-llama2-70b"))
    return lambda rate, seed: PoissonTraffic(rate, 600, lengths, seed)


def test_curve_is_monotone_with_common_random_numbers(setup, traffic_at):
    df = capacity_curve(setup, traffic_at, [5, 20, 40, 80, 160], Slo(2000, 200))
    assert (df["ttft_p99_ms"].diff().dropna() >= 0).all()
    assert (df["tokens_per_s"].diff().dropna() > 0).all()
    assert df["meets_slo"].iloc[0] and not df["meets_slo"].iloc[-1]


def test_max_rate_sits_on_the_slo_boundary(setup, traffic_at):
    slo = Slo(ttft_ms=1000, tpot_ms=100)
    cap = max_rate(setup, traffic_at, slo, rel_tol=0.02)
    assert cap.confirm_seed_meets
    assert cap.summary["ttft_ms"]["p99"] <= 1000
    above = capacity_curve(setup, traffic_at, [cap.bracket[1] * 1.05], slo)
    assert not above["meets_slo"].iloc[0]
    assert cap.tokens_per_s_per_card == cap.tokens_per_s  # TP1: one card per replica


def test_a_short_burst_does_not_certify_capacity(setup, lib):
    """A rate the replica cannot sustain can still pass the SLOs over a burst of a few hundred
    requests (the queue has no time to build). The search lengthens a run until its arrivals
    span several in-service times, so a short run finds no more capacity than a long one."""
    lengths = LognormalLengths.from_mix(lib.lengths("mlperf-llama2-70b"))
    slo = Slo(ttft_ms=2000, tpot_ms=100)
    long_at = lambda rate, seed: PoissonTraffic(rate, 2500, lengths, seed)  # noqa: E731
    short_at = lambda rate, seed: PoissonTraffic(rate, 150, lengths, seed)  # noqa: E731
    sustained = max_rate(setup, long_at, slo, rel_tol=0.05)
    over = sustained.bracket[1] * 1.5  # well above what the replica sustains
    burst = summarize(simulate(setup, short_at(over, 0)), slo)
    assert meets(burst, slo), "the raw burst passes: the trap this guards against"
    point = run_point(setup, short_at, over, 0, slo)
    assert point["requests_simulated"] > 150 and not point["meets_slo"]
    short = max_rate(setup, short_at, slo, rel_tol=0.05)
    assert short.max_rate_rps <= sustained.max_rate_rps * 1.05
    assert short.summary["steady"]


def test_cache_is_keyed_on_inputs_and_files(setup, tmp_path, monkeypatch, lib):
    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "cal.yaml"
    f.write_text("a: 1\n")
    k1 = cache_key(setup, {"x": 1}, [f])
    assert k1 == cache_key(setup, {"x": 1}, [f])
    assert k1 != cache_key(setup, {"x": 2}, [f])
    f.write_text("a: 2\n")
    assert k1 != cache_key(setup, {"x": 1}, [f])
    calls = []
    v = cached(k1, lambda: calls.append(1) or {"v": 3.5})
    assert cached(k1, lambda: calls.append(1) or {"v": 0}) == v == {"v": 3.5}
    assert calls == [1]
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_cli_capacity(tmp_path):
    env = {**os.environ, "FLEETSIM_CACHE": str(tmp_path), "COLUMNS": "200"}
    args = [sys.executable, "-m", "sim.cli", "capacity", "--card", "h100-sxm", "--model",
            "llama-3.1-8b", "--precision", "fp8", "--requests", "400", "--json"]
    r = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["max_rate_rps_per_replica"] > 0 and out["tp"] == 1
    assert list(tmp_path.glob("*.json"))
