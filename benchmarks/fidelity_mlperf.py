"""Fidelity benchmark: predict MLPerf Inference LLM results, as the submitters ran them.

Validation only: no factor anywhere is fitted to these rows. Every efficiency comes from the card
calibration (microbenchmarks) and from each engine release's fit to its vendor's own published
tables (`fleetsim calibrate engines`). Each row of `benchmarks/data/mlperf_inference.yaml`
(MLCommons inference_results_v4.0, v4.1, v5.0 and v5.1, closed division) whose card and model are
in the library is predicted with:
- the engine release of the card's stack in force at the round's date (the newest the library
  has by then; where the library has none that old, its oldest, flagged `engine newer`);
- the submission's published layout (TP, batch) where the row carries it, else the TP that
  maximises tokens/s per card (planning mode), flagged;
- the benchmark's dataset length mix and the precision the submission used (FP8; FP4 on
  Blackwell where stated).
Offline rows are compared; Server and Interactive rows are listed as not yet predicted.

Writes benchmarks/results/fidelity_mlperf.md and .json; `make bench` runs it.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim.config.library import Library  # noqa: E402
from sim.config.loader import ConfigError  # noqa: E402
from sim.perf.estimate import lengths_for  # noqa: E402
from sim.perf.hardware import Hardware, engines_for  # noqa: E402
from sim.perf.memory import Layout, LayoutError  # noqa: E402
from sim.perf.offline import offline_throughput  # noqa: E402
from sim.perf.estimate import estimate  # noqa: E402
from sim.perf.precision import Precision, PrecisionError  # noqa: E402

DATA = REPO / "benchmarks" / "data" / "mlperf_inference.yaml"

ROUND_DATE = {"v4.0": "2024-03", "v4.1": "2024-08", "v5.0": "2025-04", "v5.1": "2025-09"}
"""Publication month of each round (MLCommons)."""

BENCH = {"llama2-70b": ("llama-2-70b", "mlperf-llama2-70b"),
         "mixtral-8x7b": ("mixtral-8x7b", "mlperf-mixtral-8x7b"),
         "llama3.1-405b": ("llama-3.1-405b", "mlperf-llama3.1-405b"),
         "llama3.1-8b": ("llama-3.1-8b", "mlperf-llama3.1-8b")}

VENDOR = {"mi300x": "AMD", "mi325x": "AMD", "mi355x": "AMD", "gaudi2": "Intel", "gaudi3": "Intel"}


def vendor(card: str) -> str:
    return VENDOR.get(card, "NVIDIA")


@dataclass(frozen=True)
class Row:
    round: str
    submitter: str
    system: str
    card: str
    benchmark: str
    scenario: str
    accelerators: int
    tokens_per_s: float
    precision: str
    tp: int | None
    pp: int | None
    batch: int | None
    path: str

    @property
    def published_per_card(self) -> float:
        return self.tokens_per_s / self.accelerators


def load_rows(lib: Library) -> tuple[list[Row], list[str]]:
    """Deduplicated rows with a library card (the -99 and -99.9 targets of one run are one)."""
    data = yaml.safe_load(DATA.read_text())
    cards = set(lib.ids("card"))
    rows, seen, skipped = [], set(), []
    for r in data["rows"]:
        bench = r["benchmark"].replace("-99.9", "").replace("-99", "")
        key = (r["round"], r["submitter"], r["system"], bench, r["scenario"])
        if key in seen:
            continue
        seen.add(key)
        if r.get("card") not in cards:
            skipped.append(f"{r['round']} {r['submitter']} {r.get('card_name')}: card not in the "
                           "library")
            continue
        if bench not in BENCH:
            skipped.append(f"{r['round']} {r['submitter']} {bench}: benchmark not modelled")
            continue
        prec = r.get("precision") or ("fp4" if r["card"] in ("b200", "gb200")
                                      and r["round"] != "v4.0" else "fp8")
        rows.append(Row(r["round"], r["submitter"], r["system"], r["card"], bench,
                        r["scenario"], int(r["accelerators"]), float(r["tokens_per_s"]),
                        prec, r.get("tp"), r.get("pp"), r.get("batch"), r.get("path", "")))
    return rows, skipped


def engine_for(card: str, round_: str, lib: Library) -> tuple[str, bool]:
    """(engine id, newer than the round): the card's newest engine released by the round's
    date, else the oldest the library has."""
    date = ROUND_DATE[round_]
    cands = engines_for(card, lib)
    before = [eid for eid, e in cands if e.release_date[:7] <= date]
    if before:
        return before[-1], False
    return cands[0][0], True


def predict(row: Row, lib: Library) -> dict:
    model, mix = BENCH[row.benchmark]
    eid, newer = engine_for(row.card, row.round, lib)
    hw = Hardware.load(row.card, lib, engine=eid)
    prec = Precision.preset(row.precision)
    lengths = lengths_for(lib, mix, None, None)
    flags = ["engine newer than the round"] if newer else []
    spec = lib.model(model)
    layout_ok = row.tp is not None and (row.pp or 1) == 1
    if layout_ok:
        res = offline_throughput(spec, hw, Layout(tp=row.tp), prec, lengths, batch=row.batch)
        tp, batch, pred = row.tp, res.batch_size, res.offline_tokens_per_s_per_card
        if not res.fits:
            raise LayoutError(f"submitted layout TP{row.tp} does not fit: {res.reason}")
    else:
        est = estimate(row.card, model, prec, lengths, library=lib, hardware=hw)
        tp, batch, pred = est.tp, est.batch_size, est.offline_tokens_per_s_per_card
        flags.append("layout not published: best TP" if (row.pp or 1) == 1
                     else f"submitted PP{row.pp} not modelled: best TP")
    return {"round": row.round, "submitter": row.submitter, "system": row.system,
            "card": row.card, "vendor": vendor(row.card), "benchmark": row.benchmark,
            "precision": row.precision, "engine": eid, "tp": tp, "batch": batch,
            "published_tok_s_per_card": round(row.published_per_card, 1),
            "predicted_tok_s_per_card": round(pred, 1),
            "error": pred / row.published_per_card - 1, "flags": flags, "path": row.path}


def run(lib: Library) -> tuple[list[dict], list[str]]:
    rows, skipped = load_rows(lib)
    out = []
    for r in rows:
        if r.scenario != "Offline":
            skipped.append(f"{r.round} {r.submitter} {r.card} {r.benchmark} {r.scenario}: "
                           "server and interactive scenarios are not predicted here yet")
            continue
        try:
            out.append(predict(r, lib))
        except (ConfigError, LayoutError, PrecisionError) as exc:
            skipped.append(f"{r.round} {r.submitter} {r.card} {r.benchmark}: {exc}")
    return out, skipped


def summary(points: list[dict]) -> dict:
    abs_err = [abs(p["error"]) for p in points]
    by_vendor = {}
    for v in sorted({p["vendor"] for p in points}):
        errs = [p["error"] for p in points if p["vendor"] == v]
        by_vendor[v] = {"n": len(errs), "median_error": statistics.median(errs)}
    return {"n": len(points), "median_abs_error": statistics.median(abs_err),
            "worst_abs_error": max(abs_err), "by_vendor": by_vendor,
            "met": (statistics.median(abs_err) <= 0.10 and max(abs_err) <= 0.25
                    and all(abs(b["median_error"]) <= 0.08 for b in by_vendor.values()))}


def render(points: list[dict], skipped: list[str], s: dict) -> str:
    lines = [
        "# Fidelity: MLPerf Inference LLM offline results, tokens/s per accelerator",
        "",
        "Generated by `benchmarks/fidelity_mlperf.py` (`make bench`). Published values: "
        "`benchmarks/data/mlperf_inference.yaml` (MLCommons inference_results_v4.0/v4.1/v5.0/"
        "v5.1, closed division; system tokens/s / accelerators; each row's path in the JSON). "
        "Validation only: nothing is fitted to these rows. Engine: the card's stack release in "
        "force at the round's date; layout: the submission's where published.",
        "",
        "| round | submitter | card | benchmark | prec | engine | TP | batch | predicted | "
        "published | error | flags |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in sorted(points, key=lambda p: (p["benchmark"], p["round"], p["card"], p["submitter"])):
        lines.append(f"| {p['round']} | {p['submitter']} | {p['card']} | {p['benchmark']} | "
                     f"{p['precision']} | {p['engine']} | {p['tp']} | {p['batch']} | "
                     f"{p['predicted_tok_s_per_card']:,.0f} | {p['published_tok_s_per_card']:,.0f}"
                     f" | {p['error']:+.1%} | {'; '.join(p['flags'])} |")
    lines += ["", f"**{s['n']} offline rows: median |error| {s['median_abs_error']:.1%}, worst "
                  f"{s['worst_abs_error']:.1%}.** Median signed error by vendor: "
              + ", ".join(f"{v} {b['median_error']:+.1%} (n={b['n']})"
                          for v, b in s["by_vendor"].items())
              + ". Acceptance (median <= 10%, worst <= 25%, no vendor's median bias beyond "
                f"+-8%): {'met' if s['met'] else 'NOT met'}.", ""]
    lines += ["## By card", "", "| card | rows | median error | worst |", "|---|---|---|---|"]
    for card in sorted({p["card"] for p in points}):
        e = [p["error"] for p in points if p["card"] == card]
        lines.append(f"| {card} | {len(e)} | {statistics.median(e):+.1%} | "
                     f"{max(e, key=abs):+.1%} |")
    lines += ["", "## Not predicted", ""] + [f"- {x}" for x in skipped] + [""]
    log = REPO / "benchmarks" / "fidelity_log.md"
    if log.exists():
        lines += [log.read_text().rstrip(), ""]
    return "\n".join(lines)


def main(out_dir: Path | None = None) -> int:
    lib = Library.default()
    points, skipped = run(lib)
    s = summary(points)
    out_dir = out_dir or REPO / "benchmarks" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    md = render(points, skipped, s)
    (out_dir / "fidelity_mlperf.md").write_text(md)
    (out_dir / "fidelity_mlperf.json").write_text(json.dumps(
        {"points": points, "summary": s, "skipped": skipped}, indent=2, sort_keys=True) + "\n")
    print(md.split("\n## By card")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
