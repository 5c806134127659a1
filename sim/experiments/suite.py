"""Run the analyses a scenario asks for (`analysis:`).

`run_analyses` returns plain objects (frames, `MonteCarloResult`, `FlipResult`s) keyed by
analysis name; `Result.analyses` carries them into the report, and
`sim.report.analysis.write_results` writes their machine-readable form.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from sim.config.library import Library
from sim.config.scenario import Scenario
from sim.experiments.analyses import flip, monte_carlo, sweep, tornado
from sim.experiments.executors import Executor


def run_analyses(scn: Scenario, *, base: Path | None = None, library: Library | None = None,
                 executor: Executor | None = None, out: Path | None = None,
                 say: Callable[[str], None] | None = None,
                 allow_outside_paths: bool = False) -> dict:
    a = scn.analysis
    say = say or (lambda m: None)
    res: dict = {}
    seconds: dict[str, float] = {}
    kw = dict(base=base, library=library, executor=executor,
              allow_outside_paths=allow_outside_paths)
    if a.monte_carlo:
        say(f"Monte Carlo: {a.monte_carlo} draws")
        t = time.perf_counter()
        res["monte_carlo"] = monte_carlo(scn, a.monte_carlo, out=out, **kw)
        seconds["monte_carlo"] = time.perf_counter() - t
    if a.tornado:
        say("tornado")
        t = time.perf_counter()
        res["tornado"] = tornado(scn, **kw)
        seconds["tornado"] = time.perf_counter() - t
    if a.flip:
        t = time.perf_counter()
        flips = []
        for f in a.flip:
            say(f"flip point: {f.param}")
            flips.append(flip(scn, f.param, f.between, f.options, **kw))
        res["flip"] = flips
        seconds["flip"] = time.perf_counter() - t
    if a.sweep:
        say("sweep")
        t = time.perf_counter()
        res["sweep"] = sweep(scn, dict(a.sweep), **kw)
        seconds["sweep"] = time.perf_counter() - t
    if a.optimize:
        from sim.experiments.optimize import optimize

        say("optimiser")
        t = time.perf_counter()
        res["optimize"] = optimize(scn, base=base, library=library,
                                   allow_outside_paths=allow_outside_paths)
        seconds["optimize"] = time.perf_counter() - t
    if res:
        res["seconds"] = seconds
    return res
