"""Monte Carlo draws of a scenario's uncertain inputs.

Each draw `i` gets its own stream, `SeedSequence(seed).spawn(n)[i]`, so its values do not depend
on the executor, the batch it runs in or the order draws finish. Per draw:

1. a joint world is picked (`joint:` cases by probability; the rest of the mass is "base");
2. one uniform per uncertain input, made dependent through a Gaussian copula when the scenario
   gives rank correlations (Spearman rho -> Pearson 2 sin(pi rho / 6));
3. each uniform goes through its marginal's inverse CDF (normal and lognormal truncated to their
   bounds, not clipped); a joint world's `set` values replace the draws of its paths.

The model's own error is a default uncertain input: `efficiency.<card>` for every card that
serves, lognormal with median 1 and the held-out log spread of the card's engine fit to its
vendor's published tables (`hardware_specs/engine_fits/`, `fleetsim calibrate engines`; the
engine in force at the scenario's start), unless the scenario gives its own
`uncertain.efficiency.<card>`. MLPerf results only validate; they set no part of it.
Likewise each serving stack's software improvement rate past its last release,
`software_rate_per_year.<stack>` (normal around its fit to the dated tables, truncated to
[0, 1]; one draw per stack, shared by its cards), unless the scenario fixes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from sim.config.loader import ConfigError
from sim.config.scenario import (Distribution, LogNormal, LogNormalDist, Normal, NormalDist,
                                 Scenario)

FIDELITY_BOUNDS = (0.5, 1.5)
"""Truncation of the efficiency draws (assumed: a card delivers between half and 1.5x the
modelled throughput)."""
FIDELITY_FLOOR_SIGMA = 0.05
"""Smallest log spread drawn: a fit's held-out residuals on a dozen vendor points understate
what a different model, length mix or deployment meets (assumed)."""


def fidelity_prior(card: str, as_of: str | None = None, library=None) -> dict:
    """{median, sigma, low, high, n, source}: the uncertainty of the modelled throughput of
    `card` on the engine it runs at `as_of`, from that engine's fit (held-out log spread)."""
    from sim.config.library import Library
    from sim.perf.hardware import Hardware, engine_fit_for

    lib = library or Library.default()
    hw = Hardware.load(card, lib, as_of=as_of)
    found = engine_fit_for(hw, lib)
    lo, hi = FIDELITY_BOUNDS
    if found is None or found[0].log_sigma is None:
        return {"median": 1.0, "sigma": 0.25, "low": lo, "high": hi, "n": 0,
                "source": f"{hw.engine_id}: no engine fit; sigma 0.25 assumed"}
    fit, eid, how = found
    return {"median": 1.0, "sigma": max(fit.log_sigma, FIDELITY_FLOOR_SIGMA), "low": lo,
            "high": hi, "n": fit.points,
            "source": f"held-out log spread of {eid}'s fit ({how}) to {fit.points} published "
                      f"points, hardware_specs/engine_fits/{eid}.yaml (derived); bounds assumed"}


def serving_cards(scn: Scenario) -> list[str]:
    cards: set[str] = set()
    for o in scn.options.values():
        cards |= set(o.serve_on) or {b.card for b in (*o.buy, *o.lease, *o.reserve)}
    for w in scn.workloads.values():
        if w.rent:
            cards.add(w.rent.card)
    return sorted(cards)


def uncertain_inputs(scn: Scenario, fidelity: bool = True) -> dict[str, Distribution]:
    """The scenario's uncertain inputs, plus the model's fidelity error per serving card."""
    out = dict(scn.uncertain)
    if fidelity:
        for card in serving_cards(scn):
            if f"efficiency.{card}" in out:
                continue
            f = fidelity_prior(card, scn.start)
            out.setdefault(f"efficiency.{card}", LogNormalDist(lognormal=LogNormal(
                median=f["median"], sigma=f["sigma"], low=f["low"], high=f["high"])))
        for stack, p in software_priors(scn).items():
            out.setdefault(f"software_rate_per_year.{stack}", NormalDist(normal=Normal(
                mean=p["mean"], sd=p["sd"], low=p["low"], high=p["high"])))
    return out


def software_priors(scn: Scenario, library=None) -> dict[str, dict]:
    """Per stack whose cards serve under a follow-releases plan and whose rate the scenario
    does not fix: the improvement-rate prior (`sim.perf.software.rate_prior`). One input per
    stack, so every card of a stack draws the same rate (correlated within the stack)."""
    from sim.config.library import Library
    from sim.perf.software import rate_prior, stack_of

    lib = library or Library.default()
    follow = any((o.engine or scn.engine).plan == "follow-releases"
                 for o in scn.options.values())
    out = {}
    for card in serving_cards(scn) if follow else []:
        stack = stack_of(card, lib)
        if stack is None or stack in scn.software_rate_per_year or stack in out:
            continue
        p = rate_prior(stack, lib)
        if p is not None:
            out[stack] = p
    return dict(sorted(out.items()))


