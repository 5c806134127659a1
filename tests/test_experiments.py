"""Experiments (sim/experiments, sim/config/paths.py, `fleetsim sweep/mc/flip`): YAML paths,
Monte Carlo draws, executors (in-process, processes, a real Dask cluster with a killed worker),
resume, flip points against brute force, win probabilities, tornado, sensitivity indices, the
CLI's JSON and errors, and `fleetsim run` with an `analysis:` section."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
TINY = DATA / "tiny_experiments.yaml"
PRICE = "cards.l40s.price_usd"
GROWTH = "workloads.chat-8b.traffic.growth_per_year"
RATE = "finance.discount_rate"
SW = "software_rate_per_year.cuda"
ELEC = "site.electricity_usd_per_kwh"
OPTS = ("h100", "h100+l40s")
N_DRAWS = 2000  # draw values only (no pipeline runs)


# ---- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One capacity cache for the session, shared by both xdist workers and subprocesses."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    d = root / "fleetsim-experiments-cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(autouse=True)
def _cache_env(cache_dir, monkeypatch):
    monkeypatch.setenv("FLEETSIM_CACHE", str(cache_dir))


def _with_cache(cache_dir, fn):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLEETSIM_CACHE", str(cache_dir))
        return fn()


@pytest.fixture(scope="session")
def scn(lib):
    from sim.config.scenario import load_scenario

    return load_scenario(TINY, lib)


@pytest.fixture(scope="session")
def plan(scn):
    from sim.experiments import draws as D

    return D.plan(scn)


@pytest.fixture(scope="session")
def drawn(scn, plan):
    """(worlds, {path: values}) of N_DRAWS draws."""
    from sim.experiments import draws as D

    worlds, values = [], {}
    for i in range(N_DRAWS):
        w, v, _ = D.draw(plan, scn.seed, i, N_DRAWS)
        worlds.append(w)
        for k, x in v.items():
            values.setdefault(k, []).append(x)
    return np.array(worlds), values


@pytest.fixture(scope="session")
def mc(scn, lib, cache_dir):
    """24 Monte Carlo draws in process (3 batches)."""
    from sim.experiments.analyses import monte_carlo

    return _with_cache(cache_dir, lambda: monte_carlo(scn, 24, base=DATA, library=lib))


def _env(cache_dir) -> dict:
    env = {**os.environ, "COLUMNS": "250", "FLEETSIM_CACHE": str(cache_dir)}
    env.pop("FLEETSIM_LIBRARY", None)
    return env


def _fleetsim() -> list[str]:
    exe = Path(sys.executable).parent / "fleetsim"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sim.cli"]


def _cli(cache_dir, *args, timeout=180) -> subprocess.Popen:
    return subprocess.Popen([*_fleetsim(), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env=_env(cache_dir))


def _finish(p: subprocess.Popen, timeout: float = 180) -> tuple[int, str, str]:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise
    return p.returncode, out, err


def _points(scn, plan, n):
    from sim.experiments import draws as D
    from sim.experiments.runner import Point

    pts = []
    for i in range(n):
        world, values, fseed = D.draw(plan, scn.seed, i, n)
        pts.append(Point(i, values, fseed, {"world": world,
                                            **{f"in:{p}": v for p, v in values.items()}}))
    return pts


def _bytes(df: pd.DataFrame) -> bytes:
    return df.to_parquet(index=False)


def _records(rows) -> list[dict]:
    """JSON round trip with NaN as null (as the CLI prints them)."""
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v
    return json.loads(json.dumps([{k: clean(v) for k, v in r.items()} for r in rows]))


# ---- YAML paths ------------------------------------------------------------------------------

def test_paths_set_and_create(scn, lib):
    from sim.config.paths import EXPERIMENT_SOURCE, get_value, with_overrides

    assert "h100-sxm" not in scn.cards and not scn.efficiency
    new = with_overrides(scn, {PRICE: 9100, "cards.h100-sxm.price_usd": 25000,
                               "cards.h100-sxm.tdp_w": 650, "efficiency.l40s": 0.8,
                               "options.h100+l40s.buy[1].count": 4, GROWTH: 0.9}, lib)
    assert get_value(new, PRICE) == 9100
    assert new.cards["l40s"].source == scn.cards["l40s"].source  # an existing override kept
    assert new.cards["h100-sxm"].source == EXPERIMENT_SOURCE  # a created one says so
    assert get_value(new, "cards.h100-sxm.price_usd") == 25000
    assert get_value(new, "cards.h100-sxm.tdp_w") == 650
    assert new.efficiency == {"l40s": 0.8}
    assert new.options["h100+l40s"].buy[1].count == 4
    assert new.options["h100+l40s"].buy[0].count == 8
    assert new.workloads["chat-8b"].traffic.growth_per_year == 0.9
    # defaults are addressable, and the original is untouched
    assert get_value(scn, "finance.server_multiplier") == 1.65
    assert with_overrides(scn, {"finance.server_multiplier": 2.0}).finance.server_multiplier == 2
    assert get_value(scn, PRICE) == 8500 and "h100-sxm" not in scn.cards and not scn.efficiency


def test_paths_dotted_keys(lib, tmp_path):
    """Keys containing dots (an option named v1.5 next to one named v1) resolve greedily."""
    from sim.config.paths import get_value, with_overrides
    from sim.config.scenario import load_scenario

    doc = yaml.safe_load(TINY.read_text())
    doc["options"] = {"v1": doc["options"]["h100"], "v1.5": doc["options"]["h100+l40s"]}
    del doc["uncertain"], doc["correlations"]
    p = tmp_path / "dotted.yaml"
    p.write_text(yaml.safe_dump(doc))
    s = load_scenario(p, lib)
    assert get_value(s, "options.v1.5.buy[1].card") == "l40s"
    assert get_value(s, "options.v1.buy[0].count") == 16
    new = with_overrides(s, {"options.v1.5.buy[0].count": 3, "options.v1.buy[0].count": 5}, lib)
    assert new.options["v1.5"].buy[0].count == 3 and new.options["v1"].buy[0].count == 5
    new = with_overrides(s, {"options.v1.5.software.porting_engineer_years": 2.5}, lib)
    assert new.options["v1.5"].software.porting_engineer_years == 2.5
    assert new.options["v1"].software.porting_engineer_years == 0


@pytest.mark.parametrize("path, value, expect", [
    ("cards.l40s.prize_usd", 1, "did you mean 'price_usd'?"),
    ("workloads.chat-8b.trafic.peak_rps", 1, "did you mean 'traffic'?"),
    ("options.h100x.buy[0].count", 1, "did you mean 'h100'?"),
    ("finance.discount_rat", 0.1, "did you mean 'discount_rate'?"),
    ("options.h100+l40s.buy[5].count", 1, "has 2 entries, no [5]"),
    ("workloads.chat-8b.traffic.peak_rps[0]", 1, "is not a list"),
    ("finance", 0.1, "names a section, not a value"),
    ("a..b", 1, "is not a YAML path"),
    ("finance.discount_rate", 5, "must be <= 1"),
])
def test_paths_errors_are_one_line(scn, lib, path, value, expect):
    from sim.config.loader import ConfigError
    from sim.config.paths import with_overrides

    with pytest.raises(ConfigError) as exc:
        with_overrides(scn, {path: value}, lib, where="sweep")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("sweep: ") and expect in msg, msg


def test_get_value_unknown_path(scn):
    from sim.config.loader import ConfigError
    from sim.config.paths import get_value

    with pytest.raises(ConfigError, match=r"did you mean 'price_usd'\?"):
        get_value(scn, "cards.l40s.prize_usd")


# ---- draws -----------------------------------------------------------------------------------

def test_draw_i_uses_child_i_of_spawn(scn, plan, monkeypatch):
    from sim.experiments import draws as D

    seen = []
    real = D.draw_from
    monkeypatch.setattr(D, "draw_from", lambda p, child: seen.append(child) or real(p, child))
    n = 50
    children = np.random.SeedSequence(scn.seed).spawn(n)
    for i in (0, 1, 17, 49):
        got = D.draw(plan, scn.seed, i, n)
        child = seen[-1]
        assert (child.entropy, child.spawn_key) == (children[i].entropy, children[i].spawn_key)
        assert np.array_equal(child.generate_state(8), children[i].generate_state(8))
        assert got == real(plan, children[i])
    # a draw does not depend on how many draws there are, and draws differ
    assert D.draw(plan, scn.seed, 7, 10) == D.draw(plan, scn.seed, 7, N_DRAWS)
    assert D.draw(plan, scn.seed, 7, 10) != D.draw(plan, scn.seed, 8, 10)
    assert D.draw(plan, scn.seed, 7, 10) != D.draw(plan, scn.seed + 1, 7, 10)
    with pytest.raises(IndexError):
        D.draw(plan, scn.seed, 10, 10)


def test_plan_includes_fidelity_prior(scn, plan, lib):
    from sim.experiments import draws as D

    from sim.perf.software import rate_prior

    assert set(plan.paths) == {PRICE, GROWTH, RATE, "efficiency.h100-sxm", "efficiency.l40s",
                               SW}
    assert set(D.plan(scn, fidelity=False).paths) == {PRICE, GROWTH, RATE}
    f = D.fidelity_prior("l40s", scn.start)
    d = plan.dists[plan.paths.index("efficiency.l40s")]
    assert d.lognormal.median == f["median"] and d.lognormal.high == f["high"]
    # both cards run CUDA: one software-rate input, drawn from the stack's fit
    p = rate_prior("cuda", lib)
    d = plan.dists[plan.paths.index(SW)]
    assert (d.normal.mean, d.normal.sd, d.normal.low, d.normal.high) == (
        p["mean"], p["sd"], p["low"], p["high"])


def test_draw_values_within_bounds(drawn, plan, scn):
    from sim.experiments import draws as D

    _, v = drawn
    assert min(v[PRICE]) >= 10000 and max(v[PRICE]) <= 40000
    assert min(v[GROWTH]) >= 0.2 and max(v[GROWTH]) <= 1.0
    assert set(v[RATE]) == {0.05, 0.08, 0.12}
    sw = np.array(v[SW])  # the software rate: within its bounds, its median the default
    assert sw.min() >= 0 and sw.max() <= 1
    from sim.perf.software import default_rate
    from sim.config.library import Library

    assert abs(np.median(sw) - default_rate("cuda", Library.default())) < 0.01
    for card in ("h100-sxm", "l40s"):
        f = D.fidelity_prior(card, scn.start)
        x = np.array(v[f"efficiency.{card}"])
        assert x.min() >= f["low"] and x.max() <= f["high"]
        assert abs(np.median(x) - f["median"]) < 0.03  # bounds are wide: median ~ kept
    # the uniform is uniform, the triangular has its mode where it should
    assert abs(np.mean(v[PRICE]) - 25000) < 600
    assert abs(np.mean(v[GROWTH]) - (0.2 + 0.5 + 1.0) / 3) < 0.01


def test_truncated_normal_and_lognormal_match_scipy():
    """Truncated (not clipped): quantiles equal scipy's truncnorm, all inside the bounds."""
    from sim.config.scenario import distribution as Distribution
    from sim.experiments.draws import ppf

    u = np.concatenate([[0.0, 1e-12, 0.5, 1 - 1e-12, 1.0],
                        np.random.default_rng(0).random(2000)])
    d = Distribution(normal={"mean": 10, "sd": 4, "low": 8, "high": 20})
    x = ppf(d, u)
    assert x.min() >= 8 and x.max() <= 20
    ref = stats.truncnorm.ppf(u, (8 - 10) / 4, (20 - 10) / 4, loc=10, scale=4)
    assert np.allclose(x, ref, rtol=1e-9, atol=1e-9)
    assert (x == 8).mean() < 0.01  # clipping would pile ~31% of the mass on the bound

    d = Distribution(lognormal={"median": 6, "sigma": 0.6, "low": 3, "high": 9})
    x = ppf(d, u)
    assert x.min() >= 3 and x.max() <= 9
    ref = np.exp(stats.truncnorm.ppf(u, (np.log(3) - np.log(6)) / 0.6,
                                     (np.log(9) - np.log(6)) / 0.6, loc=np.log(6), scale=0.6))
    assert np.allclose(x, ref, rtol=1e-9)

    d = Distribution(normal={"mean": 1, "sd": 2, "low": 0})  # one-sided bound
    x = ppf(d, u[(u > 0) & (u < 1)])  # (a copula uniform is never exactly 0 or 1)
    assert x.min() >= 0 and np.isfinite(x).all() and x.max() > 5


