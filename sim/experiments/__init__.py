"""Experiments over a scenario: sweeps, Monte Carlo, sensitivity, flip points, an optimiser.

They call the pipeline many times through an executor and never reach inside a run:

    from sim.experiments import monte_carlo, tornado, flip, sweep, optimize, make_executor
    mc = monte_carlo(scn, draws=200, executor=make_executor(workers=2))
    mc.win_probability, mc.percentiles, mc.sensitivity
"""

from sim.experiments.analyses import (FlipResult, MonteCarloResult, flip, monte_carlo, sweep,
                                      tornado)
from sim.experiments.executors import make_executor
from sim.experiments.optimize import OptimizeResult, optimize
from sim.experiments.suite import run_analyses

__all__ = ["FlipResult", "MonteCarloResult", "OptimizeResult", "flip", "make_executor",
           "monte_carlo", "optimize", "run_analyses", "sweep", "tornado"]
