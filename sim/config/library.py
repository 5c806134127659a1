"""Find and load library records by id: cards, calibrations, models, length mixes.

Search order (first match wins): each `--library DIR` given, then each folder in the
`FLEETSIM_LIBRARY` environment variable (os.pathsep-separated), then the library packaged with
fleetsim. Every library folder mirrors the packaged layout:

    DIR/hardware_specs/cards/<id>.yaml        DIR/hardware_specs/calibration/<id>.yaml
    DIR/workloads/models/<id>.yaml            DIR/workloads/lengths/<id>.yaml
    DIR/hardware_specs/engines/<id>.yaml      DIR/hardware_specs/engine_tables/<id>.yaml
    DIR/hardware_specs/engine_fits/<id>.yaml  (written by `fleetsim calibrate engines`)
    DIR/hardware_specs/software_trends/<stack>.yaml  (likewise)
    DIR/hardware_specs/serving_overheads/<engine>.yaml  (benchmarks/fit_serving_overheads.py)
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from sim.config.calibration import Calibration
from sim.config.card import CardSpec
from sim.config.engine import (
    CollectiveTable,
    EngineFit,
    EngineSpec,
    EngineTable,
    SoftwareTrend,
    TrainingFit,
)
from sim.config.loader import ConfigError, load_file
from sim.config.model import ModelSpec
from sim.config.training import TrainingBenchmark
from sim.config.workload import LengthMix
from sim.config.serving_overheads import FOLDER as OVERHEADS_FOLDER
from sim.config.serving_overheads import OverheadsRecord

T = TypeVar("T", bound=BaseModel)

KINDS: dict[str, tuple[str, type[BaseModel]]] = {
    "card": ("hardware_specs/cards", CardSpec),
    "calibration": ("hardware_specs/calibration", Calibration),
    "model": ("workloads/models", ModelSpec),
    "workload": ("workloads/lengths", LengthMix),
    "engine": ("hardware_specs/engines", EngineSpec),
    "engine_table": ("hardware_specs/engine_tables", EngineTable),
    "engine_fit": ("hardware_specs/engine_fits", EngineFit),
    "collective": ("hardware_specs/collectives", CollectiveTable),
    "software_trend": ("hardware_specs/software_trends", SoftwareTrend),
    "training_fit": ("hardware_specs/training_fits", TrainingFit),
    "training_benchmark": ("workloads/training", TrainingBenchmark),
    "serving_overheads": (OVERHEADS_FOLDER, OverheadsRecord),
}


def packaged_root() -> Path:
    """The library shipped with fleetsim: `sim/_library` in a wheel, the repo root in a checkout."""
    here = Path(__file__).resolve().parent.parent
    bundled = here / "_library"
    if (bundled / "hardware_specs").is_dir():
        return bundled
    return here.parent


def search_roots(extra: Sequence[str | Path] = ()) -> tuple[Path, ...]:
    roots: list[Path] = [Path(p) for p in extra]
    env = os.environ.get("FLEETSIM_LIBRARY", "")
    roots += [Path(p) for p in env.split(os.pathsep) if p]
    roots.append(packaged_root())
    return tuple(roots)


@dataclass(frozen=True)
class Library:
    """Read-only view of the library folders; loaded records are cached per instance."""

    roots: tuple[Path, ...] = field(default_factory=search_roots)

    @classmethod
    def default(cls, extra: Sequence[str | Path] = ()) -> "Library":
        return cls(search_roots(extra))

    def ids(self, kind: str) -> list[str]:
        sub = KINDS[kind][0]
        found: dict[str, None] = {}
        for root in self.roots:
            d = root / sub
            if d.is_dir():
                for p in sorted(d.glob("*.yaml")):
                    found.setdefault(p.stem, None)
        return sorted(found)

    def path(self, kind: str, ident: str) -> Path:
        sub = KINDS[kind][0]
        for root in self.roots:
            p = root / sub / f"{ident}.yaml"
            if p.is_file():
                return p
        known = self.ids(kind)
        close = difflib.get_close_matches(ident, known, n=1, cutoff=0.5)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(f"unknown {kind} '{ident}' ({hint}known: {', '.join(known)})")

    def display(self, p: Path) -> str:
        """A path as users see it: relative to its library root."""
        for root in self.roots:
            try:
                return str(p.relative_to(root))
            except ValueError:
                continue
        return str(p)

    def _load(self, kind: str, ident: str) -> BaseModel:
        p = self.path(kind, ident)
        return load_file(KINDS[kind][1], p, self.display(p))

    @cached_property
    def _cache(self) -> dict[tuple[str, str], BaseModel]:
        return {}

    def card(self, ident: str) -> CardSpec:
        return self._get("card", ident)  # type: ignore[return-value]

    def model(self, ident: str) -> ModelSpec:
        return self._get("model", ident)  # type: ignore[return-value]

    def lengths(self, ident: str) -> LengthMix:
        return self._get("workload", ident)  # type: ignore[return-value]

    def calibration(self, ident: str) -> Calibration:
        return self._get("calibration", ident)  # type: ignore[return-value]

    def engine(self, ident: str) -> EngineSpec:
        return self._get("engine", ident)  # type: ignore[return-value]

    def engine_table(self, ident: str) -> EngineTable:
        return self._get("engine_table", ident)  # type: ignore[return-value]

    def engine_fit(self, ident: str) -> EngineFit | None:
        """The fitted factors of an engine, or None when it has no fit file."""
        if ident not in self.ids("engine_fit"):
            return None
        return self._get("engine_fit", ident)  # type: ignore[return-value]

    def software_trend(self, stack: str) -> SoftwareTrend | None:
        """A stack's fitted improvement rate, or None when it has none."""
        if stack not in self.ids("software_trend"):
            return None
        return self._get("software_trend", stack)  # type: ignore[return-value]

    def training_fit(self, card: str) -> TrainingFit | None:
        """A card's fitted training factors, else the pooled fit, else None."""
        for ident in (card, "pooled"):
            if ident in self.ids("training_fit"):
                return self._get("training_fit", ident)  # type: ignore[return-value]
        return None

    def training_benchmark(self, ident: str) -> TrainingBenchmark:
        return self._get("training_benchmark", ident)  # type: ignore[return-value]

    def serving_overheads(self, engine: str) -> OverheadsRecord:
        """A serving engine's overheads outside the GPU step (API server, scheduler, ...)."""
        return self._get("serving_overheads", engine)  # type: ignore[return-value]

    def collective(self, ident: str) -> CollectiveTable:
        return self._get("collective", ident)  # type: ignore[return-value]

    def _get(self, kind: str, ident: str) -> BaseModel:
        key = (kind, ident)
        cache = self._cache
        if key not in cache:
            cache[key] = self._load(kind, ident)
        return cache[key]
