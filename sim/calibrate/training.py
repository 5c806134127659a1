"""Fit each card's training factors to published, non-MLPerf training tables.

Calibration data: `hardware_specs/training_tables/*.yaml` (NeMo / Megatron-Bridge performance
summaries per release, AMD's ROCm PyTorch training guide, Intel's Gaudi tables, the Llama 3
paper's Table 4). Each point names its card, model, layout and global batch; the step model
(`sim.perf.train.step.train_step`) predicts its tokens/s per card at that layout (recomputation:
the least that fits in memory), and two factors per card are fitted by least squares on
log(predicted / published) with weak priors: the compute factor on GEMM and attention
efficiency (log 0 +- 0.5) and the share of tensor-parallel communication hidden (0.5 +- 0.5).
Where a card's points run one configuration in BF16 and in FP8, a third factor on its FP8
GEMM efficiency (log 0 +- 0.5) takes what the framework's FP8 recipe loses against the FP8
microbenchmark: the tables' FP8 / BF16 speed-up, which the step model otherwise puts at the
GEMM microbenchmarks' ratio.
A card without such a pair keeps it at 1 (the tables cannot separate it from the compute
factor).
A card without points takes the fit of a card with the same die, clocks and software
(`SAME_SILICON`: H200 SXM <- H100 SXM), else the pooled fit over every card (both tier
`assumed`). Leave-one-out
residuals measure how well a fit predicts a point it has not seen. MLPerf Training results are
never among the points (they validate: `benchmarks/fidelity_training.py`).

    fleetsim calibrate training     # writes hardware_specs/training_fits/<card>.yaml
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from sim.config.engine import TrainingFactors, TrainingFit
from sim.config.library import Library
from sim.config.loader import read_yaml
from sim.perf.train.hardware import training_hardware
from sim.perf.train.layout import check_train_layout
from sim.perf.train.memory import memory_per_card
from sim.perf.train.step import train_step, training_flops_per_token
from sim.perf.train.types import TrainingLayoutError, TrainJob, TrainLayout

MIN_POINTS = 4
SAME_SILICON = {"h200-sxm": "h100-sxm"}
"""Cards without training points that take another card's fit, not the pooled one: the same die,
clocks and software (H200 SXM: the GH100 die and clocks of the H100 SXM with more and faster
HBM, `hardware_specs/calibration/h200-sxm.yaml`; the same NeMo containers). The model applies
the card's own memory, bandwidth and microbenchmarks; the fit is what the framework adds on that
silicon. Tier `assumed` (no point of its own)."""
PRIOR = np.array([0.0, 0.5, 0.0])
PRIOR_SCALE = np.array([0.5, 0.5, 0.5])
LOWER = np.array([math.log(0.3), 0.0, math.log(0.3)])
UPPER = np.array([math.log(1.5), 1.0, math.log(1.5)])
"""(log compute, TP overlap, log FP8 factor)."""
PRECISION = {"bf16": "bf16", "fp8": "fp8", "fp8-cs": "fp8", "mxfp8": "fp8"}
"""Table precisions the model runs: FP8 recipes (delayed/current scaling, MX block scaling)
run as FP8 GEMMs; NVFP4 rows are skipped (no FP4 training GEMM efficiency in the library)."""


@dataclass(frozen=True)
class TrainCase:
    table: str
    index: int
    card: str
    job: TrainJob
    layout: TrainLayout
    published: float
    """Tokens/s per card."""
    basis: str

    @property
    def label(self) -> str:
        return (f"{self.table}#{self.index} {self.card} {self.job.model.name} "
                f"{self.layout.label()} {self.job.precision}")


def tables_dir(library: Library) -> list[Path]:
    return sorted(p for root in library.roots
                  for p in (Path(root) / "hardware_specs" / "training_tables").glob("*.yaml"))


def _layout(job: TrainJob, p: dict, card: str, library: Library) -> TrainLayout:
    """The point's published layout with the least recomputation that fits (none, selective,
    full). Block recomputation is not tried: no table point records a recomputation setting
    (`hardware_specs/training_tables/*.yaml` carry no recompute field; checked 2026-12-03), so
    there is no published layer count to use."""
    tp, pp, cp = int(p.get("tp") or 1), int(p.get("pp") or 1), int(p.get("cp") or 1)
    gpus = int(p["gpus"])
    dp = gpus // (tp * pp * cp)
    mb = int(p.get("micro_batch") or 1)
    ep = int(p.get("ep") or 1)
    base = TrainLayout(tp=tp, pp=pp, dp=dp, cp=cp, ep=ep, micro_batch=mb,
                       vp=int(p.get("vp") or 1), zero=3 if p.get("fsdp") else 1)
    hw = training_hardware(card, library, compute=1.0).hw
    for rc in ("none", "selective", "full"):  # the least recomputation that fits
        lay = TrainLayout(**{**base.__dict__, "recompute": rc})
        if memory_per_card(job, lay, hw).fits:
            return lay
    return TrainLayout(**{**base.__dict__, "recompute": "full"})


def cases(library: Library) -> tuple[list[TrainCase], list[str]]:
    """Every point the model can predict, and why each other one is skipped."""
    out, skipped = [], []
    for path in tables_dir(library):
        doc = read_yaml(path)
        for i, p in enumerate(doc.get("points") or []):
            where = f"{path.stem}#{i}"
            card, model = p.get("card"), p.get("model")
            if card not in library.ids("card") or model not in library.ids("model"):
                skipped.append(f"{where}: card or model not in the library")
                continue
            prec = PRECISION.get(str(p.get("precision")).lower())
            if prec is None:
                skipped.append(f"{where}: precision {p.get('precision')} not modelled")
                continue
            if not (p.get("seq_len") and p.get("global_batch") and p.get("gpus")):
                skipped.append(f"{where}: sequence length, global batch or GPU count not stated")
                continue
            m = library.model(model)
            task = {"pretrain": "pretrain", "finetune": "finetune", "lora": "lora"}.get(
                p.get("task"), "pretrain")
            job = TrainJob(m, int(p["seq_len"]), int(p["global_batch"]), prec, task)
            tok = p.get("tokens_per_s_per_gpu")
            basis = "tokens/s per GPU"
            if not tok and p.get("model_tflops_per_gpu"):
                tok = p["model_tflops_per_gpu"] * 1e12 / training_flops_per_token(m, job.seq_tokens)
                basis = "model TFLOP/s per GPU / fleetsim's FLOPs per token"
            if not tok:
                skipped.append(f"{where}: no throughput")
                continue
            try:
                lay = _layout(job, p, card, library)
                check_train_layout(job, lay, int(p["gpus"]))
            except (TrainingLayoutError, KeyError, ValueError, ZeroDivisionError) as exc:
                skipped.append(f"{where}: {exc}")
                continue
            out.append(TrainCase(path.stem, i, card, job, lay, float(tok), basis))
    return out, skipped


def predict(case: TrainCase, library: Library, x: np.ndarray) -> float:
    """Tokens/s per card of `case` at the factors `x` (log compute, overlap, log FP8 factor)."""
    th = training_hardware(case.card, library, compute=math.exp(x[0]), tp_overlap=x[1],
                           fp8_compute=math.exp(x[2]))
    return train_step(case.job, case.layout, th.hw, th.tp_overlap).tokens_per_s_per_card


def both_precisions(cs: list[TrainCase]) -> bool:
    """Whether some configuration runs in BF16 and in FP8 (the same card, model, sequence,
    card count and parallel degrees; batch sizes free): the FP8 factor is then identifiable."""
    seen: dict[tuple, set[str]] = {}
    for c in cs:
        lay = c.layout
        key = (c.card, c.job.model.name, c.job.seq_tokens, lay.cards, lay.tp, lay.pp, lay.cp,
               lay.ep)
        seen.setdefault(key, set()).add(c.job.precision)
    return any({"bf16", "fp8"} <= p for p in seen.values())


def _fit(cs: list[TrainCase], library: Library) -> np.ndarray:
    free = [0, 1, 2] if both_precisions(cs) else [0, 1]

    def full(y):
        x = PRIOR.copy()
        x[free] = y
        return x

    def resid(y):
        x = full(y)
        r = [math.log(predict(c, library, x) / c.published) for c in cs]
        return np.concatenate([np.array(r), (y - PRIOR[free]) / PRIOR_SCALE[free]])
    sol = least_squares(resid, PRIOR[free].copy(), bounds=(LOWER[free], UPPER[free]),
                        loss="soft_l1", f_scale=0.15)
    return full(sol.x)


def fit_card(card: str, cs: list[TrainCase], library: Library, loo: bool = True,
             tier: str = "published", note: str = "") -> tuple[TrainingFit, list[dict]]:
    x = _fit(cs, library)
    rows = []
    for c in cs:
        pred = predict(c, library, x)
        held = None
        if loo and len(cs) > 1:
            xi = _fit([o for o in cs if o is not c], library)
            held = predict(c, library, xi) / c.published - 1
        rows.append({"case": c.label, "published": c.published, "predicted": pred,
                     "error": pred / c.published - 1, "held_out_error": held, "basis": c.basis})
    err = [abs(r["error"]) for r in rows]
    held = [abs(r["held_out_error"]) for r in rows if r["held_out_error"] is not None]
    logs = [math.log1p(r["held_out_error"]) for r in rows if r["held_out_error"] is not None]
    fit = TrainingFit(
        card=card, factors=TrainingFactors(compute=round(math.exp(x[0]), 4),
                                           tp_overlap=round(float(x[1]), 4),
                                           fp8_compute=round(math.exp(x[2]), 4)),
        points=len(cs), residual_median_abs=round(statistics.median(err), 4),
        loo_median_abs=round(statistics.median(held), 4) if held else None,
        log_sigma=round(statistics.pstdev(logs), 4) if len(logs) > 1 else None,
        tables=tuple(sorted({c.table for c in cs})), tier=tier,
        generated_by="fleetsim calibrate training (sim/calibrate/training.py)", note=note)
    return fit, rows


def fit_all(library: Library, loo: bool = True) -> tuple[list[TrainingFit], list[dict], list[str]]:
    cs, skipped = cases(library)
    by_card: dict[str, list[TrainCase]] = {}
    for c in cs:
        by_card.setdefault(c.card, []).append(c)
    fits, rows = [], []
    for card in sorted(by_card):
        if len(by_card[card]) < MIN_POINTS:
            skipped.append(f"{card}: {len(by_card[card])} points, fewer than {MIN_POINTS}: pooled")
            continue
        f, r = fit_card(card, by_card[card], library, loo)
        fits.append(f)
        rows += r
    fits += same_silicon_fits(fits)
    pooled, _ = fit_card("pooled", cs, library, loo=False, tier="assumed",
                         note="one factor pair over every card's points; for cards without "
                              "their own")
    fits.append(pooled)
    return fits, rows, skipped


def same_silicon_fits(fits: list[TrainingFit]) -> list[TrainingFit]:
    """`SAME_SILICON` cards without a fit of their own take their sibling's (tier `assumed`)."""
    own = {f.card: f for f in fits}
    out = []
    for card, sibling in SAME_SILICON.items():
        if card in own or sibling not in own:
            continue
        f = own[sibling]
        out.append(f.model_copy(update={
            "card": card, "tier": "assumed",
            "note": f"{sibling}'s fit ({f.points} points of {sibling}): the same die, clocks "
                    "and software; no point of its own"}))
    return out


