"""Software over time: which engine release a card runs each hour, and how fast it grows after.

A card bought today is served by the engine releases of the next five years. An engine plan
(`sim.config.scenario.EnginePlan`) says which release is in force at each hour:

    follow-releases  newest release of the card's stack out `upgrade_lag_months` before the hour
                     (a release slower than the one in use is skipped: an operator keeps the
                     faster one); past the last release in the library, throughput grows at the
                     stack's rate, capped by the card's roofline
    pinned           one release throughout
    explicit         the release in force at the start, then each listed upgrade from its date

Pure functions on plain data: the serving capacity of each release comes from the serving
simulator (sim.serving via sim.pipeline); here it is only combined into an hourly series.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.config.library import Library
from sim.config.scenario import EnginePlan, hours_after_start
from sim.perf.hardware import engines_for
from sim.units import HOURS_PER_YEAR


@dataclass(frozen=True)
class EngineStep:
    """From `from_hour` (hours after the scenario's start) the card runs `engine`."""

    from_hour: float
    engine: str | None


def lag_hours(plan: EnginePlan) -> float:
    return plan.upgrade_lag_months * HOURS_PER_YEAR / 12.0


def _released_hour(start: str, release_date: str) -> float:
    return hours_after_start(start, release_date)


def in_force_at_start(card: str, plan: EnginePlan, start: str, library: Library) -> str | None:
    """The release a card runs at the start: the newest out `upgrade_lag_months` before it (the
    stack's first release when none is that old). None: no engine runs on the card."""
    rels = engines_for(card, library)
    if not rels:
        return None
    lag = lag_hours(plan)
    ok = [eid for eid, e in rels if _released_hour(start, e.release_date) + lag <= 0]
    return ok[-1] if ok else rels[0][0]


def schedule(card: str, plan: EnginePlan, start: str, horizon_h: float,
             library: Library) -> tuple[EngineStep, ...]:
    """The releases a card may run over the horizon, each from the hour it becomes available
    under the plan (follow-releases lists every candidate; `series` keeps the fastest so far)."""
    first = in_force_at_start(card, plan, start, library)
    if first is None:
        return (EngineStep(0.0, None),)
    if plan.plan == "pinned":
        return (EngineStep(0.0, plan.pinned.get(card, first)),)
    steps = [EngineStep(0.0, first)]
    if plan.plan == "explicit":
        runs = {eid for eid, _ in engines_for(card, library)}
        ups = sorted((hours_after_start(start, u.at), u.engine) for u in plan.upgrades)
        steps += [EngineStep(h, eid) for h, eid in ups if eid in runs and 0 < h < horizon_h]
        return tuple(steps)
    lag = lag_hours(plan)
    seen = False
    for eid, e in engines_for(card, library):
        if eid == first:
            seen = True
            continue
        h = _released_hour(start, e.release_date) + lag
        if seen and 0 < h < horizon_h:
            steps.append(EngineStep(h, eid))
    return tuple(steps)


def last_release_hour(card: str, plan: EnginePlan, start: str, library: Library) -> float | None:
    """The hour the stack's newest release in the library comes into force (follow-releases),
    from which throughput is projected; None for other plans or a card without an engine."""
    rels = engines_for(card, library)
    if plan.plan != "follow-releases" or not rels:
        return None
    return _released_hour(start, rels[-1][1].release_date) + lag_hours(plan)


def growth(hours: np.ndarray, from_hour: float | None, rate_per_year: float,
           ceiling: float) -> np.ndarray:
    """Multiplier on the last release's throughput: (1 + rate)^(years since `from_hour`) after
    it, 1 before, never above `ceiling` (the roofline over the last release). A negative rate
    is refused: past releases that got slower are skipped, not projected."""
    if rate_per_year < 0:
        raise ValueError(f"software rate must be >= 0 per year (got {rate_per_year})")
    if from_hour is None or rate_per_year == 0:
        return np.ones_like(hours, dtype=float)
    years = np.maximum(hours - from_hour, 0.0) / HOURS_PER_YEAR
    g = np.exp(math.log1p(rate_per_year) * years)
    return np.minimum(g, max(ceiling, 1.0))


def series(hours: np.ndarray, steps: tuple[EngineStep, ...], rps_by_engine: dict,
           plan: EnginePlan, projection: np.ndarray | None = None
           ) -> tuple[np.ndarray, list[str | None]]:
    """Capacity per card at each hour (requests/s) and the engine in force per step.

    follow-releases keeps the fastest release available so far (a slower new release is not
    adopted); `projection` (from `growth`) multiplies the last release's capacity after it."""
    cap = np.zeros_like(hours, dtype=float)
    in_force: list[str | None] = []
    best = -math.inf
    best_eid = None
    for i, st in enumerate(steps):
        rate = rps_by_engine[st.engine]
        if plan.plan == "follow-releases" and rate < best:
            rate, eid = best, best_eid
        else:
            eid = st.engine
        best, best_eid = rate, eid
        end = steps[i + 1].from_hour if i + 1 < len(steps) else math.inf
        cap[(hours >= st.from_hour) & (hours < end)] = rate
        in_force.append(eid)
    if projection is not None:
        cap = cap * projection
    return cap, in_force


def stack_of(card: str, library: Library) -> str | None:
    """The software stack of a card's engines (None: no engine runs on it)."""
    rels = engines_for(card, library)
    return rels[-1][1].stack if rels else None


RATE_BOUNDS = (0.0, 1.0)
"""Improvement per year a projection may take: not below 0 (a release slower than the one in
use is not adopted, so a stack never gets slower) and not above 100% a year (assumed; the
roofline cap binds long before over a five-year horizon)."""


def rate_prior(stack: str | None, library: Library) -> dict | None:
    """The uncertainty of a stack's improvement per year: normal around its fit with the fit's
    standard error (delta method from the log rate), truncated to RATE_BOUNDS; None for a stack
    without a fit. The Monte Carlo draws from it and the headline run takes its median, so both
    rest on one assumption."""
    tr = library.software_trend(stack) if stack else None
    if tr is None:
        return None
    sd = max(tr.log_rate_se * math.exp(tr.log_rate_per_year), 1e-6)
    return {"mean": tr.improvement_per_year, "sd": sd, "low": RATE_BOUNDS[0],
            "high": RATE_BOUNDS[1], "basis": tr.basis, "releases": len(tr.releases),
            "source": f"hardware_specs/software_trends/{stack}.yaml ({tr.basis} fit over "
                      f"{len(tr.releases)} releases; derived from vendor tables)"}


def default_rate(stack: str | None, library: Library) -> float:
    """A stack's improvement per year past its last release: the median of `rate_prior`
    (0 for a stack with no fit)."""
    return rate_quantiles(stack, library, (0.5,))[0]


@dataclass(frozen=True)
class CardSoftware:
    """One card's capacity over the horizon under one plan: the hourly series (requests/s per
    card, before efficiency factors), the releases it ran and from when, the projection."""

    capacity_rps: np.ndarray
    steps: tuple[EngineStep, ...]
    in_force: tuple[str | None, ...]
    projected_from_hour: float | None
    rate_per_year: float
    ceiling: float
    """Roofline throughput over the throughput of the release in force at the end."""
    release_end_rps: float
    """Capacity on the release in force at the end, before any projection."""


def card_capacity(card: str, plan: EnginePlan, start: str, hours: np.ndarray,
                  library: Library, rps_by_engine: dict, roofline_by_engine: dict,
                  rate_per_year: float) -> CardSoftware:
    """Compose a card's hourly capacity from the capacity of each release it runs (searched by
    the serving simulator) and the stack's projection past its last release."""
    steps = schedule(card, plan, start, float(len(hours)), library)
    flat, in_force = series(hours, steps, rps_by_engine, plan)
    last_h = last_release_hour(card, plan, start, library)
    ceiling = roofline_by_engine.get(in_force[-1], 1.0)
    proj = growth(hours, last_h, rate_per_year, ceiling)
    return CardSoftware(flat * proj, steps, tuple(in_force), last_h, rate_per_year, ceiling,
                        float(flat[-1]) if len(flat) else 0.0)


def rate_quantiles(stack: str | None, library: Library, qs=(0.05, 0.95)) -> tuple[float, ...]:
    """Quantiles of `rate_prior` (0s for a stack without a fit)."""
    p = rate_prior(stack, library)
    if p is None:
        return tuple(0.0 for _ in qs)
    from scipy.special import ndtr, ndtri  # the normal CDF and its inverse (scipy.stats is slow
    #                                       to import for a warm run)

    m, sd = p["mean"], p["sd"]
    a, b = ndtr((p["low"] - m) / sd), ndtr((p["high"] - m) / sd)
    return tuple(float(np.clip(m + sd * ndtri(a + q * (b - a)), p["low"], p["high"]))
                 for q in qs)


def history(card: str, start_engine: str | None, capacity_at_start: float,
            library: Library) -> list[dict]:
    """The stack's dated releases as this card's capacity would have been on each: the release
    levels fitted to the vendor's tables (`hardware_specs/software_trends/`), scaled so that the
    release in force at the start sits at the card's capacity then. Empty when that release has
    no level (it shares no configuration with the others)."""
    stack = stack_of(card, library)
    tr = library.software_trend(stack) if stack else None
    if tr is None:
        return []
    levels = {r.engine: r for r in tr.releases}
    if start_engine not in levels:
        return []
    ref = levels[start_engine].log_level
    return [{"card": card, "stack": stack, "engine": r.engine, "release_date": r.release_date,
             "capacity_rps": capacity_at_start * math.exp(r.log_level - ref),
             "points": r.points,
             "source": f"hardware_specs/software_trends/{stack}.yaml: release level over "
                       f"{r.points} published points (hardware_specs/engine_tables)"}
            for r in tr.releases]
