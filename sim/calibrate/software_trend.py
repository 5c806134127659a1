"""How fast each software stack makes the same card faster: a rate fitted to dated releases.

The evidence is the vendors' own versioned throughput tables (`hardware_specs/engine_tables/`):
the same card, model, precision, TP and input/output lengths measured again by a later release
of the same stack. Two steps, so that a release that published many rows does not outvote one
that published few, and so that a table's mix of configurations does not pass for progress:

1. release levels: log(per-card tokens/s) = a[configuration] + d[release], least squares over
   every point (two-way fixed effects; d of the first release is 0). d[r] is how much faster
   release r runs the configurations it shares with the others, on a log scale.
2. the rate: d[r] = c + rate * t[r] (t in years), ordinary least squares over releases. Its
   standard error comes from the scatter of the release levels about the line (n - 2 degrees of
   freedom): releases are the independent observations, not table rows.

Leave-last-release-out: the line fitted without the newest release predicts its level; the
result says whether it fell within the stated 95% prediction interval.

    fleetsim calibrate engines     # also writes hardware_specs/software_trends/<stack>.yaml
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date

import numpy as np
from scipy import stats

from sim.config.engine import ReleaseLevel, SoftwareTrend, TrendCheck
from sim.config.library import Library

MIN_RELEASES = 4
"""Fewer dated releases with shared configurations (fewer than 2 degrees of freedom for the
line's scatter): the stack takes the rate pooled over every stack's release levels (one slope,
an intercept per stack), tagged `pooled`."""


def years_of(d: str) -> float:
    """A YYYY-MM[-DD] date as decimal years (months and days as fractions)."""
    parts = [int(x) for x in (d.split("-") + ["1", "1"])[:3]]
    day = date(parts[0], parts[1], parts[2])
    start = date(parts[0], 1, 1)
    return parts[0] + (day - start).days / 365.25


def _nearby(tokens: int) -> int:
    """Lengths rounded to two significant figures, so that 1,024 and 1,000 tokens meet (tables
    moved from round numbers to powers of two; ~2% apart, far below a release's step)."""
    return int(float(f"{tokens:.2g}"))


def _points(stack: str, library: Library) -> list[tuple[str, tuple, float]]:
    """(engine id, configuration key, per-card output tokens/s) of every throughput point of
    the stack's tables that fleetsim can read (`cases_of`: card and model known, units)."""
    from sim.calibrate.engines import cases_of

    out = []
    for tid in library.ids("engine_table"):
        table = library.engine_table(tid)
        if table.engine not in library.ids("engine") or \
                library.engine(table.engine).stack != stack:
            continue
        cases, _ = cases_of(table, library)
        for c in cases:
            if c.kind != "throughput":
                continue
            key = (c.card, c.model, c.precision, c.tp, _nearby(c.isl), _nearby(c.osl))
            out.append((table.engine, key, c.published / c.scale))
    return out


def release_levels(stack: str, library: Library) -> list[ReleaseLevel]:
    """Step 1: each release's log level over the configurations it shares (first release 0),
    oldest first. Releases that share no configuration with the rest are left out."""
    pts = _points(stack, library)
    shared = defaultdict(set)
    for eid, key, _ in pts:
        shared[key].add(eid)
    pts = [p for p in pts if len(shared[p[1]]) >= 2]  # a configuration seen once says nothing
    dates = {eid: library.engine(eid).release_date for eid, _, _ in pts}
    rels = sorted(dates, key=lambda e: (years_of(dates[e]), e))
    if len(rels) < 2:
        return []
    keys = sorted({p[1] for p in pts}, key=str)
    ki = {k: i for i, k in enumerate(keys)}
    ri = {r: i for i, r in enumerate(rels)}
    # unknowns: a[key] (len(keys)), d[release] for releases 1.. (release 0 is the reference)
    rows = np.zeros((len(pts), len(keys) + len(rels) - 1))
    y = np.zeros(len(pts))
    for n, (eid, key, tok) in enumerate(pts):
        rows[n, ki[key]] = 1.0
        if ri[eid] > 0:
            rows[n, len(keys) + ri[eid] - 1] = 1.0
        y[n] = math.log(tok)
    sol, *_ = np.linalg.lstsq(rows, y, rcond=None)
    counts = defaultdict(int)
    for eid, _, _ in pts:
        counts[eid] += 1
    levels = [0.0] + [float(v) for v in sol[len(keys):]]
    return [ReleaseLevel(engine=r, release_date=dates[r], log_level=round(lv, 6),
                         points=counts[r]) for r, lv in zip(rels, levels)]


def _line(levels: list[ReleaseLevel]) -> tuple[float, float, float, float, float]:
    """OLS of level on years: (slope, intercept, slope se, residual sd, mean year)."""
    t = np.array([years_of(lv.release_date) for lv in levels])
    d = np.array([lv.log_level for lv in levels])
    tm = float(t.mean())
    sxx = float(((t - tm) ** 2).sum())
    slope = float(((t - tm) * (d - d.mean())).sum() / sxx) if sxx > 0 else 0.0
    icpt = float(d.mean() - slope * tm)
    dof = len(t) - 2
    resid = d - (icpt + slope * t)
    s = math.sqrt(float((resid ** 2).sum()) / dof) if dof > 0 else math.inf
    return slope, icpt, s / math.sqrt(sxx) if sxx > 0 else math.inf, s, tm


def leave_last_out(levels: list[ReleaseLevel]) -> TrendCheck | None:
    """The newest release's level predicted by the line through the others, with its 95%
    prediction interval (Student t, n - 3 degrees of freedom). None below 4 releases."""
    if len(levels) < MIN_RELEASES + 1:
        return None
    head, last = levels[:-1], levels[-1]
    slope, icpt, _, s, tm = _line(head)
    t = np.array([years_of(lv.release_date) for lv in head])
    tl = years_of(last.release_date)
    se = s * math.sqrt(1 + 1 / len(t) + (tl - tm) ** 2 / float(((t - tm) ** 2).sum()))
    half = float(stats.t.ppf(0.975, len(t) - 2)) * se
    pred = icpt + slope * tl
    return TrendCheck(engine=last.engine, predicted_log_level=round(pred, 6),
                      measured_log_level=last.log_level, interval_log=round(half, 6),
                      within=bool(abs(last.log_level - pred) <= half))


def _pooled(all_levels: dict[str, list[ReleaseLevel]]) -> tuple[float, float]:
    """One slope over every stack's release levels, an intercept per stack: (slope, se)."""
    names = sorted(k for k, v in all_levels.items() if len(v) >= 2)
    rows, y = [], []
    for i, st in enumerate(names):
        for lv in all_levels[st]:
            r = [0.0] * (len(names) + 1)
            r[i] = 1.0
            r[-1] = years_of(lv.release_date)
            rows.append(r)
            y.append(lv.log_level)
    x, yv = np.array(rows), np.array(y)
    sol, *_ = np.linalg.lstsq(x, yv, rcond=None)
    dof = len(yv) - x.shape[1]
    s2 = float(((yv - x @ sol) ** 2).sum()) / max(dof, 1)
    cov = s2 * np.linalg.pinv(x.T @ x)
    return float(sol[-1]), math.sqrt(float(cov[-1, -1]))


def fit_trends(library: Library) -> list[SoftwareTrend]:
    """Step 2 for every stack with at least two dated releases: its own rate with its standard
    error when it has MIN_RELEASES, else the rate pooled over all stacks."""
    levels = {st: release_levels(st, library) for st in stacks(library)}
    pooled = _pooled(levels)
    out = []
    for st, lv in levels.items():
        if len(lv) < 2:
            continue
        own = len(lv) >= MIN_RELEASES
        slope, se = (_line(lv)[0], _line(lv)[2]) if own else pooled
        span = years_of(lv[-1].release_date) - years_of(lv[0].release_date)
        used = {x.engine for x in lv}
        tables = tuple(t for t in library.ids("engine_table")
                       if library.engine_table(t).engine in used)
        out.append(SoftwareTrend(
            stack=st, log_rate_per_year=round(slope, 6), log_rate_se=round(se, 6),
            improvement_per_year=round(math.expm1(slope), 6), releases=tuple(lv),
            last_release=lv[-1].engine, leave_last_out=leave_last_out(lv), tables=tables,
            basis="own" if own else "pooled",
            generated_by="fleetsim calibrate engines (sim/calibrate/software_trend.py)",
            method=("two-way fixed effects (configuration, release) on log per-card output "
                    "tokens/s of the stack's published tables (lengths to two significant "
                    "figures), then least squares of release level on release date; se from the "
                    "release levels' scatter (n - 2 dof)" + (
                        "" if own else f"; {len(lv)} releases over {span:.2f} years are too few "
                        "for a line of its own: slope pooled over every stack's releases "
                        "(an intercept per stack)"))))
    return out


def stacks(library: Library) -> list[str]:
    return sorted({library.engine(e).stack for e in library.ids("engine")})


def write_trends(trends: list[SoftwareTrend], out_dir) -> list:
    """Write `<out_dir>/<stack>.yaml` per trend (atomically); returns the paths."""
    from pathlib import Path

    from sim.calibrate.generated import write_record

    return [write_record(
        Path(out_dir) / f"{tr.stack}.yaml",
        f"# Written by `fleetsim calibrate engines`: how fast the {tr.stack} stack made the same "
        "card faster,\n# fitted to its dated published tables (hardware_specs/engine_tables). Do "
        "not edit by hand: refit.\n", tr) for tr in trends]