FRAMEWORK_TABLES = "nemo-"
"""Tables of one framework's dated releases (NeMo / Megatron-Bridge performance summaries)."""


def release_of_table(dates: dict[str, str]) -> dict[str, str]:
    """One release per container month: the framework's tables of one month (its performance
    summary and NVIDIA's DGX Cloud recipes of the same container) share one level, named
    '<YYYY-MM> (<tables>)'."""
    by_month: dict[str, list[str]] = {}
    for t, d in dates.items():
        by_month.setdefault(d, []).append(t)
    return {t: f"{d} ({', '.join(sorted(ts))})" for d, ts in by_month.items() for t in ts}


def largest_linked_releases(pts: list[tuple]) -> set[str]:
    """The largest set of releases joined, directly or through others, by shared configurations
    (points are (release, configuration, log rate)): levels of releases in different sets have
    no common reference."""
    parent: dict[str, str] = {}

    def root(r: str) -> str:
        while parent.setdefault(r, r) != r:
            r = parent[r]
        return r

    first: dict = {}
    for rel, key, _ in pts:
        root(rel)
        if key in first:
            parent[root(rel)] = root(first[key])
        else:
            first[key] = rel
    groups: dict[str, set[str]] = {}
    for rel in parent:
        groups.setdefault(root(rel), set()).add(rel)
    return max(groups.values(), key=lambda g: (len(g), sorted(g)), default=set())


