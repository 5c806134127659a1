"""Stage 1, resolve: a scenario (a path or a `Scenario`) to what every later stage reads: the
scenario, the library with its overrides applied, the finance assumptions, the hours of the
horizon, each option's engine plan and the (workload, card, engine release) capacities needed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.paths import scenario_library
from sim.config.scenario import Scenario, load_scenario
from sim.cost.finance import FinanceAssumptions
from sim.fleet.timeline import HOURS_PER_YEAR
from sim.perf.software import schedule
from sim.stages.inputs import finance_assumptions, resolve_path

RENTED = ""
"""The plan key of rented cards: they run the scenario's plan."""


@dataclass(frozen=True)
class Resolved:
    scenario: Scenario
    library: Library
    """The library with the scenario's `cards:` / `models:` overrides applied."""
    base: Path
    """The folder a scenario's relative paths are resolved from."""
    where: str
    """How errors name the scenario (its path, or `scenario '<name>'`)."""
    finance: FinanceAssumptions
    hours: np.ndarray
    plans: dict
    """Engine plan per option name, and `RENTED` for rented cards."""
    serve_cards: dict[str, tuple[str, ...]]
    """Per workload: every card any option (or its rent) may serve it on, sorted."""
    needed: tuple[tuple[str, str, str | None], ...]
    """The (workload, card, engine release) capacities the options' plans run, in order."""


def load(scenario: Scenario | str | Path, lib: Library,
         base: Path | None) -> tuple[Scenario, Path, str]:
    """(scenario, base folder, how errors name it) from a path or a `Scenario` object."""
    if isinstance(scenario, (str, Path)):
        return (load_scenario(Path(scenario), lib), Path(scenario).resolve().parent,
                str(scenario))
    return (scenario, Path(base) if base is not None else Path.cwd(),
            f"scenario '{scenario.name}'")


def check_paths(scn: Scenario, lib: Library, base: Path, where: str, allow_outside: bool) -> None:
    """Path rules first: nothing outside the scenario's folder or the library is read."""
    for wname, w in scn.workloads.items():
        if w.traffic.trace:
            try:
                resolve_path(base, lib, w.traffic.trace, allow_outside)
            except ConfigError as exc:
                raise ConfigError(f"{where}: workloads.{wname}.traffic.trace: {exc}") from None


def serve_cards(scn: Scenario) -> dict[str, tuple[str, ...]]:
    """Per workload: the cards any option holds or serves on, and its rented card."""
    out: dict[str, set[str]] = {w: set() for w in scn.workloads}
    for o in scn.options.values():
        cards = set(o.serve_on) or {b.card for b in (*o.buy, *o.lease, *o.reserve)}
        for w in scn.workloads:
            out[w] |= cards
    for wname, w in scn.workloads.items():
        if w.rent:
            out[wname].add(w.rent.card)
    return {w: tuple(sorted(c)) for w, c in out.items()}


def resolve(scenario: Scenario | str | Path, library: Library | None = None, *,
            base: Path | None = None, allow_outside_paths: bool = False) -> Resolved:
    lib = library or Library.default()
    scn, base, where = load(scenario, lib, base)
    check_paths(scn, lib, base, where, allow_outside_paths)
    lib = scenario_library(scn, lib)
    hours = np.arange(int(round(scn.horizon_years * HOURS_PER_YEAR)), dtype=float)
    plans = {o: scn.options[o].engine or scn.engine for o in scn.options}
    plans[RENTED] = scn.engine
    cards = serve_cards(scn)
    needed = tuple(dict.fromkeys(
        (wname, card, st.engine) for wname in scn.workloads
        for card in cards[wname] for plan in plans.values()
        for st in schedule(card, plan, scn.start, float(len(hours)), lib)))
    return Resolved(scn, lib, base, where, finance_assumptions(scn), hours, plans, cards,
                    needed)