def test_choice_weights_frequencies(drawn):
    _, v = drawn
    x = np.array(v[RATE])
    for val, p in ((0.05, 0.25), (0.08, 0.5), (0.12, 0.25)):
        assert abs((x == val).mean() - p) < 0.03, (val, (x == val).mean())


def test_copula_gives_rank_correlation(drawn):
    _, v = drawn
    rho = stats.spearmanr(v[PRICE], v[GROWTH]).statistic
    assert abs(rho - 0.6) < 0.035, rho
    for other in ("efficiency.l40s", "efficiency.h100-sxm"):  # uncorrelated inputs stay so
        assert abs(stats.spearmanr(v[PRICE], v[other]).statistic) < 0.06


def test_negative_rank_correlation(scn):
    from sim.config.paths import with_overrides
    from sim.experiments import draws as D

    s = with_overrides(scn, {"correlations": [{"between": [PRICE, GROWTH], "rank": -0.4}]})
    p = D.plan(s, fidelity=False)
    xs = [D.draw(p, s.seed, i, N_DRAWS)[1] for i in range(N_DRAWS)]
    rho = stats.spearmanr([x[PRICE] for x in xs], [x[GROWTH] for x in xs]).statistic
    assert abs(rho + 0.4) < 0.04, rho


def test_joint_world_frequency(drawn):
    worlds, v = drawn
    crunch = worlds == "power-crunch"
    assert set(worlds) == {"base", "power-crunch"}
    assert abs(crunch.mean() - 0.25) < 0.03, crunch.mean()
    assert len(v[ELEC]) == crunch.sum() and set(v[ELEC]) == {0.2}


