"""Dated cash flows, present value and cost per year.

Timing convention (the package's only one): an amount at t years is discounted by
DF(t) = (1 + r)^(-t), r the nominal annual effective rate; hourly streams sit at the start of
their hour (hour h at t = h / 8760). Costs are positive, inflows (residual value) negative.

`CashFlows` holds two kinds of flows: dated lumps (three parallel arrays: time, amount, category
code) and hourly streams on the common hourly grid (one row per category, one column per hour).
A five-year hourly option then prices in about a millisecond: the discount factors of the grid
are computed once, not once per category.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from sim.cost.finance import HOURS_PER_YEAR

CATEGORIES: tuple[str, ...] = ("capex", "energy", "colo", "maintenance", "software", "rental",
                               "unserved_penalty", "residual")
"""Cash categories; `per_year` has one `<category>_usd` column each, in this order."""
_CODE = {c: i for i, c in enumerate(CATEGORIES)}
_NUM_CATEGORIES = len(CATEGORIES)

PER_YEAR_COLUMNS: tuple[str, ...] = (("year",) + tuple(f"{c}_usd" for c in CATEGORIES)
                                     + ("total_usd",))


class CashFlow(NamedTuple):
    """One dated amount: time in years from the start of the horizon, USD (cost > 0), category."""

    time_years: float
    usd: float
    category: str


def category_code(category: str) -> int:
    try:
        return _CODE[category]
    except KeyError:
        raise ValueError(f"unknown cash-flow category {category!r} "
                         f"(known: {', '.join(CATEGORIES)})") from None


@dataclass(frozen=True, eq=False)
class CashFlows:
    """Dated lumps plus hourly streams; build with `from_list`, `from_hourly` or `combine`.

    time_years, usd, code: the lumps (code indexes CATEGORIES).
    hourly_usd: shape (len(CATEGORIES), H); column h is dated at t = h / 8760. H may be 0.
    """

    time_years: np.ndarray
    usd: np.ndarray
    code: np.ndarray
    hourly_usd: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.time_years)
        if len(self.usd) != n or len(self.code) != n:
            raise ValueError("CashFlows lump arrays must have equal lengths, got "
                             f"{n}, {len(self.usd)}, {len(self.code)}")
        if self.hourly_usd.ndim != 2 or self.hourly_usd.shape[0] != _NUM_CATEGORIES:
            raise ValueError(f"CashFlows.hourly_usd must have shape ({_NUM_CATEGORIES}, H), "
                             f"got {self.hourly_usd.shape}")
        if not (np.all(np.isfinite(self.time_years)) and np.all(np.isfinite(self.usd))
                and np.all(np.isfinite(self.hourly_usd))):
            raise ValueError("CashFlows times and amounts must be finite")

    @property
    def num_hours(self) -> int:
        return self.hourly_usd.shape[1]

    @classmethod
    def empty(cls) -> CashFlows:
        return cls(np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int8),
                   np.zeros((_NUM_CATEGORIES, 0)))

    @classmethod
    def from_list(cls, flows: Iterable[tuple[float, float, str]]) -> CashFlows:
        flows = list(flows)
        if not flows:
            return cls.empty()
        t, usd, cat = zip(*flows)
        return cls(np.asarray(t, dtype=float), np.asarray(usd, dtype=float),
                   np.asarray([category_code(c) for c in cat], dtype=np.int8),
                   np.zeros((_NUM_CATEGORIES, 0)))

    @classmethod
    def from_hourly(cls, streams: dict[str, np.ndarray]) -> CashFlows:
        """Hourly streams by category (equal lengths); hour h is dated t = h / 8760."""
        arrays = {category_code(c): np.asarray(a, dtype=float) for c, a in streams.items()}
        lengths = {len(a) for a in arrays.values()}
        if len(lengths) > 1:
            raise ValueError(f"hourly streams must have equal lengths, got {sorted(lengths)}")
        grid = np.zeros((_NUM_CATEGORIES, lengths.pop() if lengths else 0))
        for code, a in arrays.items():
            grid[code] = a
        e = cls.empty()
        return cls(e.time_years, e.usd, e.code, grid)

    def __add__(self, other: CashFlows) -> CashFlows:
        return combine(self, other)

    def to_list(self) -> list[CashFlow]:
        """Every lump, then every nonzero hourly amount, as `CashFlow` records."""
        out = [CashFlow(float(t), float(u), CATEGORIES[int(c)])
               for t, u, c in zip(self.time_years, self.usd, self.code)]
        codes, hours = np.nonzero(self.hourly_usd)
        out += [CashFlow(float(h / HOURS_PER_YEAR), float(self.hourly_usd[c, h]), CATEGORIES[c])
                for c, h in zip(codes, hours)]
        return out

    def total_usd(self) -> float:
        """Undiscounted sum of all amounts (net cost, nominal USD)."""
        return float(self.usd.sum() + self.hourly_usd.sum())

    def total_by_category_usd(self) -> dict[str, float]:
        """Undiscounted sum per category (every category present)."""
        lump = np.bincount(self.code, weights=self.usd, minlength=_NUM_CATEGORIES)
        tot = lump + self.hourly_usd.sum(axis=1)
        return {c: float(tot[i]) for i, c in enumerate(CATEGORIES)}


CashFlowsLike = CashFlows | Sequence[CashFlow] | Sequence[tuple[float, float, str]]


def as_cash_flows(flows: CashFlowsLike) -> CashFlows:
    """A `CashFlows` from itself, an object with a `cash_flows()` method, or a list of records."""
    if isinstance(flows, CashFlows):
        return flows
    to_flows = getattr(flows, "cash_flows", None)  # OpexHourly and the like
    if callable(to_flows):
        return to_flows()
    return CashFlows.from_list(flows)


def combine(*parts: CashFlowsLike) -> CashFlows:
    """One `CashFlows` from several parts (`CashFlows`, `OpexHourly`, lists of `CashFlow`).

    Hourly streams add up on the common grid; parts with hourly streams must have the same H.
    """
    cfs = [as_cash_flows(p) for p in parts]
    if not cfs:
        return CashFlows.empty()
    hours = {c.num_hours for c in cfs if c.num_hours > 0}
    if len(hours) > 1:
        raise ValueError(f"cannot combine hourly streams of different lengths {sorted(hours)}")
    grids = [c.hourly_usd for c in cfs if c.num_hours > 0]
    grid = (grids[0] if len(grids) == 1 else np.sum(grids, axis=0)) if grids \
        else np.zeros((_NUM_CATEGORIES, 0))
    return CashFlows(np.concatenate([c.time_years for c in cfs]),
                     np.concatenate([c.usd for c in cfs]),
                     np.concatenate([c.code for c in cfs]).astype(np.int8), grid)


# Vector products here are elementwise multiply-and-sum, never np.dot / @: a multithreaded BLAS
# dot on a busy 2-core machine took 5 ms instead of 10 us per call (Monte Carlo workers).


def discount_factor(time_years: float | np.ndarray, rate: float) -> float | np.ndarray:
    """DF(t) = (1 + rate)^(-t), rate the nominal annual effective rate (> -1)."""
    if not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= -1:
        raise ValueError(f"discount rate must be a finite number > -1, got {rate!r}")
    if np.ndim(time_years) == 0:
        return (1.0 + rate) ** (-float(time_years))
    return np.exp(np.asarray(time_years, dtype=float) * -math.log1p(rate))  # = (1+r)^-t, faster


def hourly_discount_factor(num_hours: int, rate: float) -> np.ndarray:
    """DF at the start of each hour: (1 + rate)^(-h / 8760) for h = 0 .. num_hours - 1."""
    return discount_factor(np.arange(num_hours) / HOURS_PER_YEAR, rate)


def pv_hourly(quantity_per_hour: np.ndarray, rate: float) -> float:
    """Present value of an hourly quantity (tokens, card-hours, USD) dated at each hour's start."""
    q = np.asarray(quantity_per_hour, dtype=float)
    return float((q * hourly_discount_factor(len(q), rate)).sum())


