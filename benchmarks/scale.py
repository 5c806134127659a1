"""Scale: (a) a 10-million-request synthetic trace replayed in bounded memory, per-request
results streamed to Parquet and percentiles from mergeable quantile sketches; (b) a 10-year
horizon with 20 fleet options, generated from the tiny test scenario. Each part runs in a fresh
process so its peak RSS is its own; (a) also runs at a tenth of the size, to show the memory
does not grow with the number of requests.

Writes benchmarks/results/scale.md and scale.json; `make bench` runs it.

    python benchmarks/scale.py                 # the full run (about 6 minutes)
    python benchmarks/scale.py --requests 20000 --options 3 --years 2   # a quick one
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_scenario.yaml"

# Replay: Llama 3.1 8B FP8 on one B200 (TP1), Poisson arrivals at 120 req/s (stable: the queue
# does not grow), lognormal lengths (mean 200 in, 20 out): short requests keep the events per
# request low, so 10 M requests take minutes. The trace is synthetic, generated chunk by chunk
# as it streams.
REPLAY = {"model": "llama-3.1-8b", "card": "b200", "precision": "fp8", "tp": 1, "replicas": 1,
          "rate_rps": 120.0, "input_mean": 200, "input_std": 160, "output_mean": 20,
          "output_std": 16, "seed": 1, "slo_ttft_ms": 500.0, "slo_tpot_ms": 50.0}


# ---------------------------------------------------------------- children (one per part)


def _replay_child(n: int, out: str) -> dict:
    from sim.config.library import Library
    from sim.perf.hardware import Hardware
    from sim.perf.memory import Layout
    from sim.perf.precision import Precision
    from sim.serving.engine import EngineConfig
    from sim.serving.metrics import Slo, summarize
    from sim.serving.simulate import ServeSetup, simulate
    from sim.serving.traffic import LognormalLengths, PoissonTraffic

    r = REPLAY
    lib = Library.default()
    setup = ServeSetup(lib.model(r["model"]), Hardware.load(r["card"], lib),
                       Precision.preset(r["precision"]), Layout(tp=r["tp"]), r["replicas"],
                       EngineConfig(max_num_seqs=512))
    src = PoissonTraffic(r["rate_rps"], n, LognormalLengths(
        r["input_mean"], r["input_std"], r["output_mean"], r["output_std"]), r["seed"])
    t0 = time.perf_counter()
    res = simulate(setup, src, per_request_out=out)
    sim_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    s = summarize(res, Slo(r["slo_ttft_ms"], r["slo_tpot_ms"]))
    sum_s = time.perf_counter() - t1
    return {"requests": n, "finished": s["finished"], "simulate_s": sim_s, "summarize_s": sum_s,
            "events": s["events"], "parquet_mb": os.path.getsize(out) / 1e6,
            "simulated_hours": s["duration_s"] / 3600, "unstable": s["unstable"],
            "busy_fraction": s["busy_fraction"], "slo_attainment": s["slo_attainment"],
            "ttft_ms": s["ttft_ms"], "tpot_ms": s["tpot_ms"], "e2e_ms": s["e2e_ms"],
            "sketch_relative_accuracy": s["sketch_relative_accuracy"]}


def horizon_scenario(options: int, years: float) -> dict:
    """The tiny scenario over `years` with `options` fleet options: H100 counts, H100 + L40S
    mixes, a lease and a reserved-cloud option, staggered purchases."""
    import yaml

    doc = yaml.safe_load(TINY.read_text())
    doc["name"] = f"Scale: {options} options over {years:g} years"
    doc["horizon_years"] = years
    doc["training"]["finetune"]["every_months"] = 12
    opts = {}
    for i in range(options):
        n = 8 + 4 * (i % 5)
        kind = i % 4
        if kind == 0:
            opts[f"h100-{n}"] = {"buy": [{"card": "h100-sxm", "count": n, "at": "2026-01",
                                          "price_usd": 30000}]}
        elif kind == 1:
            opts[f"h100+l40s-{n}"] = {"buy": [
                {"card": "h100-sxm", "count": 8, "at": "2026-01", "price_usd": 30000},
                {"card": "l40s", "count": n, "at": "2026-01", "lead_time_weeks": [2, 4]}],
                "serve_on": ["l40s"]}
        elif kind == 2:
            buys = [{"card": "h100-sxm", "count": n, "at": "2026-01", "price_usd": 30000},
                    {"card": "h100-sxm", "count": n, "at": "2029-01", "price_usd": 22000},
                    {"card": "h100-sxm", "count": n, "at": "2032-01", "price_usd": 15000}]
            # every date inside the horizon (a shorter horizon keeps the earlier orders)
            opts[f"h100-staggered-{n}"] = {"buy": [b for b in buys
                                                   if int(b["at"][:4]) - 2026 < years]}
        else:
            opts[f"h100-lease-{n}"] = {
                "buy": [{"card": "h100-sxm", "count": 8, "at": "2026-01", "price_usd": 30000}],
                "lease": [{"card": "h100-sxm", "count": n, "at": "2026-06", "term_years": 3,
                           "usd_per_card_month": 1500}],
                "reserve": [{"card": "h100-sxm", "count": 4, "at": "2027-01", "term_years": 3,
                             "usd_per_card_hour": 2.2}]}
    doc["options"] = opts
    return doc


def _horizon_child(options: int, years: float, folder: str) -> dict:
    import yaml

    import sim

    f = Path(folder) / "scale_scenario.yaml"
    f.write_text(yaml.safe_dump(horizon_scenario(options, years), sort_keys=False))
    t0 = time.perf_counter()
    res = sim.run(f)
    run_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = res.to_dir(Path(folder) / "out", force=True)
    write_s = time.perf_counter() - t1
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6
    return {"options": len(res.summary["options"]), "years": years,
            "hours": int(len(res.per_hour) / max(len(res.summary["options"]), 1)),
            "per_hour_rows": len(res.per_hour), "per_hour_columns": len(res.per_hour.columns),
            "run_s": run_s, "write_s": write_s, "output_mb": size,
            "winner": res.summary["winner"]}


# ---------------------------------------------------------------- parent


def _child(args: list[str], env: dict) -> dict:
    """Run this file as a child and return its JSON, wall time and peak RSS."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                       cwd=REPO, env=env, check=True)
    wall = time.perf_counter() - t0
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def main(requests: int = 10_000_000, options: int = 20, years: float = 10.0,
         out_dir: Path | None = None, small_factor: int = 10) -> dict:
    res: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                            f"Python {platform.python_version()}", "replay_setup": REPLAY}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FLEETSIM_CACHE": str(Path(tmp) / "cache")}
        res["replay_small"] = _child(["--child-replay", str(requests // small_factor),
                                      str(Path(tmp) / "small.parquet")], env)
        res["replay"] = _child(["--child-replay", str(requests),
                                str(Path(tmp) / "big.parquet")], env)
        res["horizon"] = _child(["--child-horizon", str(options), str(years), tmp], env)
    r, s, h = res["replay"], res["replay_small"], res["horizon"]
    md = f"""# Scale

Generated by `benchmarks/scale.py` ({res['machine']}); each part in a fresh process, peak RSS
from `getrusage` (ru_maxrss of that process).

## (a) {r['requests']:,} requests replayed, streamed to Parquet

Llama 3.1 8B FP8 on one B200 (TP1, max_num_seqs 512), Poisson {REPLAY['rate_rps']:g} req/s,
lognormal lengths (mean {REPLAY['input_mean']} in, {REPLAY['output_mean']} out), fast mode,
`simulate(..., per_request_out=)`: requests stream in as chunks, finished requests stream out
to Parquet in row groups of 262,144, no per-event timeline is kept; `summarize` reads the file
back in batches into mergeable DDSketch quantile sketches (relative accuracy
{r['sketch_relative_accuracy']:.1%}).

| requests | simulated | simulate | summarize | events | Parquet | peak RSS |
|---|---|---|---|---|---|---|
| {s['requests']:,} | {s['simulated_hours']:,.1f} h | {s['simulate_s']:,.1f} s | {s['summarize_s']:,.1f} s | {s['events']:,} | {s['parquet_mb']:,.0f} MB | {s['peak_rss_mb']:,.0f} MB |
| {r['requests']:,} | {r['simulated_hours']:,.1f} h | {r['simulate_s']:,.1f} s | {r['summarize_s']:,.1f} s | {r['events']:,} | {r['parquet_mb']:,.0f} MB | {r['peak_rss_mb']:,.0f} MB |

{r['requests'] / r['simulate_s']:,.0f} requests/s simulated; {r['requests'] // s['requests']}x
the requests for {r['peak_rss_mb'] / s['peak_rss_mb']:.2f}x the peak memory. Busy
{r['busy_fraction']:.0%}, unstable: {r['unstable']}; TTFT p50/p99
{r['ttft_ms']['p50']:.1f}/{r['ttft_ms']['p99']:.1f} ms, TPOT p50/p99
{r['tpot_ms']['p50']:.2f}/{r['tpot_ms']['p99']:.2f} ms, SLO attainment
{r['slo_attainment']:.2%} (TTFT {REPLAY['slo_ttft_ms']:g} ms, TPOT {REPLAY['slo_tpot_ms']:g} ms).

## (b) {h['years']:g}-year horizon, {h['options']} fleet options

The tiny test scenario (an 8B chat service, a yearly fine-tune) over {h['years']:g} years with
{h['options']} options (H100 counts, H100 + L40S, staggered purchases, leases and reserved
cloud), `sim.run` then `Result.to_dir` (Parquet, summary, both reports): run
{h['run_s']:.1f} s, write {h['write_s']:.1f} s, {h['wall_s']:.1f} s in all with imports, peak RSS
{h['peak_rss_mb']:,.0f} MB; {h['per_hour_rows']:,} hourly rows x {h['per_hour_columns']}
columns, {h['output_mb']:.0f} MB written. Winner: {h['winner']}.
"""
    d = out_dir or REPO / "benchmarks" / "results"
    (d / "scale.md").write_text(md)
    (d / "scale.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    print(md)
    return res


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-replay":
        out = _replay_child(int(sys.argv[2]), sys.argv[3])
        print(json.dumps({**out, "peak_rss_mb": _rss_mb()}))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-horizon":
        out = _horizon_child(int(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
        print(json.dumps({**out, "peak_rss_mb": _rss_mb()}))
    else:
        ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        ap.add_argument("--requests", type=int, default=10_000_000)
        ap.add_argument("--options", type=int, default=20)
        ap.add_argument("--years", type=float, default=10.0)
        a = ap.parse_args()
        main(a.requests, a.options, a.years)
