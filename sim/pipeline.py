"""Alias of `sim.stages` (the run's named stages), kept for notebooks that import from here."""
from sim.stages import *  # noqa: F401,F403