def release_levels(cs: list[TrainCase], library: Library):
    """How much faster each NeMo release (container month) ran the configurations (card, model,
    sequence, global batch, layout, precision) it shares with other releases: log(tokens/s per
    card) = a[config] + d[release] by least squares, the first release 0 (the two-way fixed
    effects of `sim.calibrate.software_trend`); then the line of d on the release date. Returns
    (levels, (rate per year, its se)) or ([], None) when fewer than three releases share
    configurations. Releases sharing none are left out."""
    from collections import defaultdict

    from sim.calibrate.software_trend import _line, years_of
    from sim.config.engine import ReleaseLevel

    dates = {p.stem: str(read_yaml(p).get("release_date")) for p in tables_dir(library)}
    release = release_of_table({t: d for t, d in dates.items() if t.startswith(FRAMEWORK_TABLES)})
    pts = [(release[c.table], (c.card, c.job.model.name, c.job.seq_tokens, c.job.global_batch,
                               c.layout, c.job.precision), math.log(c.published))
           for c in cs if c.table.startswith(FRAMEWORK_TABLES)]
    dates = {r: r.split(" ", 1)[0] for r in release.values()}
    seen = defaultdict(set)
    for t, k, _ in pts:
        seen[k].add(t)
    pts = [p for p in pts if len(seen[p[1]]) >= 2]
    linked = largest_linked_releases(pts)  # levels compare only within releases that are linked
    pts = [p for p in pts if p[0] in linked]
    rels = sorted({t for t, _, _ in pts}, key=lambda t: (years_of(dates[t]), t))
    if len(rels) < 3:
        return [], None
    keys = sorted({k for _, k, _ in pts}, key=str)
    ki, ri = {k: i for i, k in enumerate(keys)}, {r: i for i, r in enumerate(rels)}
    a = np.zeros((len(pts), len(keys) + len(rels) - 1))
    y = np.zeros(len(pts))
    for n, (t, k, v) in enumerate(pts):
        a[n, ki[k]] = 1.0
        if ri[t]:
            a[n, len(keys) + ri[t] - 1] = 1.0
        y[n] = v
    sol, *_ = np.linalg.lstsq(a, y, rcond=None)
    lv = [0.0] + [float(v) for v in sol[len(keys):]]
    levels = [ReleaseLevel(engine=r, release_date=dates[r], log_level=round(d, 6),
                           points=sum(t == r for t, _, _ in pts)) for r, d in zip(rels, lv)]
    slope, _, se, _, _ = _line(levels)
    return levels, (slope, se)


