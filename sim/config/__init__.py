"""Typed, sourced configuration: cards, calibrations, models, length mixes and their loader."""

from sim.config.base import CalValue, FleetsimModel, Source
from sim.config.calibration import Calibration
from sim.config.card import CardSpec
from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.model import ModelSpec
from sim.config.workload import LengthMix

__all__ = ["CalValue", "Calibration", "CardSpec", "ConfigError", "FleetsimModel", "Library",
           "LengthMix", "ModelSpec", "Source"]
