"""fleetsim: datacenter accelerator procurement TCO simulator.

`import sim` stays light: submodules load on first use, so a module such as the calibration
runner (`python -m sim.calibrate.run`) works where only torch, numpy and pyyaml are installed.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("config", "perf", "serving", "fleet", "cost", "pipeline", "calibrate", "cli")


def run(scenario, library=None, progress=None):
    """Run a scenario (a path or a `Scenario`) through every layer: `sim.pipeline.run`."""
    from sim.pipeline import run as _run

    return _run(scenario, library, progress)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"sim.{name}")
    raise AttributeError(f"module 'sim' has no attribute '{name}'")
