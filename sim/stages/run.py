"""A scenario through every stage, to a `Result`:

    resolve ─► capacity (serving simulator, cached) ─► training ─► per option: fleet (hourly
    timeline) ─► cost (cash flows, NPV, $/M tokens, OptionSummary) ─► decide (the winner)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sim.config.library import Library
from sim.config.scenario import Scenario
from sim.stages.capacity import RunCache, capacity, trajectories
from sim.stages.cost import cost
from sim.stages.decide import SLO_TOLERANCE, decide
from sim.stages.fleet import fleet, per_hour
from sim.stages.records import Result
from sim.stages.resolve import resolve
from sim.stages.training import training


def run(scenario: Scenario | str | Path, library: Library | None = None,
        progress: Callable[[str], None] | None = None, *, base: Path | None = None,
        fleet_seed: int | None = None, detail: bool = True,
        allow_outside_paths: bool = False, cache: RunCache | None = None) -> Result:
    """Run every stage. `base`: the folder relative paths in a `Scenario` object are resolved
    from (a path's own folder when given a path; else the working directory). `fleet_seed`:
    the seed of the fleet's random streams (failures, lead times; default the scenario's seed;
    Monte Carlo draws pass their own). `detail=False` skips the hourly frame and the report
    extras (experiments need only the summary and per-year frames). `allow_outside_paths`:
    accept trace paths that are absolute or lead outside the scenario's folder and the library
    folders (refused by default). `cache`: the in-process memo of capacity rows and training
    plans, shared by the runs of a batch (default: a fresh one)."""
    say = progress or (lambda msg: None)
    cache = cache if cache is not None else RunCache()
    rv = resolve(scenario, library, base=base, allow_outside_paths=allow_outside_paths)
    cap = capacity(rv, cache, say)
    traj, hist = trajectories(rv, cap)
    tr = training(rv, cache)
    options, per_year, hourly, software = {}, [], [], []
    for oname in rv.scenario.options:
        say(f"fleet and cost: {oname}")
        of = fleet(rv, cap, tr, oname, fleet_seed)
        res = cost(rv, tr, of, SLO_TOLERANCE)
        options[oname] = res.summary
        per_year.append(res.per_year)
        software += of.software
        if detail:
            hourly.append(per_hour(of))
    return Result(rv.scenario, options, decide(options, SLO_TOLERANCE), tr.summaries,
                  pd.concat(per_year, ignore_index=True),
                  pd.concat(hourly, ignore_index=True) if hourly else pd.DataFrame(),
                  cap.frame, software=pd.DataFrame(software), trajectory=traj,
                  software_history=hist)