# ---- executors, resume -----------------------------------------------------------------------

def test_processes_give_byte_identical_frames(scn, lib, mc, cache_dir):
    from sim.experiments.analyses import monte_carlo
    from sim.experiments.executors import Processes

    with Processes(2) as ex:
        other = monte_carlo(scn, 24, base=DATA, library=lib, executor=ex)
    assert other.draws["draw"].tolist() == mc.draws["draw"].tolist()
    assert _bytes(other.draws) == _bytes(mc.draws)
    assert other.win_probability == mc.win_probability


class _Interrupted(RuntimeError):
    pass


def test_resume_runs_only_the_remaining_batches(scn, lib, mc, tmp_path):
    from sim.experiments.analyses import monte_carlo
    from sim.experiments.executors import Executor
    from sim.experiments.runner import run_batch

    class FailAfter(Executor):
        def __init__(self, k):
            self.k = k

        def map(self, batches):
            for i, b in enumerate(batches):
                if i == self.k:
                    raise _Interrupted("killed")
                yield b.id, run_batch(b)

    class Counting(Executor):
        def __init__(self):
            self.ran = []

        def map(self, batches):
            for b in batches:
                self.ran.append(b.id)
                yield b.id, run_batch(b)

    out = tmp_path / "mc"
    with pytest.raises(_Interrupted):
        monte_carlo(scn, 24, base=DATA, library=lib, executor=FailAfter(1), out=out)
    parts = list((out / "parts").glob("*/batch-*.parquet"))
    assert [p.name for p in parts] == ["batch-00000.parquet"]
    counting = Counting()
    resumed = monte_carlo(scn, 24, base=DATA, library=lib, executor=counting, out=out)
    assert counting.ran == [1, 2]  # 24 draws in batches of 8: only the two unfinished
    assert _bytes(resumed.draws) == _bytes(mc.draws)
    assert resumed.win_probability == mc.win_probability
    again = Counting()
    monte_carlo(scn, 24, base=DATA, library=lib, executor=again, out=out)
    assert again.ran == []
    other = Counting()  # a different experiment does not reuse those parts
    monte_carlo(scn, 23, base=DATA, library=lib, executor=other, out=out)
    assert other.ran == [0, 1, 2]