def _ppf_uniform(d, u):
    lo, hi = d.uniform
    return lo + (hi - lo) * u


def _ppf_triangular(d, u):
    lo, mode, hi = d.triangular
    return stats.triang.ppf(u, (mode - lo) / (hi - lo), loc=lo, scale=hi - lo)


def _ppf_normal(d, u):
    n = d.normal
    return _truncated(stats.norm(n.mean, n.sd), n.low, n.high, u)


def _ppf_lognormal(d, u):
    ln = d.lognormal
    return _truncated(stats.lognorm(ln.sigma, scale=ln.median), ln.low, ln.high, u)


def _ppf_choice(d, u):
    choices = list(d.choice)
    w = np.asarray(d.weights or [1.0] * len(choices), dtype=float)
    cdf = np.cumsum(w) / w.sum()
    idx = np.minimum(np.searchsorted(cdf, u, side="right"), len(choices) - 1)
    return np.array([choices[i] for i in idx], dtype=object)


PPF = {"uniform": _ppf_uniform, "triangular": _ppf_triangular, "normal": _ppf_normal,
       "lognormal": _ppf_lognormal, "choice": _ppf_choice}
"""Inverse CDF per distribution kind (a new kind: its class in sim.config.scenario, in the
`Distribution` union, and its function here)."""


def ppf(d: Distribution, u: np.ndarray) -> np.ndarray:
    """Inverse CDF of one marginal at uniforms `u` (object array for string choices)."""
    return PPF[d.kind](d, np.asarray(u, dtype=float))


def _truncated(dist, low: float | None, high: float | None, u: np.ndarray) -> np.ndarray:
    a = dist.cdf(low) if low is not None else 0.0
    b = dist.cdf(high) if high is not None else 1.0
    if b - a <= 1e-12:
        raise ConfigError(f"a truncated distribution has no mass between {low} and {high}")
    x = dist.ppf(a + (b - a) * u)
    lo = -math.inf if low is None else low
    hi = math.inf if high is None else high
    return np.clip(x, lo, hi)


def median_value(d: Distribution) -> Any:
    return ppf(d, np.array([0.5]))[0]


@dataclass(frozen=True)
class DrawPlan:
    """The uncertain inputs in a fixed order and the copula's Cholesky factor."""

    paths: tuple[str, ...]
    dists: tuple[Distribution, ...]
    chol: np.ndarray | None
    worlds: tuple[tuple[str, float, dict], ...]


def plan(scn: Scenario, fidelity: bool = True) -> DrawPlan:
    inputs = uncertain_inputs(scn, fidelity)
    paths = tuple(sorted(inputs))
    chol = None
    if scn.correlations:
        idx = {p: i for i, p in enumerate(paths)}
        corr = np.eye(len(paths))
        for c in scn.correlations:
            i, j = idx[c.between[0]], idx[c.between[1]]
            corr[i, j] = corr[j, i] = 2 * math.sin(math.pi * c.rank / 6)
        try:
            chol = np.linalg.cholesky(corr)
        except np.linalg.LinAlgError:
            raise ConfigError("correlations: the rank correlations are not consistent (the "
                              "matrix is not positive definite)") from None
    worlds = tuple((name, j.probability, dict(j.set)) for name, j in sorted(scn.joint.items()))
    return DrawPlan(paths, tuple(inputs[p] for p in paths), chol, worlds)


def draw(p: DrawPlan, seed: int, index: int, n_total: int) -> tuple[str, dict[str, Any], int]:
    """(world, {path: value}, fleet seed) of draw `index` of `n_total`."""
    if not 0 <= index < n_total:
        raise IndexError(index)
    # the same stream as SeedSequence(seed).spawn(n_total)[index], without spawning them all
    return draw_from(p, np.random.SeedSequence(seed, spawn_key=(index,)))


def draw_from(p: DrawPlan, child: np.random.SeedSequence) -> tuple[str, dict[str, Any], int]:
    rng = np.random.default_rng(child)
    z = rng.standard_normal(len(p.paths))
    if p.chol is not None:
        z = p.chol @ z
    u = stats.norm.cdf(z)
    values = {path: _plain(ppf(d, np.array([ui]))[0]) for path, d, ui in zip(p.paths, p.dists, u)}
    world = "base"
    r = rng.random()
    acc = 0.0
    for name, prob, setv in p.worlds:
        acc += prob
        if r < acc:
            world = name
            values.update(setv)
            break
    fleet_seed = int(rng.integers(0, 2**31 - 1))
    return world, values, fleet_seed


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