def render_release_levels(levels, trend) -> list[str]:
    lines = ["", "## Software era: NeMo release levels", "",
             "Each release's log level over the configurations it shares with other releases "
             "(two-way fixed effects; the first release 0), and the line through them by "
             "release date. The model does not apply it to MLPerf rows unless the rate is "
             "distinguishable from zero (|rate| > 2 se).", ""]
    if not levels:
        return lines + ["Fewer than three releases share a configuration."]
    lines += ["| release | date | points | log level |", "|---|---|---|---|"]
    lines += [f"| {lv.engine} | {lv.release_date} | {lv.points} | {lv.log_level:+.3f} |"
              for lv in levels]
    rate, se = trend
    lines += ["", f"Rate {rate:+.3f} log per year (se {se:.3f}): "
              + ("applied" if abs(rate) > 2 * se else "not distinguishable from zero, not "
                 "applied (a card's fit stands for every round).")]
    return lines


def write_fits(fits: list[TrainingFit], out_dir) -> list[Path]:
    from sim.calibrate.generated import write_record

    return [write_record(
        Path(out_dir) / f"{f.card}.yaml",
        f"# Written by `fleetsim calibrate training`: {f.card}'s training factors fitted to "
        "published\n# non-MLPerf tables (hardware_specs/training_tables). Do not edit by hand: "
        "refit.\n", f) for f in fits]


def render_markdown(fits: list[TrainingFit], rows: list[dict], skipped: list[str],
                    era: list[str] | None = None) -> str:
    lines = ["# Training calibration: fitted to published non-MLPerf tables", "",
             "Generated by `fleetsim calibrate training`. Per card: the compute factor and the "
             "share of tensor-parallel communication hidden (and, where its points run a "
             "configuration in BF16 and FP8, a factor on its FP8 GEMM efficiency), fitted by "
             "least squares to `hardware_specs/training_tables/`; held-out: each point "
             "predicted by a fit made without it.", "",
             "| card | points | compute | TP overlap | FP8 | median error | held-out median "
             "| tier |",
             "|---|---|---|---|---|---|---|---|"]
    for f in fits:
        held = "-" if f.loo_median_abs is None else f"{f.loo_median_abs:.1%}"
        lines.append(f"| {f.card} | {f.points} | {f.factors.compute:.3f} | "
                     f"{f.factors.tp_overlap:.2f} | {f.factors.fp8_compute:.3f} | "
                     f"{f.residual_median_abs:.1%} | {held} | "
                     f"{f.tier} |")
    lines += ["", "| point | published tok/s/card | predicted | error | held-out |",
              "|---|---|---|---|---|"]
    for r in rows:
        held = "-" if r["held_out_error"] is None else f"{r['held_out_error']:+.1%}"
        lines.append(f"| {r['case']} | {r['published']:,.0f} | {r['predicted']:,.0f} | "
                     f"{r['error']:+.1%} | {held} |")
    if era is None:  # the CLI passes none: the default library's tables
        lib = Library.default()
        era = render_release_levels(*release_levels(cases(lib)[0], lib))
    lines += era
    lines += ["", f"Skipped ({len(skipped)}):", ""] + [f"- {s}" for s in skipped]
    return "\n".join(lines) + "\n"
