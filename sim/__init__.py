"""fleetsim: datacenter accelerator procurement TCO simulator.

`import sim` stays light: submodules load on first use, so a module such as the calibration
runner (`python -m sim.calibrate.run`) works where only torch, numpy and pyyaml are installed.

The notebook API, each loaded on first call: `sim.load_scenario(path)`, `sim.run(scenario)`
(a `Result`: `.options` records, `.decision`, frames, `.summary`, `.plot.*` figures),
`sim.with_overrides(scenario, {path: value})`.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

LAYERS = ("units", "config", "perf", "serving", "calibrate", "fleet", "cost", "report", "stages",
          "experiments", "cli")
"""The direction of imports, written once: a module of `sim.<layer>` imports only from the
layers before it (lazy imports inside functions included; tests/test_layers.py checks every
file). `sim.config` reaches the report's Jupyter HTML by name only (`html_repr`); the
`Result`'s `.plot`, `.to_dir` and `_repr_html_` call into `sim.report`, which reads the
`Result`'s records and never imports the stages."""

_SUBMODULES = ("config", "perf", "serving", "fleet", "cost", "stages", "pipeline", "calibrate",
               "cli", "report", "experiments")


def run(scenario, library=None, progress=None, cache=None):
    """Run a scenario (a path or a `Scenario`) through every stage: `sim.stages.run`. `cache`:
    a `sim.stages.RunCache` kept across calls (e.g. in a notebook that reruns variants), so
    capacity rows and training plans already found are not read from disk again; by default
    each call starts a fresh one."""
    from sim.stages import run as _run

    return _run(scenario, library, progress, cache=cache)


def load_scenario(path, library=None):
    """Parse, validate and resolve a scenario file (a str or a Path): a `Scenario`
    (`sim.config.scenario.load_scenario`)."""
    from sim.config.scenario import load_scenario as _load

    return _load(path, library)


def with_overrides(scenario, overrides, library=None):
    """A copy of `scenario` with each YAML path set, e.g. `{"cards.mi300x.price_usd": 9000}`,
    validated again: `sim.config.paths.with_overrides`."""
    from sim.config.paths import with_overrides as _with

    return _with(scenario, overrides, library)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"sim.{name}")
    raise AttributeError(f"module 'sim' has no attribute '{name}'")
