"""Fit each engine's factors to the vendor's own published throughput tables.

For every engine release with tables (`hardware_specs/engine_tables/*.yaml`, calibration data;
MLPerf results are never among them), and every card with enough points, four factors
(`EngineFactors`: compute, bandwidth, step overhead, per-sequence overhead) are fitted by
`scipy.optimize.least_squares` on log(predicted / published), with weak priors that keep a
factor at its neutral value when the points cannot tell it apart. A pooled fit over all the
engine's cards serves the cards it runs on that have no table. Leave-one-out residuals (each
point predicted by a fit without it) measure how well the fitted model predicts a point it has
not seen; their log spread becomes the model's stated uncertainty for that (engine, card).

    fleetsim calibrate engines            # refit every engine, write hardware_specs/engine_fits/
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from sim.config.engine import CardFit, EngineFactors, EngineFit, EngineTable, TablePoint
from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.perf.hardware import Hardware
from sim.perf.memory import Layout, LayoutError
from sim.perf.offline import LengthMoments, mixed_step, offline_throughput
from sim.perf.precision import Precision, PrecisionError
from sim.perf.step import StepBatch, step_time

LOO_MAX = 40
KFOLD = 10
"""Held-out residuals: leave-one-out for groups up to LOO_MAX points, 10-fold above (a fit per
held-out point would take minutes for the 200-point H100 tables)."""

MIN_POINTS_PER_CARD = 6
"""Fewer points than this for a card: it enters the engine's pooled fit only."""

# parameter vector: log compute, log bandwidth, step overhead (ms), per-sequence overhead (us)
LOWER = np.array([math.log(0.2), math.log(0.5), 0.0, 0.0])
UPPER = np.array([math.log(1.5), math.log(1.15), 30.0, 200.0])
"""Bounds. Bandwidth at most 1.15x the card's STREAM figure: STREAM reaches 0.85-0.9 of the
spec on HBM parts (reference B2), and no kernel reads faster than the spec."""
PRIOR_CENTER = np.array([0.0, 0.0, 1.0, 0.0])
PRIOR_SCALE = np.array([1.5, 0.3, 15.0, 150.0])
"""Weak priors (one pseudo-residual each, against a log error per point): compute and bandwidth
at the microbenchmarks' values (log 0 ± 1.5 and ± 0.3: engines rarely beat STREAM), 1 ms ± 15
per step, 0 ± 150 µs per sequence. They only settle directions the points cannot tell apart;
a factor the points determine moves freely (tests: synthetic points are fitted back)."""

ROBUST_SCALE = 0.15
"""Soft-L1 loss: a point off by more than ~15% counts linearly, not quadratically, so a few
rows the model cannot represent (a 70B model squeezed onto one 80 GB card, where KV room is a
few GB and hangs on the engine's exact memory reserve) do not drag every factor."""

PRECISIONS = {"fp8": "fp8", "fp4": "fp4", "nvfp4": "fp4", "bf16": "bf16", "fp16": "bf16",
              "int8": "int8"}


@dataclass(frozen=True)
class Case:
    """One table point made ready to predict: ids, layout, lengths and the units it is in."""

    table: str
    index: int
    card: str
    model: str
    precision: str
    tp: int
    isl: int
    osl: int
    batch: int | None
    published: float
    scale: float
    """published units per (output tokens/s per card): cards counted and token definition."""
    kind: str = "throughput"
    """`throughput` (offline tokens/s) or `latency` (seconds for one batch of `batch` requests
    to prefill and generate `osl` tokens, as vLLM's benchmark_latency.py measures)."""

    @property
    def label(self) -> str:
        what = f" latency b{self.batch}" if self.kind == "latency" else ""
        return (f"{self.table}#{self.index} {self.card} {self.model} {self.precision} TP{self.tp} "
                f"{self.isl}/{self.osl}{what}")


def cases_of(table: EngineTable, library: Library) -> tuple[list[Case], list[str]]:
    """The points of a table that fleetsim can predict, and why each other one is skipped."""
    out, skipped = [], []
    known_cards, known_models = set(library.ids("card")), set(library.ids("model"))
    for i, p in enumerate(table.points):
        why = _skip_reason(p, known_cards, known_models)
        if why:
            skipped.append(f"{table.id}#{i}: {why}")
            continue
        assert p.card and p.model and p.tp
        if p.tokens_per_s is None:  # a latency point (checked by _skip_reason)
            assert p.latency_s and p.batch
            out.append(Case(table.id, i, p.card, p.model, PRECISIONS[p.precision.lower()], p.tp,
                            p.isl, p.osl, p.batch, float(p.latency_s), 1.0, "latency"))
            continue
        cards = p.tp * p.pp
        per = {"gpu": 1.0, "tp_group": float(cards), "system": float(p.gpus or cards)}
        tok = (p.isl + p.osl) / p.osl if table.token_definition == "total" else 1.0
        caps = [x for x in (p.batch, p.concurrency, p.num_prompts,
                            table.num_prompts_by_lengths.get(f"{p.isl}/{p.osl}")) if x]
        out.append(Case(table.id, i, p.card, p.model, PRECISIONS[p.precision.lower()], p.tp,
                        p.isl, p.osl, min(caps) if caps else None, float(p.tokens_per_s),
                        per[table.throughput_per] * tok))
    return out, skipped