# ---- a real Dask cluster ---------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, procs, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("dask scheduler exited")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"no scheduler on port {port}")


def test_dask_cluster_sweep_and_killed_worker(scn, lib, cache_dir, tmp_path):
    pytest.importorskip("distributed")
    from sim.experiments.analyses import sweep
    from sim.experiments.engine import execute
    from sim.experiments.executors import Dask
    from sim.experiments.runner import run_batch

    dask = Path(sys.executable).parent / "dask"
    if not dask.exists():
        pytest.skip("the `dask` command is not installed")
    grid = {PRICE: [9000, 20000, 35000], RATE: [0.05, 0.1]}
    ref = _with_cache(cache_dir, lambda: sweep(scn, grid, base=DATA, library=lib))
    pts = _points(scn, _plan_of(scn), 30)
    ref_mc = _with_cache(cache_dir, lambda: execute(scn, pts, base=DATA, library=lib,
                                                    batch_size=1))

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = _env(cache_dir)
    logs = [open(tmp_path / f"dask-{i}.log", "w") for i in range(3)]
    procs: list[subprocess.Popen] = []
    ex = None
    try:
        procs.append(subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
             "--no-dashboard"], stdout=logs[0], stderr=subprocess.STDOUT, cwd=REPO, env=env))
        _wait_port(port, procs)
        for i in (1, 2):
            procs.append(subprocess.Popen(
                [str(dask), "worker", addr, "--nthreads", "1", "--no-dashboard", "--no-nanny",
                 "--name", f"w{i}"], stdout=logs[i], stderr=subprocess.STDOUT, cwd=REPO,
                env=env))

        # 1. `fleetsim sweep --dask tcp://...` equals the in-process sweep
        r = _cli(cache_dir, "sweep", TINY, "--set", f"{PRICE}=9000,20000,35000",
                 "--set", f"{RATE}=0.05,0.1", "--dask", addr, "--json",
                 "--out", tmp_path / "sweep")
        rc, out, err = _finish(r)
        assert rc == 0, err
        got = json.loads(out)
        assert got["points"] == 6
        assert got["rows"] == _records(ref.to_dict(orient="records"))

        ex = Dask(addr)
        ex.client.wait_for_workers(2, timeout=60)
        pids = ex.client.run(os.getpid)
        assert _ran_on_workers(ex), "the sweep did not run on the cluster's workers"

        # 2. an interrupted experiment still holding its futures does not leak its results
        # into the next one with the same batch ids
        a, b = _batches(scn, lib, 10000), _batches(scn, lib, 50000)
        held = ex.map(a)
        next(held)
        got_b = dict(ex.map(b))
        for x in b:
            assert got_b[x.id].equals(run_batch(x)), x.id
        held.close()

        # 3. a worker killed mid-run loses nothing: its tasks are retried on the other one
        by_pid = {p.pid: p for p in procs[1:]}
        killed: dict = {}

        def progress(done: int, total: int) -> None:
            if done >= 1 and not killed:
                busy = ex.client.processing()
                victim = max(busy, key=lambda w: len(busy[w]))
                killed["in_flight"] = list(busy[victim])
                killed["done"] = done
                proc = by_pid[pids[victim]]
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                killed["proc"] = proc

        got_mc = execute(scn, pts, base=DATA, library=lib, executor=ex, batch_size=1,
                         progress=progress)
        assert killed and killed["proc"].returncode == -signal.SIGKILL
        assert killed["in_flight"], "the killed worker held no task"
        assert killed["done"] < 30
        assert len(ex.client.scheduler_info()["workers"]) == 1
        assert got_mc["point"].nunique() == 30
        assert _bytes(got_mc) == _bytes(ref_mc)
    finally:
        if ex is not None:
            ex.close()
        for p in reversed(procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for f in logs:
            f.close()


def _plan_of(scn):
    from sim.experiments import draws as D

    return D.plan(scn)


def _batches(scn, lib, price: float):
    from sim.experiments.runner import Batch, Point, scenario_json

    roots = tuple(str(Path(r).resolve()) for r in lib.roots)
    return [Batch(i, scenario_json(scn), str(DATA), roots, (Point(i, {PRICE: price + i}),))
            for i in range(3)]


def _ran_on_workers(ex) -> bool:
    """Did the cluster's workers import the run stages (only running a batch does)?"""
    def imported() -> bool:
        return "sim.stages" in sys.modules
    return any(ex.client.run(imported).values())


# ---- flip points -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def brute(scn, lib, cache_dir):
    """NPV(h100) - NPV(h100+l40s) on a fine grid of the L40S price."""
    from sim.experiments.analyses import sweep

    xs = [float(x) for x in np.linspace(5000, 80000, 31)]
    df = _with_cache(cache_dir, lambda: sweep(scn, {PRICE: xs}, base=DATA, library=lib))
    a = df[df.option == OPTS[0]].set_index(PRICE)["npv_usd"]
    b = df[df.option == OPTS[1]].set_index(PRICE)["npv_usd"]
    return np.array(xs), (a - b).reindex(xs).to_numpy()


def test_flip_point_inside_brute_force_bracket(scn, lib, brute):
    from sim.experiments.analyses import flip
    from sim.stages import run
    from sim.config.paths import with_overrides

    xs, d = brute
    change = [i for i in range(len(d) - 1) if np.sign(d[i]) != np.sign(d[i + 1])]
    assert len(change) == 1  # the test scenario has one flip in the range
    lo, hi = xs[change[0]], xs[change[0] + 1]
    res = flip(scn, PRICE, (5000, 80000), OPTS, base=DATA, library=lib)
    assert res.value is not None and lo <= res.value <= hi, (res.value, lo, hi)
    assert res.bracket == (5000.0, 80000.0)
    assert res.below == "h100+l40s" and res.above == "h100"  # the L40S option is cheaper below
    r = run(with_overrides(scn, {PRICE: res.value}, lib), lib, base=DATA, detail=False)
    o = r.summary["options"]
    assert abs(o[OPTS[0]]["npv_usd"] - o[OPTS[1]]["npv_usd"]) < 1e-4 * np.ptp(d)
    j = res.to_json()
    assert j["param"] == PRICE and j["value"] == res.value and j["bracket"] == [5000, 80000]


def test_no_flip_in_range(scn, lib, brute):
    from sim.experiments.analyses import flip

    xs, d = brute
    inside = (xs >= 5000) & (xs <= 20000)
    assert (np.sign(d[inside]) == 1).all()  # brute force: no sign change there
    res = flip(scn, PRICE, (5000, 20000), OPTS, base=DATA, library=lib)
    assert res.value is None
    assert res.below == res.above == "h100+l40s"
    assert res.statement().startswith("no flip in range")
    assert res.to_json()["value"] is None


# ---- Monte Carlo outputs, tornado, indices ---------------------------------------------------

def test_win_probabilities_sum_to_one(mc):
    w = mc.win_probability
    assert set(w) == {*OPTS, "none"}
    assert math.isclose(sum(w.values()), 1.0, abs_tol=1e-12)
    assert all(0 <= p <= 1 for p in w.values())
    # independently: per draw, the cheapest option among those meeting the SLOs
    df = mc.draws
    n = df["draw"].nunique()
    assert n == 24
    won = (df[df.meets_slo].sort_values("npv_usd").groupby("draw")["option"].first()
           .value_counts())
    for o in OPTS:
        assert w[o] == pytest.approx(won.get(o, 0) / n)
    assert 0 < w["h100"] < 1  # both options win some draws in this scenario
    conv = mc.convergence[mc.convergence.draws == n].set_index("option")["win_probability"]
    assert conv.to_dict() == pytest.approx(w)


def test_win_probability_counts_draws_no_option_meets():
    from sim.experiments.analyses import summarise_draws

    rows = []
    for d in range(10):
        ok = d % 5 != 0  # draws 0 and 5: no option meets the SLOs
        for o, npv in (("a", 1.0 + d % 2), ("b", 1.5)):
            rows.append({"draw": d, "option": o, "npv_usd": npv, "usd_per_m_tokens": 1.0,
                         "meets_slo": ok, "winner": ok and o == ("a" if d % 2 == 0 else "b")})
    res = summarise_draws(pd.DataFrame(rows), [])
    assert res.win_probability == pytest.approx({"a": 0.4, "b": 0.4, "none": 0.2})
    assert math.isclose(sum(res.win_probability.values()), 1.0)


def test_mc_percentiles(mc):
    for r in mc.percentiles.itertuples():
        x = mc.draws.loc[mc.draws.option == r.option, "npv_usd"].to_numpy()
        assert r.npv_p5 == pytest.approx(np.percentile(x, 5))
        assert r.npv_p50 == pytest.approx(np.median(x))
        assert r.npv_p95 == pytest.approx(np.percentile(x, 95))
        assert r.npv_p5 <= r.npv_p50 <= r.npv_p95


@pytest.fixture(scope="session")
def tornado_df(scn, lib, cache_dir):
    from sim.experiments.analyses import tornado

    return _with_cache(cache_dir, lambda: tornado(scn, base=DATA, library=lib))


def test_tornado_columns_and_percentiles(tornado_df, scn, lib, drawn):
    from sim.config.paths import with_overrides
    from sim.experiments import draws as D
    from sim.stages import run

    t = tornado_df
    assert list(t.columns) == ["input", "option", "low_value", "high_value", "npv_low_usd",
                               "npv_high_usd", "base_npv_usd", "swing_usd"]
    assert set(t.input) == {PRICE, GROWTH, RATE, "efficiency.h100-sxm", "efficiency.l40s", SW}
    assert len(t) == 6 * 2
    ends = t.groupby("input")[["low_value", "high_value"]].first()
    assert tuple(ends.loc[PRICE]) == pytest.approx((13000, 37000))  # uniform [10000, 40000]
    a, c, b = 0.2, 0.5, 1.0  # triangular: closed-form quantiles
    q10 = a + math.sqrt(0.1 * (b - a) * (c - a))
    q90 = b - math.sqrt(0.1 * (b - a) * (b - c))
    assert tuple(ends.loc[GROWTH]) == pytest.approx((q10, q90))
    assert tuple(ends.loc[RATE]) == (0.05, 0.12)  # a choice: first and last
    f = D.fidelity_prior("l40s", scn.start)
    lo = (math.log(f["low"]) - math.log(f["median"])) / f["sigma"]
    hi = (math.log(f["high"]) - math.log(f["median"])) / f["sigma"]
    ref = np.exp(stats.truncnorm.ppf([0.1, 0.9], lo, hi, math.log(f["median"]), f["sigma"]))
    assert tuple(ends.loc["efficiency.l40s"]) == pytest.approx(tuple(ref))
    _, v = drawn  # and they are the 10th / 90th percentiles of the Monte Carlo draws
    for path in (PRICE, GROWTH, "efficiency.l40s"):
        emp = np.percentile(v[path], [10, 90])
        span = np.ptp(v[path])
        assert abs(emp[0] - ends.loc[path, "low_value"]) < 0.03 * span
        assert abs(emp[1] - ends.loc[path, "high_value"]) < 0.03 * span
    # each NPV is that of a plain run with the one input set; swings sorted, largest first
    base = run(scn, lib, base=DATA, detail=False).summary["options"]
    r = run(with_overrides(scn, {PRICE: 37000}, lib), lib, base=DATA, detail=False)
    row = t[(t.input == PRICE) & (t.option == "h100+l40s")].iloc[0]
    assert row.npv_high_usd == r.summary["options"]["h100+l40s"]["npv_usd"]
    assert row.base_npv_usd == base["h100+l40s"]["npv_usd"]
    assert (t.swing_usd == (t.npv_high_usd - t.npv_low_usd).abs()).all()
    top = t.groupby("input", sort=False)["swing_usd"].max().to_numpy()
    assert (np.diff(top) <= 0).all() and t.input.iloc[0] == PRICE


def test_first_order_indices_find_dominant_input():
    from sim.experiments.analyses import first_order_indices

    rng = np.random.default_rng(1)
    n = 2000
    x1, x2 = rng.random(n), rng.random(n)
    x3 = rng.choice(["a", "b", "c"], n).astype(object)
    y = 10 * x1 + 2 * x2 + rng.normal(0, 0.5, n)
    df = pd.DataFrame({"draw": np.arange(n), "option": "o", "npv_usd": y, "in:x1": x1,
                       "in:x2": x2, "in:x3": x3})
    s = first_order_indices(df, ["x1", "x2", "x3"]).set_index("input")["first_order_index"]
    assert ((s >= 0) & (s <= 1)).all()
    # analytic: Var(10 x1) / Var(y) = (100/12) / (100/12 + 4/12 + 0.25)
    assert s["x1"] == pytest.approx((100 / 12) / (104 / 12 + 0.25), abs=0.03)
    assert s["x2"] < 0.08 and s["x3"] < 0.02
    assert s.idxmax() == "x1"


def test_mc_sensitivity_indices_in_range(mc):
    s = mc.sensitivity
    assert set(s.columns) == {"input", "option", "first_order_index"} and len(s)
    assert ((s.first_order_index >= 0) & (s.first_order_index <= 1)).all()
    h = s[s.option == "h100+l40s"].set_index("input")["first_order_index"]
    assert h.idxmax() == PRICE  # the L40S option's NPV moves with the L40S price


# ---- CLI -------------------------------------------------------------------------------------

def test_cli_mc_and_flip_json(scn, lib, cache_dir, mc, tmp_path):
    mc_p = _cli(cache_dir, "mc", TINY, "--draws", 24, "--json", "--out", tmp_path / "mc")
    flip_p = _cli(cache_dir, "flip", TINY, "--param", PRICE, "--between", 5000, 80000,
                  "--options", *OPTS, "--json", "--out", tmp_path / "flip")
    none_p = _cli(cache_dir, "flip", TINY, "--param", PRICE, "--between", 5000, 20000,
                  "--options", *OPTS, "--json", "--out", tmp_path / "flip2")
    rc, out, err = _finish(mc_p)
    assert rc == 0, err
    j = json.loads(out)
    assert j["draws"] == 24
    assert set(j["win_probability"]) == {*OPTS, "none"}
    assert math.isclose(sum(j["win_probability"].values()), 1.0)
    assert j["win_probability"] == pytest.approx(mc.win_probability)
    for o in OPTS:
        q = j["npv_usd"][o]
        assert q["p5"] <= q["p50"] <= q["p95"]
        assert q["p50"] == pytest.approx(mc.to_json()["npv_usd"][o]["p50"])
    assert (tmp_path / "mc" / "mc.json").is_file() and (tmp_path / "mc" / "mc.html").is_file()

    rc, out, err = _finish(flip_p)
    assert rc == 0, err
    j = json.loads(out)
    assert j["param"] == PRICE and j["bracket"] == [5000, 80000]
    assert isinstance(j["value"], float) and 5000 < j["value"] < 80000

    rc, out, err = _finish(none_p)
    assert rc == 0, err
    j = json.loads(out)
    assert j["value"] is None and j["bracket"] == [5000, 20000]


def test_cli_bad_input_one_line_exit_2(cache_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("uniform: [10000, 40000]",
                                            "uniform: [40000, 10000]"))
    cases = {
        "unknown path": (["sweep", TINY, "--set", "cards.l40s.prize_usd=1,2", "--json",
                          "--out", tmp_path / "s"], "did you mean 'price_usd'?"),
        "low > high": (["mc", bad, "--draws", 5, "--json", "--out", tmp_path / "m"],
                       "low 40000"),
        "zero draws": (["mc", TINY, "--draws", 0, "--json", "--out", tmp_path / "z"],
                       "--draws"),
    }
    procs = {k: _cli(cache_dir, *args) for k, (args, _) in cases.items()}
    for k, p in procs.items():
        rc, out, err = _finish(p)
        lines = err.strip().splitlines()
        assert rc == 2, (k, rc, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (k, err)
        assert cases[k][1] in lines[0], (k, lines[0])
        assert "Traceback" not in err and out == ""


def test_run_writes_analyses_and_report_sections(lib, cache_dir, tmp_path, monkeypatch):
    from sim.cli import main

    doc = yaml.safe_load(TINY.read_text())
    doc["analysis"] = {"monte_carlo": 16, "tornado": True,
                       "flip": [{"param": PRICE, "between": [5000, 80000],
                                 "options": list(OPTS)}]}
    scn_file = tmp_path / "with-analysis.yaml"
    scn_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "out"
    monkeypatch.setenv("COLUMNS", "200")
    main(["run", str(scn_file), "--out", str(out)])
    j = json.loads((out / "results" / "analysis.json").read_text())
    assert j["monte_carlo"]["draws"] == 16
    assert math.isclose(sum(j["monte_carlo"]["win_probability"].values()), 1.0)
    assert j["flip"][0]["param"] == PRICE and 5000 < j["flip"][0]["value"] < 80000
    assert (out / "results" / "mc_draws.parquet").is_file()
    html = (out / "report.html").read_text()
    for sid, title in (("monte-carlo", "Monte Carlo"), ("tornado", "Tornado"),
                       ("flip", "Flip points")):
        assert f'<section id="{sid}">' in html and title in html
    assert "cheaper below cards.l40s.price_usd" in html
    md = (out / "report.md").read_text()
    assert "## Monte Carlo" in md and "## Tornado" in md and "## Flip points" in md
