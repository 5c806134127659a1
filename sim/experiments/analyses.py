"""Sweeps, Monte Carlo, tornado, variance-based indices and flip points over a scenario.

All of them build points (YAML-path overrides plus a fleet seed) and run them through
`engine.execute`; none reaches inside a run. Conventions:

- sweep: a full grid over the given paths (or `zip` for paired lists); the fleet seed stays the
  scenario's, so points differ only by the values swept.
- Monte Carlo: draw i uses its own stream (sim.experiments.draws); the option that wins a draw is
  the pipeline's winner (cheapest NPV among options meeting the SLOs), "none" when no option
  meets them, so the win probabilities sum to 1.
- tornado: each uncertain input at its 10th and 90th percentile (first and last choice for a
  discrete input), the others at the scenario's own values; the swing is in each option's NPV.
- first-order sensitivity indices Var(E[NPV | X_i]) / Var(NPV) from the Monte Carlo draws by
  binning X_i into quantile bins (cheap: no extra runs; biased up by about bins / draws).
- flip point: where NPV(a) - NPV(b) changes sign over [low, high]: a grid through the executor
  finds the bracket, then Brent's method (scipy.optimize.brentq) in process. "No flip in range"
  when the sign never changes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.scenario import Scenario
from sim.experiments import draws as D
from sim.experiments.engine import Timer, execute
from sim.experiments.executors import Executor
from sim.config.paths import creatable, get_value, with_overrides
from sim.experiments.runner import Point

Progress = Callable[[int, int], None] | None


def _check_paths(scn: Scenario, values: Mapping[str, Any], where: str) -> None:
    with_overrides(scn, values, None, where=where)


def sweep(scn: Scenario, grid: Mapping[str, Sequence[Any]], *, mode: str = "grid",
          base: Path | None = None, library: Library | None = None,
          executor: Executor | None = None, out: Path | None = None,
          progress: Progress = None, allow_outside_paths: bool = False) -> pd.DataFrame:
    """One row per (point, option) with a column per swept path."""
    if not grid:
        raise ConfigError("sweep: give at least one path and its values")
    for path, vals in grid.items():
        if len(vals) == 0:
            raise ConfigError(f"sweep: {path}: no values")
        for v in vals:
            _check_paths(scn, {path: v}, "sweep")
    paths = list(grid)
    if mode == "grid":
        combos = list(itertools.product(*(grid[p] for p in paths)))
    elif mode == "zip":
        lens = {len(grid[p]) for p in paths}
        if len(lens) != 1:
            raise ConfigError("sweep: zip needs lists of the same length")
        combos = list(zip(*(grid[p] for p in paths)))
    else:
        raise ConfigError(f"sweep: unknown mode '{mode}' (grid or zip)")
    points = [Point(i, dict(zip(paths, c)), None, dict(zip(paths, c)))
              for i, c in enumerate(combos)]
    return execute(scn, points, base=base, library=library, executor=executor, out=out,
                   progress=progress, allow_outside_paths=allow_outside_paths)


@dataclass
class MonteCarloResult:
    draws: pd.DataFrame
    """One row per (draw, option): metrics, meets_slo, winner, world and the drawn inputs."""
    inputs: tuple[str, ...]
    win_probability: dict[str, float]
    percentiles: pd.DataFrame
    convergence: pd.DataFrame
    sensitivity: pd.DataFrame
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        npv = {r.option: {"p5": r.npv_p5, "p50": r.npv_p50, "p95": r.npv_p95,
                          "mean": r.npv_mean} for r in self.percentiles.itertuples()}
        usd = {r.option: {"p5": r.usd_per_m_tokens_p5, "p50": r.usd_per_m_tokens_p50,
                          "p95": r.usd_per_m_tokens_p95} for r in self.percentiles.itertuples()}
        return {"draws": int(self.draws["point"].nunique()),
                "win_probability": self.win_probability, "npv_usd": npv,
                "usd_per_m_tokens": usd, "inputs": list(self.inputs),
                "seconds": round(self.seconds, 3)}


def monte_carlo(scn: Scenario, draws: int, *, fidelity: bool = True, base: Path | None = None,
                library: Library | None = None, executor: Executor | None = None,
                out: Path | None = None, progress: Progress = None,
                allow_outside_paths: bool = False) -> MonteCarloResult:
    if draws < 1:
        raise ConfigError(f"monte carlo: draws must be >= 1 (got {draws})")
    timer = Timer()
    plan = D.plan(scn, fidelity)
    if not plan.paths and not plan.worlds:
        raise ConfigError("monte carlo: the scenario has no `uncertain` inputs to draw")
    points = []
    for i in range(draws):
        world, values, fseed = D.draw(plan, scn.seed, i, draws)
        labels = {"world": world, **{f"in:{p}": v for p, v in values.items()}}
        points.append(Point(i, values, fseed, labels))
    _check_paths(scn, points[0].overrides, "uncertain")
    df = execute(scn, points, base=base, library=library, executor=executor, out=out,
                 progress=progress, allow_outside_paths=allow_outside_paths,
                 ).rename(columns={"point": "draw"})
    df.insert(0, "point", df["draw"])
    return summarise_draws(df, plan.paths, timer.seconds)


def summarise_draws(df: pd.DataFrame, inputs: Sequence[str], seconds: float = 0.0
                    ) -> MonteCarloResult:
    n = df["draw"].nunique()
    winners = df[df.winner].groupby("draw")["option"].first()
    counts = winners.value_counts()
    options = list(dict.fromkeys(df["option"]))
    win = {o: float(counts.get(o, 0)) / n for o in options}
    win["none"] = 1.0 - sum(win.values())
    win["none"] = max(win["none"], 0.0)
    pct = []
    for o in options:
        d = df[df.option == o]
        row = {"option": o}
        for col, name in (("npv_usd", "npv"), ("usd_per_m_tokens", "usd_per_m_tokens")):
            q = np.nanpercentile(d[col].to_numpy(float), [5, 50, 95]) if d[col].notna().any() \
                else [math.nan] * 3
            row.update({f"{name}_p5": q[0], f"{name}_p50": q[1], f"{name}_p95": q[2],
                        f"{name}_mean": float(d[col].mean())})
        row["meets_slo_probability"] = float(d["meets_slo"].mean())
        pct.append(row)
    # convergence: running win probability of each option with its binomial standard error
    conv = []
    ordered = winners.reindex(range(n)).fillna("none").to_numpy()
    checkpoints = sorted({min(n, int(round(x))) for x in np.geomspace(10, n, 12)} | {n}) \
        if n >= 10 else [n]
    for k in checkpoints:
        for o in [*options, "none"]:
            p = float((ordered[:k] == o).mean())
            conv.append({"draws": k, "option": o, "win_probability": p,
                         "standard_error": math.sqrt(max(p * (1 - p), 0.0) / k)})
    sens = first_order_indices(df, inputs)
    return MonteCarloResult(df, tuple(inputs), win, pd.DataFrame(pct), pd.DataFrame(conv), sens,
                            seconds)


def first_order_indices(df: pd.DataFrame, inputs: Sequence[str], bins: int | None = None
                        ) -> pd.DataFrame:
    """Var(E[NPV | X]) / Var(NPV) per (input, option), X binned by quantiles."""
    rows = []
    n = df["draw"].nunique()
    k = bins or max(2, min(20, int(math.sqrt(n))))
    for o, d in df.groupby("option", sort=False):
        y = d["npv_usd"].to_numpy(float)
        var = float(np.var(y))
        for p in inputs:
            col = f"in:{p}"
            if col not in d or var <= 0:
                continue
            x = d[col]
            if x.dtype == object:
                groups = x.astype(str).to_numpy()
            else:
                ranks = x.rank(method="first").to_numpy()
                groups = np.minimum(((ranks - 1) * k / len(ranks)).astype(int), k - 1)
            frame = pd.DataFrame({"g": groups, "y": y})
            means = frame.groupby("g")["y"].agg(["mean", "size"])
            between = float((means["size"] * (means["mean"] - y.mean()) ** 2).sum() / len(y))
            rows.append({"input": p, "option": o, "first_order_index": between / var})
    return pd.DataFrame(rows, columns=["input", "option", "first_order_index"])


def tornado(scn: Scenario, *, fidelity: bool = True, low_q: float = 0.1, high_q: float = 0.9,
            base: Path | None = None, library: Library | None = None,
            executor: Executor | None = None, out: Path | None = None,
            progress: Progress = None, allow_outside_paths: bool = False) -> pd.DataFrame:
    """Columns: input, option, low_value, high_value, npv_low_usd, npv_high_usd, base_npv_usd,
    swing_usd; sorted by the largest swing of any option."""
    inputs = D.uncertain_inputs(scn, fidelity)
    if not inputs:
        raise ConfigError("tornado: the scenario has no `uncertain` inputs")
    points = [Point(0, {}, None, {"input": "", "side": "base"})]
    ends = {}
    for path in sorted(inputs):
        d = inputs[path]
        if d.kind == "choice":
            lo, hi = d.choice[0], d.choice[-1]
        else:
            lo, hi = (float(v) for v in D.ppf(d, np.array([low_q, high_q])))
        ends[path] = (lo, hi)
        points.append(Point(len(points), {path: lo}, None, {"input": path, "side": "low"}))
        points.append(Point(len(points), {path: hi}, None, {"input": path, "side": "high"}))
    df = execute(scn, points, base=base, library=library, executor=executor, out=out,
                 progress=progress, allow_outside_paths=allow_outside_paths)
    base_npv = df[df.side == "base"].set_index("option")["npv_usd"]
    rows = []
    for path, (lo, hi) in ends.items():
        for o in base_npv.index:
            sel = df[(df.input == path) & (df.option == o)].set_index("side")["npv_usd"]
            rows.append({"input": path, "option": o, "low_value": lo, "high_value": hi,
                         "npv_low_usd": float(sel["low"]), "npv_high_usd": float(sel["high"]),
                         "base_npv_usd": float(base_npv[o])})
    t = pd.DataFrame(rows)
    t["swing_usd"] = (t.npv_high_usd - t.npv_low_usd).abs()
    order = t.groupby("input")["swing_usd"].max().sort_values(ascending=False).index
    t["input"] = pd.Categorical(t["input"], categories=list(order), ordered=True)
    t = t.sort_values(["input", "option"], kind="stable").reset_index(drop=True)
    t["input"] = t["input"].astype(str)
    return t


@dataclass
class FlipResult:
    param: str
    options: tuple[str, str]
    bracket: tuple[float, float]
    value: float | None
    """Where NPV(options[0]) == NPV(options[1]); None: no flip in the bracket."""
    below: str | None
    """The cheaper option just below the flip (or everywhere, when there is none)."""
    above: str | None
    grid: pd.DataFrame
    other_flips: tuple[tuple[float, float], ...] = ()
    """Further sign changes on the grid (brackets), when the difference is not monotone."""

    def to_json(self) -> dict:
        return {"param": self.param, "options": list(self.options),
                "bracket": list(self.bracket), "value": self.value,
                "cheaper_below": self.below, "cheaper_above": self.above,
                "other_flips": [list(b) for b in self.other_flips],
                "statement": self.statement()}

    def statement(self) -> str:
        a, b = self.options
        lo, hi = self.bracket
        if self.value is None:
            other = b if self.below == a else a
            return (f"no flip in range: {self.below} stays cheaper than {other} for "
                    f"{self.param} from {lo:g} to {hi:g}")
        return (f"{self.below} is cheaper below {self.param} = {self.value:,.6g}, "
                f"{self.above} above (searched {lo:g} to {hi:g})")


def flip(scn: Scenario, param: str, between: tuple[float, float],
         options: tuple[str, str] | None = None, *, grid_points: int = 9,
         base: Path | None = None, library: Library | None = None,
         executor: Executor | None = None, progress: Progress = None,
         xtol: float | None = None, allow_outside_paths: bool = False) -> FlipResult:
    from scipy.optimize import brentq

    lo, hi = float(between[0]), float(between[1])
    if not lo < hi:
        raise ConfigError(f"flip: --between: low {lo:g} must be below high {hi:g}")
    get_value(scn, param) if not creatable(param) else None
    _check_paths(scn, {param: lo}, "flip")
    _check_paths(scn, {param: hi}, "flip")
    if options is None:
        options = _two_leaders(scn, base, library, allow_outside_paths)
    for o in options:
        if o not in scn.options:
            raise ConfigError(f"flip: --options: unknown option '{o}' (known: "
                              f"{', '.join(scn.options)})")
    if options[0] == options[1]:
        raise ConfigError("flip: --options: name two different options")
    a, b = options
    xs = np.linspace(lo, hi, max(grid_points, 2))
    points = [Point(i, {param: float(x)}, None, {param: float(x)}) for i, x in enumerate(xs)]
    df = execute(scn, points, base=base, library=library, executor=executor, progress=progress,
                 allow_outside_paths=allow_outside_paths)
    diff = _diff_frame(df, param, a, b)
    d = diff["npv_a_minus_b_usd"].to_numpy()
    sign_changes = [i for i in range(len(d) - 1) if np.sign(d[i]) != np.sign(d[i + 1])
                    or d[i] == 0]
    cheaper = lambda v: a if v < 0 else b  # noqa: E731
    if not sign_changes:
        return FlipResult(param, (a, b), (lo, hi), None, cheaper(d[0]), cheaper(d[0]), diff)
    i = sign_changes[0]
    if d[i] == 0:
        value = float(xs[i])
    else:
        from sim.stages import RunCache, run

        lib = library or Library.default()
        memo: dict[float, float] = {}
        cache = RunCache()

        def f(x: float) -> float:
            if x not in memo:
                s = with_overrides(scn, {param: x}, lib, where="flip")
                r = run(s, lib, base=base, detail=False, allow_outside_paths=allow_outside_paths,
                        cache=cache).options
                memo[x] = r[a].npv_usd - r[b].npv_usd
            return memo[x]

        value = float(brentq(f, float(xs[i]), float(xs[i + 1]),
                             xtol=xtol or (hi - lo) * 1e-5, rtol=1e-10))
    others = tuple((float(xs[j]), float(xs[j + 1])) for j in sign_changes[1:])
    return FlipResult(param, (a, b), (lo, hi), value, cheaper(d[i]),
                      cheaper(d[min(i + 1, len(d) - 1)]), diff, others)


def _diff_frame(df: pd.DataFrame, param: str, a: str, b: str) -> pd.DataFrame:
    pa = df[df.option == a].set_index("point")
    pb = df[df.option == b].set_index("point")
    out = pd.DataFrame({"value": pa[param], "npv_a_usd": pa["npv_usd"],
                        "npv_b_usd": pb["npv_usd"]}).reset_index(drop=True)
    out["npv_a_minus_b_usd"] = out.npv_a_usd - out.npv_b_usd
    return out


def _two_leaders(scn: Scenario, base: Path | None, library: Library | None,
                 allow_outside_paths: bool = False) -> tuple[str, str]:
    """The base run's winner and the cheapest other option (by NPV)."""
    from sim.stages import run

    r = run(scn, library, base=base, detail=False, allow_outside_paths=allow_outside_paths)
    if len(r.options) < 2:
        raise ConfigError("flip: the scenario needs two options to compare")
    # options meeting the SLOs first, each group cheapest first
    opts = sorted(r.options, key=lambda k: (not r.options[k].meets_slo, r.options[k].npv_usd))
    first = r.decision.winner or opts[0]
    second = next(o for o in opts if o != first)
    return first, second
