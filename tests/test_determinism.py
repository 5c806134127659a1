"""Determinism: one scenario and seed give byte-identical results (every Parquet file,
summary.json, the reports and the resolved scenario) across runs, across separate processes
with different hash seeds and cold caches, and in process through `sim.run`; another seed
gives other results.

tests/test_run.py checks two CLI runs of summary.json and two Parquet files; this covers every
file written, Python's hash randomisation (set iteration order), the in-process API and the
seed's effect.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_scenario.yaml"
FILES = ("summary.json", "results/per_year.parquet", "results/per_hour.parquet",
         "results/capacity.parquet", "results/software.parquet", "report.md", "report.html",
         "scenario.resolved.yaml")


def _cli(scenario: Path, out: Path, cache: Path, hash_seed: str):
    env = {**os.environ, "COLUMNS": "200", "FLEETSIM_CACHE": str(cache),
           "PYTHONHASHSEED": hash_seed}
    r = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(scenario), "--out",
                        str(out)], capture_output=True, text=True, cwd=REPO, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("det")
    a = _cli(TINY, d / "a", d / "cache-a", "1")
    b = _cli(TINY, d / "b", d / "cache-b", "2")  # another process, hash seed and cold cache
    other = d / "seed4.yaml"
    other.write_text(TINY.read_text().replace("seed: 3\n", "seed: 4\n"))
    c = _cli(other, d / "c", d / "cache-a", "3")
    return d, a, b, c


def _written(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_same_seed_same_bytes_across_processes(outputs):
    _, a, b, _ = outputs
    assert _written(a) == _written(b)
    for rel in FILES:
        assert rel in _written(a), rel
    for rel in _written(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_in_process_run_matches_the_cli(outputs, tmp_path, monkeypatch):
    import sim
    from sim.stages import RunCache

    _, a, _, _ = outputs
    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path / "cache"))
    memo = RunCache()
    res = sim.run(TINY, cache=memo)
    out = res.to_dir(tmp_path / "inproc")
    for rel in _written(a):
        assert (a / rel).read_bytes() == (out / rel).read_bytes(), rel
    again = sim.run(TINY, cache=memo)  # warm in-process memo: still the same numbers
    assert again.summary == res.summary
    assert again.per_hour.equals(res.per_hour) and again.per_year.equals(res.per_year)


def test_another_seed_gives_other_results(outputs):
    _, a, _, c = outputs
    for rel in ("results/per_hour.parquet", "summary.json", "results/per_year.parquet"):
        assert (a / rel).read_bytes() != (c / rel).read_bytes(), rel


def test_serving_replay_is_deterministic_per_seed(lib, hw_cache):
    from sim.perf.memory import Layout
    from sim.perf.precision import Precision
    from sim.serving.simulate import ServeSetup, simulate
    from sim.serving.traffic import LognormalLengths, PoissonTraffic

    setup = ServeSetup(lib.model("llama-3.1-8b"), hw_cache("h100-sxm"), Precision.preset("fp8"),
                       Layout(tp=1), replicas=3, router="power_of_two", seed=5)
    lengths = LognormalLengths(500, 400, 150, 100)

    def arrays(seed, router_seed=5):
        import dataclasses

        res = simulate(dataclasses.replace(setup, seed=router_seed),
                       PoissonTraffic(40.0, 400, lengths, seed))
        return [res.rid, res.replica, res.first_token_s, res.finish_s]

    a, b, c, d = arrays(1), arrays(1), arrays(2), arrays(1, router_seed=6)
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
    assert any(x.tobytes() != y.tobytes() for x, y in zip(a, c))
    assert any(x.tobytes() != y.tobytes() for x, y in zip(a, d))  # the router's own seed