def pv_by_category(cash_flows: CashFlowsLike, rate: float) -> dict[str, float]:
    """Present value per category (every category present, zeros included)."""
    cf = as_cash_flows(cash_flows)
    lump = np.bincount(cf.code, weights=cf.usd * discount_factor(cf.time_years, rate),
                       minlength=_NUM_CATEGORIES)
    pv = lump + (cf.hourly_usd * hourly_discount_factor(cf.num_hours, rate)).sum(axis=1)
    return {c: float(pv[i]) for i, c in enumerate(CATEGORIES)}


def npv(cash_flows: CashFlowsLike, rate: float) -> float:
    """Present value (USD at t = 0) of net cost: sum of usd_i x (1 + rate)^(-t_i).

    Costs are positive and inflows negative, so a lower value is better.
    """
    cf = as_cash_flows(cash_flows)
    lump = float((cf.usd * discount_factor(cf.time_years, rate)).sum())
    if cf.num_hours == 0:
        return lump
    df = hourly_discount_factor(cf.num_hours, rate)
    return lump + float((cf.hourly_usd.sum(axis=0) * df).sum())


def per_year(cash_flows: CashFlowsLike, horizon_years: float) -> pd.DataFrame:
    """Undiscounted cash per year by category; `total_usd` is the row sum of the categories.

    Year y holds the flows dated in [y, y + 1); a flow dated exactly at the horizon (the residual
    value) belongs to the last year. Columns: `PER_YEAR_COLUMNS`. Depreciation is not cash and
    never appears here (see `capex.depreciation_schedule`).
    """
    if not isinstance(horizon_years, (int, float)) or not math.isfinite(horizon_years) \
            or horizon_years <= 0:
        raise ValueError(f"horizon_years must be a finite number > 0, got {horizon_years!r}")
    cf = as_cash_flows(cash_flows)
    eps = 1e-9
    num_years = math.ceil(horizon_years - eps)
    t = cf.time_years
    if len(t) and (t.min() < -eps or t.max() > horizon_years + eps):
        bad = t[(t < -eps) | (t > horizon_years + eps)][0]
        raise ValueError(f"a cash flow is dated at {bad:.6g} years, outside the horizon "
                         f"[0, {horizon_years:.6g}]")
    if cf.num_hours > horizon_years * HOURS_PER_YEAR + eps:
        raise ValueError(f"hourly streams run {cf.num_hours} hours, beyond the horizon "
                         f"({horizon_years:.6g} years)")
    year = np.clip(np.floor(t + eps).astype(np.int64), 0, num_years - 1)
    table = np.bincount(year * _NUM_CATEGORIES + cf.code.astype(np.int64), weights=cf.usd,
                        minlength=num_years * _NUM_CATEGORIES).reshape(num_years, _NUM_CATEGORIES)
    hours_per_year = int(HOURS_PER_YEAR)
    padded = np.zeros((_NUM_CATEGORIES, num_years * hours_per_year))
    padded[:, :cf.num_hours] = cf.hourly_usd
    table = table + padded.reshape(_NUM_CATEGORIES, num_years, hours_per_year).sum(axis=2).T
    df = pd.DataFrame(table, columns=[f"{c}_usd" for c in CATEGORIES])
    df.insert(0, "year", np.arange(num_years))
    df["total_usd"] = table.sum(axis=1)
    return df[list(PER_YEAR_COLUMNS)]
