"""One batch of points of an experiment: a scenario with overrides through `sim.stages.run`.

A batch is plain data (picklable, no open files), so any executor can ship it: the scenario as
its as-written JSON, the folder its relative paths start from, the library roots, and per point
the YAML-path overrides and the fleet seed. A worker parses the scenario once per process
(memoised by content hash); each point reruns only the fleet and the cost, since the serving
capacity and the training plans are memoised in the worker's `RunCache`, passed to each run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sim.config.library import Library
from sim.config.loader import validate
from sim.config.scenario import Scenario

SUMMARY_COLUMNS = ("npv_usd", "total_cost_usd", "usd_per_m_tokens", "usd_per_m_input_tokens",
                   "usd_per_m_output_tokens", "slo_attainment", "utilization")


@dataclass(frozen=True)
class Point:
    id: int
    overrides: dict[str, Any]
    fleet_seed: int | None = None
    labels: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    id: int
    scenario: str  # JSON of the scenario as written (exclude_unset)
    base: str
    roots: tuple[str, ...]
    points: tuple[Point, ...]
    allow_outside_paths: bool = False  # trace paths outside the scenario and library folders


def scenario_json(scn: Scenario) -> str:
    return json.dumps(scn.model_dump(mode="json", exclude_unset=True), sort_keys=True)


_SCENARIOS: dict[str, tuple[Scenario, Library]] = {}
"""This worker process's scenario, parsed once (one at a time)."""
_WORKER: dict[str, object] = {}
"""This worker process's `RunCache` (capacity rows and training plans, keyed by everything
they are computed from), handed to every run of every batch it executes."""


def _cache():
    from sim.stages import RunCache

    return _WORKER.setdefault("cache", RunCache())


def _scenario(batch: Batch) -> tuple[Scenario, Library]:
    key = hashlib.sha256((batch.scenario + "\0" + "\0".join(batch.roots)).encode()).hexdigest()
    if key not in _SCENARIOS:
        scn = validate(Scenario, json.loads(batch.scenario), "scenario")
        _SCENARIOS.clear()
        _SCENARIOS[key] = (scn, Library(tuple(Path(r) for r in batch.roots)))
    return _SCENARIOS[key]


def run_batch(batch: Batch) -> pd.DataFrame:
    """Rows per (point, option): the summary metrics, whether the option meets the SLOs and
    whether it wins, plus the point's labels (its input values)."""
    from sim.config.paths import with_overrides
    from sim.stages import run

    scn, lib = _scenario(batch)
    cache = _cache()
    rows = []
    for p in batch.points:
        s = with_overrides(scn, p.overrides, lib, where=f"point {p.id}")
        res = run(s, lib, base=Path(batch.base), fleet_seed=p.fleet_seed, detail=False,
                  allow_outside_paths=batch.allow_outside_paths, cache=cache)
        for oname, v in res.options.items():
            row = {"point": p.id, "option": oname}
            row.update({k: (float("nan") if (x := getattr(v, k)) is None else float(x))
                        for k in SUMMARY_COLUMNS})
            row["meets_slo"] = bool(v.meets_slo)
            row["winner"] = res.decision.winner == oname
            row.update(p.labels)
            rows.append(row)
    return pd.DataFrame(rows)
