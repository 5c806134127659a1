"""Validate the serving simulator's capacity search against MLPerf Inference server results.

Validation only, like `fidelity_mlperf.py`: every Server row of `benchmarks/data/mlperf_inference
.yaml` whose card is in the library is grouped by (round, card, benchmark), and the group's
median published tokens/s per accelerator is compared with the capacity search: Poisson
arrivals, the benchmark's p99 TTFT and TPOT limits (reference-data C), the engine release in
force at the round's date, the submitter's TP where published (else the offline-best TP), a
vLLM-V1-like scheduler whose max_num_seqs is the submitter's batch (else the offline batch),
and the benchmark's length mix. The max rate per replica meeting the limits is found by
bisection with common random numbers and confirmed with a second seed.
Writes benchmarks/results/mlperf_server.md and .json.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import fidelity_mlperf as F  # noqa: E402
from sim.config.library import Library  # noqa: E402
from sim.perf.estimate import estimate, lengths_for  # noqa: E402
from sim.perf.hardware import Hardware  # noqa: E402
from sim.perf.memory import Layout  # noqa: E402
from sim.perf.precision import Precision  # noqa: E402
from sim.serving.capacity import max_rate  # noqa: E402
from sim.serving.engine import EngineConfig  # noqa: E402
from sim.serving.metrics import Slo  # noqa: E402
from sim.serving.simulate import ServeSetup  # noqa: E402
from sim.serving.traffic import LognormalLengths, PoissonTraffic  # noqa: E402

SERVER_SLO = {"llama2-70b": Slo(2000.0, 200.0), "mixtral-8x7b": Slo(2000.0, 200.0),
              "llama3.1-405b": Slo(6000.0, 175.0), "llama3.1-8b": Slo(2000.0, 100.0)}
"""Server-scenario p99 limits (reference-data C: MLPerf benchmark definitions)."""
REQUESTS = 2000
BENCHMARKS = ("llama2-70b", "mixtral-8x7b", "llama3.1-8b")
"""`make bench` runs these; Llama 3.1 405B's 9k-token prompts make each search take minutes
(pass benchmarks=None for all)."""


def groups(lib: Library, cards: tuple[str, ...] | None = None) -> list[dict]:
    rows, _ = F.load_rows(lib)
    out: dict[tuple, dict] = {}
    for r in rows:
        if r.scenario != "Server" or (cards is not None and r.card not in cards):
            continue
        g = out.setdefault((r.round, r.card, r.benchmark), {"rows": [], "tp": None, "batch": None,
                                                            "precision": r.precision})
        g["rows"].append(r)
        if r.tp is not None and (r.pp or 1) == 1:
            g["tp"], g["batch"] = r.tp, r.batch
    return [{"round": k[0], "card": k[1], "benchmark": k[2], **v} for k, v in sorted(out.items())]


def predict(g: dict, lib: Library, requests: int) -> dict:
    model, mix_id = F.BENCH[g["benchmark"]]
    eid, newer = F.engine_for(g["card"], g["round"], lib)
    hw = Hardware.load(g["card"], lib, engine=eid)
    prec = Precision.preset(g["precision"])
    moments = lengths_for(lib, mix_id, None, None)
    est = estimate(g["card"], model, prec, moments, library=lib, hardware=hw, tp=g["tp"])
    flags = ["engine newer than the round"] if newer else []
    if g["tp"] is None:
        flags.append("layout not published: best TP")
    seqs = g["batch"] or est.batch_size
    setup = ServeSetup(lib.model(model), hw, prec, Layout(tp=est.tp), replicas=1,
                       engine=EngineConfig(max_num_seqs=max(int(seqs), 1),
                                           max_num_batched_tokens=8192))
    lengths = LognormalLengths.from_mix(lib.lengths(mix_id))

    def traffic_at(rate, seed, _l=lengths):
        return PoissonTraffic(rate, requests, _l, seed)

    cap = max_rate(setup, traffic_at, SERVER_SLO[g["benchmark"]])
    published = statistics.median(r.published_per_card for r in g["rows"])
    pred = cap.tokens_per_s_per_card
    return {"round": g["round"], "card": g["card"], "vendor": F.vendor(g["card"]),
            "benchmark": g["benchmark"], "engine": eid, "tp": est.tp, "max_num_seqs": int(seqs),
            "submissions": len(g["rows"]), "max_rate_rps_per_replica": cap.max_rate_rps,
            "predicted_tok_s_per_card": pred, "published_tok_s_per_card": published,
            "error": pred / published - 1, "confirmed_with_second_seed": cap.confirm_seed_meets,
            "offline_predicted": est.offline_tokens_per_s_per_card,
            "p99_ttft_ms": cap.summary.get("ttft_ms", {}).get("p99"),
            "p99_tpot_ms": cap.summary.get("tpot_ms", {}).get("p99"), "flags": flags}


def main(requests: int = REQUESTS, cards: tuple[str, ...] | None = None,
         out_dir: Path | None = None,
         benchmarks: tuple[str, ...] | None = BENCHMARKS) -> list[dict]:
    """Run the validation; smaller `requests`/`cards` and `out_dir` give the `make test` version."""
    lib = Library.default()
    rows = []
    for g in groups(lib, cards):
        if benchmarks is None or g["benchmark"] in benchmarks:
            rows.append(predict(g, lib, requests))
            r = rows[-1]
            print(f"{r['round']} {r['card']} {r['benchmark']}: {r['error']:+.1%}", flush=True)
    lines = ["# MLPerf Inference server scenario: capacity search vs published (validation)", "",
             "Generated by `benchmarks/mlperf_server.py`. Poisson arrivals at each benchmark's "
             f"p99 TTFT / TPOT limits, {requests} requests per point; per (round, card, "
             "benchmark) the median of the published server results per accelerator. Nothing "
             "is fitted to these rows.", "",
             "| round | card | benchmark | engine | TP | max_num_seqs | max rate/replica (req/s) | "
             "predicted tok/s/card | published (n) | error | p99 TTFT ms | p99 TPOT ms | flags |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['card']} | {r['benchmark']} | {r['engine']} | "
                     f"{r['tp']} | {r['max_num_seqs']} | {r['max_rate_rps_per_replica']:.2f} | "
                     f"{r['predicted_tok_s_per_card']:,.0f} | "
                     f"{r['published_tok_s_per_card']:,.0f} ({r['submissions']}) | "
                     f"{r['error']:+.1%} | {r['p99_ttft_ms'] or 0:,.0f} | "
                     f"{r['p99_tpot_ms'] or 0:,.0f} | {'; '.join(r['flags'])} |")
    if rows:
        abs_err = [abs(r["error"]) for r in rows]
        by_vendor = {v: statistics.median(r["error"] for r in rows if r["vendor"] == v)
                     for v in sorted({r["vendor"] for r in rows})}
        lines += ["", f"**{len(rows)} groups: median |error| {statistics.median(abs_err):.1%}, "
                      f"worst {max(abs_err):.1%}.** Median signed error by vendor: "
                  + ", ".join(f"{v} {e:+.1%}" for v, e in by_vendor.items()) + ".", ""]
    md = "\n".join(lines)
    out = out_dir or REPO / "benchmarks" / "results"
    (out / "mlperf_server.md").write_text(md)
    (out / "mlperf_server.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    print(md)
    return rows


if __name__ == "__main__":
    main()