def _skip_reason(p: TablePoint, cards: set[str], models: set[str]) -> str | None:
    if p.tokens_per_s is None and (p.latency_s is None or p.batch is None):
        return "neither a throughput nor a latency with its batch"
    if p.card is None or p.card not in cards:
        return f"card {p.card_name or p.card!r} not in the library"
    if p.model is None or p.model not in models:
        return f"model {p.model_name or p.model!r} not in the library"
    if p.precision.lower() not in PRECISIONS:
        return f"precision {p.precision!r} not modelled"
    if p.tp is None:
        return "tensor-parallel degree not stated"
    if p.pp > 1:
        return "pipeline parallelism (serving with pp > 1 is not modelled)"
    if p.parallelism and "DEP" in p.parallelism.upper():
        return f"{p.parallelism}: attention data parallelism is not modelled"
    return None


def batch_latency_s(case: Case, hw: Hardware, library: Library) -> float:
    """One batch of `case.batch` requests: prefill of batch·ISL tokens (in chunks of the
    engine's token budget), then OSL-1 decode steps whose context grows from ISL to ISL+OSL
    (attention is linear in context, so the mean context's step times OSL-1 is exact)."""
    model, layout = library.model(case.model), Layout(tp=case.tp)
    prec = Precision.preset(case.precision)
    a = model.architecture
    window = a.sliding_window.window_tokens if a.sliding_window else None
    b, isl, osl = float(case.batch), float(case.isl), float(case.osl)
    budget = hw.engine.rules.max_num_tokens if hw.engine is not None else 8192
    seqs_per_step = max(min(budget // case.isl, case.batch), 1)
    steps = math.ceil(case.batch / seqs_per_step)
    pre = step_time(model, hw, layout, prec,
                    StepBatch.prefill(float(seqs_per_step), isl, None, window)).total_s * steps
    dec = step_time(model, hw, layout, prec, StepBatch.decode(b, isl + osl / 2, window)).total_s
    return pre + (osl - 1) * dec


def predict(case: Case, hw: Hardware, library: Library) -> float:
    """The case's value in its table's units (tokens/s, or seconds for a latency point), or
    NaN when it does not fit in memory."""
    if case.kind == "latency":
        return batch_latency_s(case, hw, library)
    prec = Precision.preset(case.precision)
    res = offline_throughput(library.model(case.model), hw, Layout(tp=case.tp), prec,
                             LengthMoments(float(case.isl), float(case.osl)), batch=case.batch)
    return res.offline_tokens_per_s_per_card * case.scale if res.fits else float("nan")


_BATCH: dict[tuple, int] = {}


def _predict_fast(case: Case, hw: Hardware, library: Library) -> float:
    """`predict` for the fit: the batch (which the fitted factors do not change: it is set by
    memory, the engine's rules and the table) is found once per case; each evaluation is then
    one mixed step."""
    if case.kind == "latency":
        return batch_latency_s(case, hw, library)
    key = (case, hw.card_id, hw.engine_id)
    if key not in _BATCH:
        prec = Precision.preset(case.precision)
        res = offline_throughput(library.model(case.model), hw, Layout(tp=case.tp), prec,
                                 LengthMoments(float(case.isl), float(case.osl)), batch=case.batch)
        _BATCH[key] = res.batch_size if res.fits else 0
    b = _BATCH[key]
    if b <= 0:
        return float("nan")
    st, emitted = mixed_step(library.model(case.model), hw, Layout(tp=case.tp),
                             Precision.preset(case.precision),
                             LengthMoments(float(case.isl), float(case.osl)), float(b))
    return emitted / st.total_s / case.tp * case.scale


def _hardware(base: Hardware, theta: np.ndarray) -> Hardware:
    return base.with_overrides(engine_compute=math.exp(theta[0]),
                               engine_bandwidth=math.exp(theta[1]),
                               step_overhead_ms=theta[2], engine_seq_overhead_us=theta[3])


def _residuals(theta, cases, bases, library, prior_weight: float = 1.0) -> np.ndarray:
    hws = {c: _hardware(b, theta) for c, b in bases.items()}
    r = []
    for case in cases:
        pred = _predict_fast(case, hws[case.card], library)
        r.append(math.log(pred / case.published) if pred > 0 and math.isfinite(pred) else 3.0)
    prior = prior_weight * (theta - PRIOR_CENTER) / PRIOR_SCALE
    return np.concatenate([np.array(r), prior])


def fit_cases(cases: list[Case], bases: dict[str, Hardware], library: Library,
              start: np.ndarray | None = None, prior_weight: float = 1.0) -> np.ndarray:
    """Least-squares factors (log compute, log bandwidth, step ms, per-sequence µs)."""
    x0 = PRIOR_CENTER.copy() if start is None else start
    x0 = np.clip(x0, LOWER + 1e-9, UPPER - 1e-9)
    sol = least_squares(_residuals, x0, bounds=(LOWER, UPPER),
                        args=(cases, bases, library, prior_weight),
                        diff_step=1e-3, xtol=1e-8, ftol=1e-8, max_nfev=400,
                        loss="soft_l1", f_scale=ROBUST_SCALE)
    return sol.x


@dataclass(frozen=True)
class CardResult:
    card: str
    theta: np.ndarray
    cases: list[Case]
    residuals: list[float]
    loo: list[float]


def _fit_group(cases: list[Case], bases: dict[str, Hardware], library: Library,
               loo: bool) -> CardResult:
    theta = fit_cases(cases, bases, library)
    res = _residuals(theta, cases, bases, library)[: len(cases)].tolist()
    held = []
    if loo:
        # leave-one-out up to LOO_MAX points; above, K-fold (every K-th point held out together)
        k = len(cases) if len(cases) <= LOO_MAX else KFOLD
        held = [0.0] * len(cases)
        for f in range(k):
            out_idx = list(range(f, len(cases), k))
            rest = [c for i, c in enumerate(cases) if i % k != f]
            th = fit_cases(rest, bases, library, start=theta)
            r = _residuals(th, [cases[i] for i in out_idx], bases, library)
            for j, i in enumerate(out_idx):
                held[i] = float(r[j])
    card = cases[0].card if len({c.card for c in cases}) == 1 else "pooled"
    return CardResult(card, theta, cases, res, held)


def _card_fit(r: CardResult, tables: list[str], tier: str, note: str | None) -> CardFit:
    errs = [abs(math.expm1(x)) for x in r.residuals]
    loo = [abs(math.expm1(x)) for x in r.loo]
    spread = r.loo or r.residuals
    sigma = math.sqrt(statistics.fmean(x * x for x in spread)) if spread else None
    th = r.theta
    return CardFit(
        factors=EngineFactors(compute=round(math.exp(th[0]), 4),
                              bandwidth=round(math.exp(th[1]), 4),
                              step_overhead_ms=round(float(th[2]), 4),
                              seq_overhead_us=round(float(th[3]), 4)),
        tier=tier, tables=tuple(tables), points=len(r.cases),
        residual_median_abs=round(statistics.median(errs), 4) if errs else None,
        loo_median_abs=round(statistics.median(loo), 4) if loo else None,
        log_sigma=round(sigma, 4) if sigma is not None else None, note=note)


@dataclass(frozen=True)
class EngineReport:
    engine: str
    fit: EngineFit
    results: list[CardResult]
    skipped: list[str]


def fit_engine(engine: str, library: Library, loo: bool = True) -> EngineReport | None:
    """Fit one engine from every table naming it; None when it has no table."""
    tables = [library.engine_table(t) for t in library.ids("engine_table")]
    tables = [t for t in tables if t.engine == engine]
    if not tables:
        return None
    spec = library.engine(engine)
    cases: list[Case] = []
    skipped: list[str] = []
    for t in tables:
        c, s = cases_of(t, library)
        cases += c
        skipped += s
    bases: dict[str, Hardware] = {}
    usable = []
    for c in cases:
        if c.card not in spec.runs_on:
            skipped.append(f"{c.label}: engine '{engine}' does not list card '{c.card}' in runs_on")
            continue
        if c.card not in bases:
            bases[c.card] = Hardware.load(c.card, library, engine=engine)
        try:
            ok = math.isfinite(predict(c, bases[c.card], library))
        except (LayoutError, PrecisionError, ConfigError) as exc:
            skipped.append(f"{c.label}: {exc}")
            continue
        if not ok:
            skipped.append(f"{c.label}: does not fit in memory in the model")
            continue
        usable.append(c)
    if not usable:
        return None
    table_ids = [t.id for t in tables]
    results, cards = [], {}
    by_card: dict[str, list[Case]] = {}
    for c in usable:
        by_card.setdefault(c.card, []).append(c)
    for card in sorted(by_card):
        group = by_card[card]
        if len(group) < MIN_POINTS_PER_CARD:
            continue
        r = _fit_group(group, {card: bases[card]}, library, loo)
        results.append(r)
        cards[card] = _card_fit(r, table_ids, "published", None)
    # labelled 'pooled' even when the tables hold one card, so the report's per-card summary
    # does not count that card's points twice
    pooled_r = dataclasses.replace(_fit_group(usable, bases, library, loo=False), card="pooled")
    pooled = _card_fit(pooled_r, table_ids, "assumed",
                       f"one factor set over every card of the tables ({', '.join(sorted(by_card))}); "
                       "applied to cards with no table of their own")
    fit = EngineFit(engine=engine, generated_by="fleetsim calibrate engines "
                    "(sim/calibrate/engines.py)", cards=cards, pooled=pooled)
    return EngineReport(engine, fit, results + [pooled_r], skipped)


def fit_all(library: Library, loo: bool = True) -> list[EngineReport]:
    out = []
    for eid in library.ids("engine"):
        r = fit_engine(eid, library, loo)
        if r is not None:
            out.append(r)
    return out


def write_fits(reports: list[EngineReport], out_dir) -> list:
    """Write each engine's fit as `<out_dir>/<engine>.yaml` (atomically); returns the paths."""
    from pathlib import Path

    from sim.calibrate.generated import write_record

    return [write_record(
        Path(out_dir) / f"{r.engine}.yaml",
        f"# Written by `fleetsim calibrate engines`: {r.engine}'s factors fitted to its "
        "published tables\n# (hardware_specs/engine_tables). Do not edit by hand: refit.\n",
        r.fit) for r in reports]


def render_markdown(reports: list[EngineReport]) -> str:
    """The calibration report: factors, in-sample and leave-one-out residuals per point."""
    lines = ["# Engine calibration: fitted to vendors' published tables", "",
             "Generated by `fleetsim calibrate engines` (`make bench`). Each engine release's "
             "factors are fitted by least squares to the throughput tables its vendor published "
             "for it (`hardware_specs/engine_tables/`); MLPerf results are not among them (they "
             "validate, `benchmarks/results/fidelity_mlperf.md`). Leave-one-out: each point "
             "predicted by a fit made without it.", ""]
    all_res, all_loo = [], []
    lines += ["| engine | card | points | compute | bandwidth | step ms | per-seq µs | "
              "median abs error | leave-one-out median | log sigma |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        for card, f in list(r.fit.cards.items()) + ([("pooled", r.fit.pooled)]
                                                     if r.fit.pooled else []):
            x = f.factors
            lines.append(f"| {r.engine} | {card} | {f.points} | {x.compute:.3f} | "
                         f"{x.bandwidth:.3f} | {x.step_overhead_ms:.2f} | "
                         f"{x.seq_overhead_us:.1f} | {_pct(f.residual_median_abs)} | "
                         f"{_pct(f.loo_median_abs)} | {_num(f.log_sigma)} |")
        for res in r.results:
            if res.card == "pooled":
                continue
            all_res += [abs(math.expm1(v)) for v in res.residuals]
            all_loo += [abs(math.expm1(v)) for v in res.loo]
    if all_res:
        lines += ["", f"**Over every per-card fit: median |error| {statistics.median(all_res):.1%} "
                      f"in sample ({len(all_res)} points), "
                      + (f"{statistics.median(all_loo):.1%} leave-one-out" if all_loo else
                         "no leave-one-out") + ".**", ""]
    for r in reports:
        lines += [f"## {r.engine}", "",
                  "| point | batch | published | predicted | error | leave-one-out error |",
                  "|---|---|---|---|---|---|"]
        for res in r.results:
            if res.card == "pooled":
                continue
            loo = res.loo or [float("nan")] * len(res.cases)
            for c, e, h in zip(res.cases, res.residuals, loo):
                fmt = "{:,.3f} s" if c.kind == "latency" else "{:,.0f}"
                lines.append(f"| {c.label} | {c.batch or '-'} | {fmt.format(c.published)} | "
                             f"{fmt.format(c.published * math.exp(e))} | {math.expm1(e):+.1%} | "
                             f"{_signed(h)} |")
        if r.skipped:
            lines += ["", "Skipped: " + "; ".join(r.skipped)]
        lines.append("")
    return "\n".join(lines)


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _signed(x: float) -> str:
    return "-" if not math.isfinite(x) else f"{math.expm1(x):+.1%}"
