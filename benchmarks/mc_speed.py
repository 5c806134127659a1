"""Monte Carlo speed: N draws (default 1,000) of scenarios/flagship.yaml.

- in process (reference) and on 2 local worker processes (`Processes(2)`; target <= 60 s on
  the 2-core machine);
- on Dask, a `LocalCluster` with 1 and with 2 single-threaded workers (`Dask("local", k)`):
  speed-up of 2 workers over 1 (target >= 1.6x); cluster start-up (cluster and client, then
  importing the pipeline on every worker) is excluded from the run time and reported;
- every executor's draws frame must be byte-identical (Parquet bytes), or the benchmark fails.

The capacity cache is warmed first by one pipeline run on an empty cache (reported apart), so
every timed run reruns only the fleet and the cost per draw. Draws run in the engine's default
batches (8 draws, ~0.5 s a task on the flagship).

The machine is shared: each phase waits for the rest of the machine to go quiet, and records the
CPU the rest of the machine used during it (busy time from /proc/stat minus this benchmark's
own); a Dask pair run beside other work is repeated.
Writes benchmarks/results/mc_speed.md/.json; `make bench` runs it.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores; /proc/stat, 0 elsewhere)."""
    try:
        v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    except OSError:
        return 0.0
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (the `Processes` pool)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def _worker_cpu_s() -> float:  # runs on each Dask worker
    import resource as r
    u = r.getrusage(r.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _others_now(seconds: float = 2.0) -> float:
    """Cores the rest of the machine uses while this process sleeps."""
    b0, o0, t0 = _busy_s(), _own_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    return max(0.0, (_busy_s() - b0 - (_own_cpu_s() - o0)) / (time.perf_counter() - t0))


def _wait_quiet(threshold: float, max_wait_s: float) -> dict:
    """Wait (up to max_wait_s) until the rest of the machine uses < threshold cores."""
    t0 = time.perf_counter()
    while True:
        o = _others_now()
        waited = time.perf_counter() - t0
        if o < threshold or waited >= max_wait_s:
            return {"others_cores": round(o, 2), "waited_s": round(waited, 1),
                    "load_1min": round(os.getloadavg()[0], 2)}


def main(draws: int = 1000, scenario: str = "scenarios/flagship.yaml", dask: bool = True,
         out_dir: Path | None = None, quiet_cores: float = 0.3, max_wait_s: float = 300,
         attempts: int = 3) -> dict:
    """`quiet_cores`: a phase starts once the rest of the machine uses fewer cores than this
    (waiting at most `max_wait_s`); a Dask pair (1 then 2 workers) during which others used
    more is run again, up to `attempts` pairs (every attempt is recorded)."""

    saved = os.environ.get("FLEETSIM_CACHE")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FLEETSIM_CACHE"] = str(Path(tmp) / "cache")  # workers inherit it
        try:
            return _run(draws, scenario, dask, out_dir, quiet_cores, max_wait_s, attempts)
        finally:
            if saved is None:
                os.environ.pop("FLEETSIM_CACHE", None)
            else:
                os.environ["FLEETSIM_CACHE"] = saved


def _run(draws: int, scenario: str, dask: bool, out_dir: Path | None, quiet_cores: float,
         max_wait_s: float, attempts: int) -> dict:
    from sim.config.library import Library
    from sim.config.scenario import load_scenario
    from sim.experiments.analyses import monte_carlo
    from sim.experiments.executors import Dask, Executor, Processes
    from sim.pipeline import run

    lib = Library.default()
    path = REPO / scenario
    scn = load_scenario(path, lib)
    base = path.parent
    out: dict = {"scenario": scenario, "draws": draws, "cpu_count": os.cpu_count(),
                 "python": platform.python_version(), "machine": platform.machine(),
                 "batch_draws": 8, "phases": {}}

    t0 = time.perf_counter()
    run(scn, lib, base=base, detail=False)  # empty cache: the serving capacity searches
    out["cache_warmup_s"] = time.perf_counter() - t0

    frames = {}

    def phase(name: str, ex: Executor, extra: dict | None = None) -> dict:
        before = _wait_quiet(quiet_cores, max_wait_s)
        dask_client = getattr(ex, "client", None)
        w0 = sum(dask_client.run(_worker_cpu_s).values()) if dask_client else 0.0
        b0, o0, t = _busy_s(), _own_cpu_s(), time.perf_counter()
        res = monte_carlo(scn, draws, base=base, library=lib, executor=ex)
        wall = time.perf_counter() - t
        w1 = sum(dask_client.run(_worker_cpu_s).values()) if dask_client else 0.0
        ours = _own_cpu_s() - o0 + w1 - w0
        others = max(0.0, (_busy_s() - b0 - ours) / wall) if b0 else float("nan")
        frames[name] = res.draws.to_parquet(index=False)
        rec = {"seconds": wall, "draws_per_s": draws / wall, "cpu_s": ours,
               "others_cores_during": round(others, 2), "before": before,
               "load_1min_after": round(os.getloadavg()[0], 2), **(extra or {})}
        out.setdefault("win_probability", res.win_probability)
        print(f"{name}: {wall:.1f} s ({draws / wall:.1f} draws/s, {ours:.1f} CPU s); other "
              f"processes used {others:.2f} cores during it; before: {before}", flush=True)
        return rec

    ph = out["phases"]
    ph["in-process"] = phase("in-process", Executor())
    with Processes(2) as ex:
        ph["processes-2"] = phase("processes-2", ex)
    if dask:
        import importlib

        out["dask_attempts"] = []
        for attempt in range(attempts):
            pair = {}
            for k in (1, 2):
                t = time.perf_counter()
                ex = Dask("local", k)
                try:
                    cluster_s = ex.startup_s
                    t1 = time.perf_counter()
                    ex.client.run(importlib.import_module, "sim.pipeline")
                    import_s = time.perf_counter() - t1
                    pair[f"dask-{k}"] = phase(f"dask-{k}", ex, {
                        "startup_s": time.perf_counter() - t, "cluster_start_s": cluster_s,
                        "worker_import_s": import_s})
                finally:
                    ex.close()
            pair["speedup"] = pair["dask-1"]["seconds"] / pair["dask-2"]["seconds"]
            pair["contended"] = any(pair[k]["others_cores_during"] >= quiet_cores
                                    for k in ("dask-1", "dask-2"))
            out["dask_attempts"].append(pair)
            print(f"attempt {attempt + 1}: speed-up {pair['speedup']:.2f}x"
                  f"{' (contended)' if pair['contended'] else ''}", flush=True)
            if not pair["contended"]:
                break
        best = min(out["dask_attempts"], key=lambda p: max(
            p[k]["others_cores_during"] for k in ("dask-1", "dask-2")))
        ph["dask-1"], ph["dask-2"] = best["dask-1"], best["dask-2"]
        out["dask_speedup"] = best["speedup"]
        out["dask_contended"] = best["contended"]

    ref = frames["in-process"]
    out["identical"] = all(b == ref for b in frames.values())
    assert out["identical"], {k: b == ref for k, b in frames.items()}
    p2 = out["phases"]["processes-2"]["seconds"]
    out["targets"] = {"processes_2_le_60s": p2 <= 60.0}
    if dask:
        out["targets"]["dask_speedup_ge_1.6"] = out["dask_speedup"] >= 1.6

    rows = ["| executor | seconds | draws/s | CPU s used | other processes' cores during "
            "(before) | start-up (excluded) |", "|---|---|---|---|---|---|"]
    for name, v in ph.items():
        st = (f"{v['startup_s']:.1f} s (cluster {v['cluster_start_s']:.1f} s, importing the "
              f"pipeline on the workers {v['worker_import_s']:.1f} s)" if "startup_s" in v
              else "-")
        rows.append(f"| {name} | {v['seconds']:.1f} | {v['draws_per_s']:.1f} | "
                    f"{v['cpu_s']:.1f} | {v['others_cores_during']:.2f} "
                    f"({v['before']['others_cores']:.2f}, load {v['before']['load_1min']}) "
                    f"| {st} |")
    md = ["# Monte Carlo speed\n",
          f"Generated by `benchmarks/mc_speed.py`: {draws} draws of `{scenario}` "
          f"({len(scn.uncertain)} uncertain inputs plus the fidelity prior on each serving "
          f"card), batches of 8 draws, on a {out['cpu_count']}-core machine (Python "
          f"{out['python']}). The capacity cache was warmed first by one pipeline run on an "
          f"empty cache: {out['cache_warmup_s']:.1f} s (not in the times below).\n",
          *rows, "",
          f"- `Processes(2)`: **{p2:.1f} s** for {draws} draws (target <= 60 s: "
          f"{'met' if out['targets']['processes_2_le_60s'] else 'NOT met'}); in process "
          f"{ph['in-process']['seconds']:.1f} s."]
    if dask:
        tries = "; ".join(
            f"{p['speedup']:.2f}x (others used {p['dask-1']['others_cores_during']:.2f} / "
            f"{p['dask-2']['others_cores_during']:.2f} cores)" for p in out["dask_attempts"])
        md.append(f"- Dask `LocalCluster`, 2 workers vs 1 (1 thread each): **"
                  f"{out['dask_speedup']:.2f}x** (target >= 1.6x: "
                  f"{'met' if out['targets']['dask_speedup_ge_1.6'] else 'NOT met'}"
                  f"{'; measured beside other work' if out['dask_contended'] else ''}); "
                  f"cluster start-up excluded and reported above. Attempts: {tries}.")
    md += [f"- Results identical across executors (Parquet bytes of the draws frame): "
           f"{out['identical']}.",
           "- The machine is shared with other jobs. Each phase waits (at most "
           f"{max_wait_s:.0f} s) until the rest of the machine uses < {quiet_cores} cores; "
           "`other processes' cores during` is the machine's busy CPU time (/proc/stat) minus "
           "this benchmark's own (this process, its pool, the Dask workers) over the wall "
           f"time, of {out['cpu_count']} cores; a Dask pair run beside other work is repeated "
           f"(up to {attempts} pairs, all listed) and the least contended pair is reported.",
           ""]
    text = "\n".join(md)
    d = out_dir or REPO / "benchmarks" / "results"
    d.mkdir(parents=True, exist_ok=True)
    (d / "mc_speed.md").write_text(text)
    (d / "mc_speed.json").write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    print(text)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--scenario", default="scenarios/flagship.yaml")
    ap.add_argument("--no-dask", action="store_true")
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--quiet-cores", type=float, default=0.3)
    ap.add_argument("--max-wait-s", type=float, default=300)
    ap.add_argument("--attempts", type=int, default=3)
    a = ap.parse_args()
    main(a.draws, a.scenario, not a.no_dask, a.out_dir, a.quiet_cores, a.max_wait_s, a.attempts)
