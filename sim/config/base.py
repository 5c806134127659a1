"""Shared pydantic base, the `Source` record and calibrated values.

Every YAML record that states a fact names a source. Sources are declared once per file in a
top-level ``sources:`` mapping (id -> citation, date, provenance tag) and referenced by id, so a
number's provenance is one lookup away and a typo in an id is an error, not a silent gap.
"""

from __future__ import annotations

import datetime as _dt
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

Provenance = Literal["vendor", "mlperf", "independent", "analyst", "derived", "assumed", "secondary"]
"""Provenance tags (reference-data.md): vendor [V], mlperf [M], independent [I], analyst [A],
derived [D], assumed (a stated judgement), secondary [S] (low-confidence web source)."""

Tier = Literal["measured", "published", "assumed"]
"""Calibration tiers, in order of preference: our own measurement, a published measurement, an
assumption with a rationale."""

TIER_RANK: dict[str, int] = {"measured": 0, "published": 1, "assumed": 2}

def _date_to_str(v: object) -> object:
    """YAML reads 2024-03-01 as a date and 2024 as an int; keep dates as ISO text."""
    if isinstance(v, (_dt.date, int)) and not isinstance(v, bool):
        return v.isoformat() if isinstance(v, _dt.date) else str(v)
    return v


def _real_date(v: str) -> str:
    """YYYY[-MM[-DD]] that names a real calendar day (no month 13, no February 30, no year 0)."""
    parts = [int(x) for x in v.split("-")] + [1, 1]
    try:
        _dt.date(parts[0], parts[1], parts[2])
    except ValueError as exc:
        raise ValueError(f"{v!r} is not a real date ({exc})") from None
    return v


DateStr = Annotated[str, BeforeValidator(_date_to_str), Field(pattern=r"^\d{4}(-\d{2}){0,2}$"),
                    AfterValidator(_real_date)]
"""A date as YYYY, YYYY-MM or YYYY-MM-DD."""
MonthStr = Annotated[str, BeforeValidator(_date_to_str), Field(pattern=r"^\d{4}(-\d{2})?$"),
                     AfterValidator(_real_date)]
"""A date as YYYY or YYYY-MM."""

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegativeFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]
PositiveInt = Annotated[int, Field(gt=0)]


def html_repr(kind: str, obj: object) -> str:
    """Jupyter's rich display of a config object (`_repr_html_`), built by `sim.report.repr`.

    The report layer is loaded by name at display time, so importing sim.config never pulls it
    in and the layers still import only leftwards."""
    import importlib

    return importlib.import_module("sim.report.repr").render(kind, obj)


class FleetsimModel(BaseModel):
    """Frozen, strict about unknown keys, no NaN or infinities."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Source(FleetsimModel):
    """Where a fact comes from: a citation (document or URL), its date and a provenance tag."""

    citation: Annotated[str, Field(min_length=3)]
    url: str | None = None
    date: DateStr
    tag: Provenance
    note: str | None = None


class Sourced(FleetsimModel):
    """Mixin for a section whose numbers all come from one source (an id in the file's `sources`)."""

    source: str


class CalValue(FleetsimModel):
    """A calibrated number with its tier and source id; `note` says why (required for `assumed`)."""

    value: float
    tier: Tier
    source: str
    note: str | None = None

    @model_validator(mode="after")
    def _assumed_needs_rationale(self) -> "CalValue":
        if self.tier == "assumed" and not self.note:
            raise ValueError("an assumed value needs a `note` giving its rationale")
        return self


class WithSources(FleetsimModel):
    """A file-level record that declares `sources:` and refers to them by id anywhere inside."""

    sources: dict[str, Source]

    @model_validator(mode="after")
    def _check_source_refs(self) -> "WithSources":
        known = self.sources
        for path, ref in _source_refs(self, ()):
            if ref not in known:
                where = ".".join(str(p) for p in path)
                raise ValueError(
                    f"{where}: unknown source '{ref}' (declared: {', '.join(sorted(known)) or 'none'})"
                )
        return self


def _source_refs(obj: object, path: tuple) -> list[tuple[tuple, str]]:
    """All (path, id) pairs of `source` fields below `obj` (excluding the `sources` table)."""
    out: list[tuple[tuple, str]] = []
    if isinstance(obj, BaseModel):
        for name in type(obj).model_fields:
            if name == "sources":
                continue
            val = getattr(obj, name)
            if name == "source" and isinstance(val, str):
                out.append(((*path, name), val))
            else:
                out.extend(_source_refs(val, (*path, name)))
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.extend(_source_refs(v, (*path, k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.extend(_source_refs(v, (*path, i)))
    return out
