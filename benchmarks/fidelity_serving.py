"""Serving latency vs real vLLM runs (issue 16): the `validate` half of
`benchmarks/data/serving_runs/`, predicted with the fitted overheads
(`hardware_specs/serving_overheads/vllm-v1.yaml`, fitted on the `calibrate` half only) and,
for reference, without them. Writes `benchmarks/results/fidelity_serving.md` and `.json`.

    .venv/bin/python benchmarks/fidelity_serving.py

Targets (issue 16) on the validation half: median |error| <= 10% mean E2E, <= 15% mean TTFT,
<= 10% mean TPOT; no metric's bias (median signed error) beyond +-8% for dense or for MoE.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim.calibrate.serving_runs import METRICS, compare, load_runs  # noqa: E402
from sim.config.library import Library  # noqa: E402
from sim.serving import overheads as ov_mod  # noqa: E402

OUT_DIR = REPO / "benchmarks" / "results"
TARGETS = {"e2e_ms": 0.10, "ttft_ms": 0.15, "tpot_ms": 0.10}
BIAS_LIMIT = 0.08


def summary(rows: list[dict]) -> dict:
    """Per metric: n, median |error|, worst, bias (median signed error) by family and load."""
    out = {}
    for m in METRICS:
        errs = [r for r in rows if r["metric"] == m]
        if not errs:
            continue
        absv = [abs(r["error"]) for r in errs]
        worst = max(errs, key=lambda r: abs(r["error"]))
        d = {"n": len(errs), "median_abs_error": statistics.median(absv),
             "worst_error": worst["error"], "worst_run": worst["run"],
             "target": TARGETS[m], "met": statistics.median(absv) <= TARGETS[m]}
        for key in ("family", "load"):
            for g in sorted({r[key] for r in errs}):
                e = [r["error"] for r in errs if r[key] == g]
                d[f"bias_{key}_{g}"] = statistics.median(e)
                d[f"n_{key}_{g}"] = len(e)
        out[m] = d
    return out


def bias_met(s: dict) -> bool:
    return all(abs(v) <= BIAS_LIMIT for d in s.values() for k, v in d.items()
               if k.startswith("bias_family_"))


def run(split: str = "validate", num_prompts: int | None = None, ids: list[str] | None = None,
        with_baseline: bool = True) -> dict:
    lib = Library.default()
    runs = [r for r in load_runs(split) if ids is None or r.id in ids]
    ov = ov_mod.load("vllm-v1", lib.roots)
    t0 = time.perf_counter()
    rows = compare(runs, lib, ov, num_prompts)
    base = compare(runs, lib, None, num_prompts) if with_baseline else []
    for r, b in zip(rows, base):
        r["predicted_no_overheads"] = b["predicted"]
        r["error_no_overheads"] = b["error"]
    s = summary(rows)
    return {"split": split, "runs": len(runs), "num_prompts": num_prompts, "rows": rows,
            "summary": s, "summary_no_overheads": summary(base) if base else {},
            "acceptance_met": all(d["met"] for d in s.values()) and bias_met(s),
            "bias_met": bias_met(s), "wall_s": time.perf_counter() - t0}


def _pct(x) -> str:
    return "-" if x is None else f"{x:+.1%}"


def markdown(res: dict) -> str:
    s, s0 = res["summary"], res["summary_no_overheads"]
    lines = [f"# Serving fidelity vs real vLLM runs ({res['split']} half)", "",
             "Written by `benchmarks/fidelity_serving.py`. Overheads: "
             "`hardware_specs/serving_overheads/vllm-v1.yaml`, fitted on the calibrate half only. "
             f"{res['runs']} runs with a library model; error = predicted / measured - 1 of the "
             "per-run mean. E2E only where printed or exactly derivable (README of the data).", "",
             "| metric | n | median abs error | target | met | worst | bias dense | bias MoE "
             "| bias burst | bias capped | median abs error without overheads |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, d in s.items():
        lines.append(
            f"| {m} | {d['n']} | {d['median_abs_error']:.1%} | {d['target']:.0%} | "
            f"{'yes' if d['met'] else 'no'} | {_pct(d['worst_error'])} ({d['worst_run']}) | "
            f"{_pct(d.get('bias_family_dense'))} | {_pct(d.get('bias_family_moe'))} | "
            f"{_pct(d.get('bias_load_burst'))} | {_pct(d.get('bias_load_capped'))} | "
            f"{s0[m]['median_abs_error']:.1%} |" if m in s0 else "")
    lines += ["", f"Bias within +-{BIAS_LIMIT:.0%} for dense and MoE: "
              f"{'yes' if res['bias_met'] else 'no'}. All acceptance targets met: "
              f"{'yes' if res['acceptance_met'] else 'no'}.", "",
              "| run | family | load | metric | measured ms | predicted ms | error | "
              "without overheads |", "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(f"| {r['run']} | {r['family']} | {r['load']} | {r['metric']} | "
                     f"{r['measured']:,.1f} | {r['predicted']:,.1f} | {_pct(r['error'])} | "
                     f"{_pct(r.get('error_no_overheads'))} |")
    return "\n".join(lines) + "\n"


def main(out_dir: Path = OUT_DIR, num_prompts: int | None = None,
         ids: list[str] | None = None) -> dict:
    res = run("validate", num_prompts, ids)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fidelity_serving.json").write_text(json.dumps(res, indent=1) + "\n")
    (out_dir / "fidelity_serving.md").write_text(markdown(res))
    for m, d in res["summary"].items():
        print(f"{m}: median |error| {d['median_abs_error']:.1%} (target {d['target']:.0%}), "
              f"worst {d['worst_error']:+.1%}, bias dense {_pct(d.get('bias_family_dense'))}, "
              f"MoE {_pct(d.get('bias_family_moe'))}")
    print(f"acceptance met: {res['acceptance_met']} ({res['wall_s']:.1f} s)")
    return res


if __name__ == "__main__":
    main()
