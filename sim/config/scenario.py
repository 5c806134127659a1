"""Scenario files (scenarios/*.yaml): the question a user asks, as typed data.

A scenario names the horizon, the site, the financial assumptions, the inference workloads and
training campaigns, the fleet options to compare, overrides of library values (each with its
source) and the uncertain inputs for later Monte Carlo. Cards, models and length mixes are
referenced by library id; `check_references` resolves them against a `Library` and reports
unknown ids with the YAML path, e.g.

    scenarios/flagship.yaml: options.h200+mi300x.buy[1].card: unknown card 'mi300' (did you mean 'mi300x'?)
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (BeforeValidator, Discriminator, Field, PrivateAttr, Tag, model_serializer,
                      model_validator)

from sim.config.base import DateStr, FleetsimModel, NonNegativeFloat, PositiveFloat
from sim.config.library import Library
from sim.config.loader import ConfigError, read_yaml, validate
from sim.units import HOURS_PER_YEAR

NonNegativeInt = Annotated[int, Field(ge=0)]
MAX_CARDS = 1_000_000
"""Most cards one purchase, lease, reservation or campaign may name: beyond any real fleet, and
far below what would exhaust memory (the fleet draws per-card infant failures)."""
CardCount = Annotated[int, Field(ge=0, le=MAX_CARDS)]

SITE_PRESETS: dict[str, dict[str, float | str]] = {
    # reference-data E1 (EIA 2024 US industrial 8.15¢), E2 (modern AI DC PUE 1.2, F), E3 (CBRE
    # H2 2024 N. America wholesale colocation $184.06/kW-month)
    "us-colo": {"electricity_usd_per_kwh": 0.0815, "pue": 1.2, "colo_usd_per_kw_month": 184.0,
                "source": "reference-data E1 (EIA 2024), E2/F (PUE), E3 (CBRE H2 2024)"},
    # E1 Eurostat H1 2024 non-household ≈ €0.19/kWh at ~1.08 USD/EUR; E2 industry average 1.56
    "eu-colo": {"electricity_usd_per_kwh": 0.205, "pue": 1.56, "colo_usd_per_kw_month": 184.0,
                "source": "reference-data E1 (Eurostat H1 2024, USD at 1.08/EUR), E2 (Uptime "
                          "2024 average), E3 (CBRE N. America used: no EU figure in the data)"},
    # E1 China Briefing 2024 industrial average $0.088/kWh
    "cn-colo": {"electricity_usd_per_kwh": 0.088, "pue": 1.56, "colo_usd_per_kw_month": 184.0,
                "source": "reference-data E1 (China Briefing 2024), E2 (Uptime average), E3 "
                          "(CBRE N. America used: no China figure in the data)"},
}


class Site(FleetsimModel):
    """Where the fleet runs: a preset from the reference data, or explicit values (which win)."""

    preset: Literal["us-colo", "eu-colo", "cn-colo"] | None = "us-colo"
    electricity_usd_per_kwh: PositiveFloat | None = None
    pue: Annotated[float, Field(ge=1.0, le=3.0)] | None = None
    colo_usd_per_kw_month: NonNegativeFloat | None = None
    power_cap_mw: PositiveFloat | None = None
    rack_kw: PositiveFloat | None = None
    """Power one rack can take (kW): an 8-card server drawing more cannot be installed
    (reference-data E3: most racks below 8-10 kW, few above 30 kW; GB300 NVL72 135 kW)."""
    liquid_cooling: bool = True
    """Whether the site can host liquid-cooled parts (GB200 NVL72, MI355X)."""

    def resolved(self) -> dict[str, float]:
        base = dict(SITE_PRESETS[self.preset]) if self.preset else {}
        for k in ("electricity_usd_per_kwh", "pue", "colo_usd_per_kw_month"):
            v = getattr(self, k)
            if v is not None:
                base[k] = v
        missing = [k for k in ("electricity_usd_per_kwh", "pue", "colo_usd_per_kw_month")
                   if k not in base]
        if missing:
            raise ValueError(f"site: give a preset or {', '.join(missing)}")
        return base

    @model_validator(mode="after")
    def _complete(self) -> "Site":
        if self.preset is None:
            missing = [k for k in ("electricity_usd_per_kwh", "pue", "colo_usd_per_kw_month")
                       if getattr(self, k) is None]
            if missing:
                raise ValueError(f"give a preset or {', '.join(missing)}")
        return self


class Residual(FleetsimModel):
    """Fraction of the purchase price a card keeps versus its age in years: piecewise linear
    between the points, the last point a floor (default: reference-data E6, lender view)."""

    age_years: Annotated[tuple[NonNegativeFloat, ...], Field(min_length=1)]
    fraction: tuple[Annotated[float, Field(ge=0, le=1)], ...]
    source: Annotated[str, Field(min_length=3)]

    @model_validator(mode="after")
    def _curve(self) -> "Residual":
        if len(self.fraction) != len(self.age_years):
            raise ValueError(f"age_years and fraction must have the same length (got "
                             f"{len(self.age_years)} and {len(self.fraction)})")
        if self.age_years[0] != 0:
            raise ValueError(f"age_years must start at 0 (got {self.age_years[0]:g})")
        if any(b <= a for a, b in zip(self.age_years, self.age_years[1:])):
            raise ValueError("age_years must increase strictly")
        return self


class Finance(FleetsimModel):
    discount_rate: Annotated[float, Field(ge=0, le=1)] = 0.08
    depreciation_years: PositiveFloat = 5.0
    maintenance_fraction_per_year: Annotated[float, Field(ge=0, le=1)] = 0.03
    server_multiplier: Annotated[float, Field(ge=1)] = 1.65
    network_share: Annotated[float, Field(ge=0, lt=1)] = 0.15
    unserved_penalty_usd_per_card_hour: NonNegativeFloat | None = None
    tax_rate: Annotated[float, Field(ge=0, lt=1)] = 0.21
    """Only the after-tax NPV uses it (depreciation tax shield)."""
    price_decline_per_year: Annotated[float, Field(ge=0, lt=1)] = 0.0
    """A later order pays price x (1 - decline)^(years after the start)."""
    residual: Residual | None = None


class ReliabilitySpec(FleetsimModel):
    """Failures (reference-data D1-D2): 0.17 unexpected interruptions per GPU-year (Llama 3,
    H100-class), 5% infant mortality within 30 days (3-10%), repair or replacement in 72 hours
    (no public MTTR: assumed)."""

    failures_per_card_year: Annotated[float, Field(ge=0, le=50)] = 0.17
    infant_mortality: Annotated[float, Field(ge=0, le=1)] = 0.05
    repair_hours: Annotated[float, Field(gt=0, le=8760)] = 72.0


class TrafficEvent(FleetsimModel):
    """A named spike or dip (a launch, a holiday): demand times `multiplier` for `days` from
    `at` (events that overlap multiply)."""

    at: DateStr
    days: Annotated[float, Field(gt=0, le=3660)]
    multiplier: Annotated[float, Field(ge=0, le=1000)]


class Traffic(FleetsimModel):
    """Demand of one workload: a peak (or mean) rate with growth and shape; lengths from a
    library length mix or fitted from a trace."""

    peak_rps: PositiveFloat
    growth_per_year: Annotated[float, Field(gt=-1)] = 0.0
    growth_by_quarter: tuple[Annotated[float, Field(gt=-1, le=100)], ...] = ()
    """Quarter-over-quarter growth, one value per quarter from the start (compounded within
    the quarter; the last value holds afterwards); replaces `growth_per_year`."""
    diurnal_amplitude: Annotated[float, Field(ge=0, lt=1)] = 0.0
    weekend_factor: Annotated[float, Field(ge=0)] = 1.0
    share_by_year: tuple[NonNegativeFloat, ...] = ()
    events: dict[str, TrafficEvent] = {}
    lengths: str | None = None
    trace: str | None = None

    @model_validator(mode="after")
    def _one_length_source(self) -> "Traffic":
        if (self.lengths is None) == (self.trace is None):
            raise ValueError("give exactly one of `lengths` (a library length mix) or `trace`")
        if self.growth_by_quarter and "growth_per_year" in self.model_fields_set:
            raise ValueError("give `growth_per_year` or `growth_by_quarter`, not both")
        return self


class Slo(FleetsimModel):
    ttft_p99_ms: PositiveFloat | None = None
    tpot_p99_ms: PositiveFloat | None = None


class Rent(FleetsimModel):
    """Cloud capacity rented for the shortfall, on demand."""

    card: str
    usd_per_hour: PositiveFloat
    max_cards: NonNegativeFloat | None = None


class InferenceWorkload(FleetsimModel):
    model: str
    precision: Literal["bf16", "fp16", "fp8", "fp4", "int8"] = "fp8"
    traffic: Traffic
    slo: Slo = Slo()
    rent: Rent | None = None


class TrainingCampaign(FleetsimModel):
    model: str
    tokens: PositiveFloat
    card: str
    cards: Annotated[int, Field(gt=0, le=MAX_CARDS)] | None = None
    deadline_days: PositiveFloat | None = None
    start: DateStr | None = None
    every_months: Annotated[float, Field(ge=0.25)] | None = None
    priority: int = 0

    @model_validator(mode="after")
    def _cards_or_deadline(self) -> "TrainingCampaign":
        if self.cards is None and self.deadline_days is None:
            raise ValueError("give `cards` (the duration is derived) or `deadline_days` (the "
                             "cards are derived)")
        return self


class Buy(FleetsimModel):
    """One order. Its own `price_usd` and `lead_time_weeks`, when given, win over the
    scenario's `cards.<id>` overrides, which win over the library."""

    card: str
    count: CardCount
    at: DateStr
    lead_time_weeks: tuple[NonNegativeFloat, NonNegativeFloat] | NonNegativeFloat = 0.0
    price_usd: PositiveFloat | None = None
    life_years: PositiveFloat = 5.0

    @model_validator(mode="after")
    def _lead_time_range(self) -> "Buy":
        lt = self.lead_time_weeks
        if isinstance(lt, tuple) and lt[0] > lt[1]:
            raise ValueError(f"lead_time_weeks: low {lt[0]:g} > high {lt[1]:g}")
        return self


class LeaseSpec(FleetsimModel):
    card: str
    count: CardCount
    at: DateStr
    term_years: PositiveFloat
    usd_per_card_month: NonNegativeFloat


class ReservedSpec(FleetsimModel):
    card: str
    count: CardCount
    at: DateStr
    term_years: Literal[1, 3]
    usd_per_card_hour: NonNegativeFloat


class Software(FleetsimModel):
    """Porting a non-CUDA stack (reference-data E8: no public $ figure; state your estimate)."""

    porting_engineer_years: NonNegativeFloat = 0.0
    ongoing_engineers: NonNegativeFloat = 0.0
    usd_per_engineer_year: PositiveFloat = 300_000.0


class Upgrade(FleetsimModel):
    at: DateStr
    engine: str


class EnginePlan(FleetsimModel):
    """Which serving-engine release each card runs over the horizon (the software it gets).

    - `follow-releases` (default): each card runs the newest release of its stack that came out
      `upgrade_lag_months` or more before the hour; past the stack's last release in the library
      its capacity grows at the stack's improvement rate (`software_rate_per_year`), never past
      the card's roofline. Cards bought later start at the release in force at their date.
    - `pinned`: one release for the whole horizon: `pinned: {card: engine id}`; a card not named
      keeps the release in force at the start.
    - `explicit`: the release in force at the start, then each of `upgrades` from its date
      (no projection past the last one)."""

    plan: Literal["follow-releases", "pinned", "explicit"] = "follow-releases"
    upgrade_lag_months: Annotated[float, Field(ge=0, le=60)] = 3.0
    pinned: dict[str, str] = {}
    upgrades: tuple[Upgrade, ...] = ()

    @model_validator(mode="after")
    def _fields_fit_plan(self) -> "EnginePlan":
        if self.pinned and self.plan != "pinned":
            raise ValueError(f"pinned: only with plan: pinned (plan is {self.plan})")
        if self.upgrades and self.plan != "explicit":
            raise ValueError(f"upgrades: only with plan: explicit (plan is {self.plan})")
        return self


class FleetOptionSpec(FleetsimModel):
    engine: EnginePlan | None = None
    """This option's engine plan (default: the scenario's `engine:`)."""
    buy: tuple[Buy, ...] = ()
    lease: tuple[LeaseSpec, ...] = ()
    reserve: tuple[ReservedSpec, ...] = ()
    serve_on: tuple[str, ...] = ()
    policy: Literal["elastic", "dedicated"] = "elastic"
    software: Software = Software()
    spare_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.05

    @model_validator(mode="after")
    def _has_capacity(self) -> "FleetOptionSpec":
        if not (self.buy or self.lease or self.reserve):
            raise ValueError("an option needs at least one of buy, lease or reserve")
        if not any(x.count for x in (*self.buy, *self.lease, *self.reserve)):
            raise ValueError("the option has no cards (every buy, lease and reserve count is 0)")
        return self


def _amount(v: object) -> int | float:
    """A scenario-level override value: a finite number >= 0 (not a bool, not text), kept as
    written (an int stays an int in the resolved scenario)."""
    import math

    shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
    if not (isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300
            and math.isfinite(v) and v >= 0):  # (an int beyond any float fails, not raises)
        raise ValueError(f"must be a number >= 0 (got {shown})")
    return v


def _lead_weeks(v: object) -> int | float | tuple[int | float, int | float]:
    """One lead time in weeks, or a [low, high] range with low <= high."""
    if not isinstance(v, (list, tuple)):
        return _amount(v)
    shown = repr(v) if len(repr(v)) <= 60 else repr(v)[:57] + "..."
    lo_hi = [_amount(x) for x in v]
    if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
        raise ValueError(f"must be [low, high] with low <= high (got {shown})")
    return (lo_hi[0], lo_hi[1])


Amount = Annotated[int | float, BeforeValidator(_amount)]
LeadWeeks = Annotated[int | float | tuple[int | float, int | float],
                      BeforeValidator(_lead_weeks)]


class Override(FleetsimModel):
    """Library values replaced for this scenario, with their source (shown in the report).
    `fields` maps a path into the library record (`memory.bandwidth_tbps`, or a nested
    mapping as written) to its value; in the YAML those paths sit beside `source`. The record
    with them applied is validated against its own schema when the scenario is loaded
    (`check_references`). `values()` gives every key as written, in the file's order."""

    SCENARIO_KEYS: ClassVar[tuple[str, ...]] = ()
    source: Annotated[str, Field(min_length=3)]
    fields: dict[str, Any] = {}
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _library_paths(cls, data: Any, handler):
        """Keys other than `source` and the scenario-level ones are library-record paths."""
        if not isinstance(data, dict):
            return handler(data)
        own = {"source", *cls.SCENARIO_KEYS}
        paths = {k: v for k, v in data.items() if k not in own}
        m = handler({**{k: v for k, v in data.items() if k in own},
                     **({"fields": paths} if paths else {})})
        m._order = tuple(k for k in data if k != "source")
        return m

    def values(self) -> dict[str, Any]:
        """Every overridden key as written (scenario-level keys and library paths)."""
        given = {k: getattr(self, k) for k in self.SCENARIO_KEYS if k in self.model_fields_set}
        given = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
        both = {**given, **self.fields}
        return {k: both[k] for k in (*self._order, *both) if k in both}

    @model_serializer(mode="wrap")
    def _flat(self, handler) -> dict:
        """Dumped as written: `source` and the given keys side by side (no `fields` key)."""
        handler(self)
        return {"source": self.source, **self.values()}


class CardOverride(Override):
    """A card's scenario-level values (its price, TDP, power cap, rent, lead time) and library
    paths, with their source."""

    SCENARIO_KEYS: ClassVar[tuple[str, ...]] = (
        "price_usd", "tdp_w", "power_cap_w", "rent_usd_per_hour", "lead_time_weeks")
    price_usd: Amount | None = None
    tdp_w: Amount | None = None
    power_cap_w: Amount | None = None
    rent_usd_per_hour: Amount | None = None
    lead_time_weeks: LeadWeeks | None = None


class ModelOverride(Override):
    """A model's library paths replaced for this scenario, with their source."""


class Normal(FleetsimModel):
    mean: float
    sd: PositiveFloat
    low: float | None = None
    high: float | None = None


class LogNormal(FleetsimModel):
    median: PositiveFloat
    sigma: PositiveFloat
    low: float | None = None
    high: float | None = None


DISTRIBUTION_KEYS = ("uniform", "triangular", "normal", "lognormal", "choice", "weights")
"""The keys a distribution is written with (the first five name its kind)."""


class _Dist(FleetsimModel):
    """A kind of distribution. Dumped with every kind's key (the others null), as the resolved
    scenario has always listed them."""

    @property
    def kind(self) -> str:
        return next(k for k in DISTRIBUTION_KEYS[:5] if k in type(self).model_fields)

    @model_serializer(mode="wrap")
    def _all_keys(self, handler) -> dict:
        return {**dict.fromkeys(DISTRIBUTION_KEYS), **handler(self)}


class UniformDist(_Dist):
    """uniform [low, high]."""

    uniform: tuple[float, float]

    @model_validator(mode="after")
    def _ordered(self) -> "UniformDist":
        if self.uniform[0] > self.uniform[1]:
            raise ValueError(f"low {self.uniform[0]} > high {self.uniform[1]}")
        return self


class TriangularDist(_Dist):
    """triangular [low, mode, high]."""

    triangular: tuple[float, float, float]

    @model_validator(mode="after")
    def _ordered(self) -> "TriangularDist":
        lo, mode, hi = self.triangular
        if not lo <= mode <= hi:
            raise ValueError(f"need low <= mode <= high (got {list(self.triangular)})")
        if lo == hi:
            raise ValueError("low equals high")
        return self


def _bounds(d: Normal | LogNormal, name: str) -> None:
    """Optional low/high bounds (truncated, not clipped)."""
    if d.low is not None and d.high is not None and d.low >= d.high:
        raise ValueError(f"{name}: low {d.low} >= high {d.high}")


class NormalDist(_Dist):
    """normal {mean, sd}, optionally bounded by low/high."""

    normal: Normal

    @model_validator(mode="after")
    def _bounded(self) -> "NormalDist":
        _bounds(self.normal, "normal")
        return self


class LogNormalDist(_Dist):
    """lognormal {median, sigma}, optionally bounded by low/high."""

    lognormal: LogNormal

    @model_validator(mode="after")
    def _bounded(self) -> "LogNormalDist":
        _bounds(self.lognormal, "lognormal")
        if self.lognormal.high is not None and self.lognormal.high <= 0:
            raise ValueError("lognormal: high must be > 0")
        return self


class ChoiceDist(_Dist):
    """A discrete `choice`, equally likely unless `weights` (one per choice)."""

    choice: Annotated[tuple[float | str, ...], Field(min_length=1)]
    weights: tuple[PositiveFloat, ...] | None = None

    @model_validator(mode="after")
    def _one_weight_each(self) -> "ChoiceDist":
        if self.weights is not None and len(self.weights) != len(self.choice):
            raise ValueError("weights: give one weight per choice")
        return self


def _distribution_kind(v: Any) -> str | None:
    """The union's tag: the kind a distribution is written with."""
    if isinstance(v, _Dist):
        return v.kind
    if isinstance(v, dict):
        return next((k for k in DISTRIBUTION_KEYS[:5] if v.get(k) is not None), None)
    return None


def _exactly_one_kind(v: Any) -> Any:
    """Exactly one kind per input; the null keys of a dumped distribution dropped."""
    if not isinstance(v, dict):
        return v
    given = [k for k in DISTRIBUTION_KEYS[:5] if v.get(k) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one distribution (got {', '.join(given) or 'none'})")
    return {k: x for k, x in v.items() if not (k in DISTRIBUTION_KEYS and x is None)}


Distribution = Annotated[
    Annotated[UniformDist, Tag("uniform")] | Annotated[TriangularDist, Tag("triangular")]
    | Annotated[NormalDist, Tag("normal")] | Annotated[LogNormalDist, Tag("lognormal")]
    | Annotated[ChoiceDist, Tag("choice")],
    Discriminator(_distribution_kind), BeforeValidator(_exactly_one_kind)]
"""One uncertain input: exactly one of uniform [low, high], triangular [low, mode, high],
normal {mean, sd} or lognormal {median, sigma} (both optionally bounded by low/high:
truncated, not clipped), or a discrete `choice` (equally likely unless `weights`): a union
discriminated by the key it is written with."""


def distribution(**kw: Any):
    """A `Distribution` from keyword arguments, e.g. `distribution(normal={"mean": 1, "sd": 2})`."""
    from pydantic import TypeAdapter

    return TypeAdapter(Distribution).validate_python(kw)


class Correlation(FleetsimModel):
    """Rank (Spearman) correlation between two uncertain inputs, e.g. a supply crunch raising
    lead times and prices together; applied through a Gaussian copula."""

    between: tuple[str, str]
    rank: Annotated[float, Field(gt=-1, lt=1)]


class JointCase(FleetsimModel):
    """A named world drawn with `probability`; its `set` values replace the draws of those
    paths (e.g. `supply-crunch` sets lead times, prices and rents together)."""

    probability: Annotated[float, Field(gt=0, le=1)]
    set: dict[str, float | str] = {}


class Flip(FleetsimModel):
    param: str
    between: tuple[float, float]
    options: tuple[str, str] | None = None


class Analysis(FleetsimModel):
    """Analyses `fleetsim run` performs after the base run (each reports its own time)."""

    monte_carlo: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    """Number of draws of the `uncertain` inputs."""
    tornado: bool = False
    flip: tuple[Flip, ...] = ()
    sweep: dict[str, Annotated[tuple[float | str, ...], Field(min_length=1)]] = {}
    optimize: bool = False
    """Find the cheapest purchase plan (sim.experiments.optimize) and simulate it."""


class Scenario(FleetsimModel):
    name: str
    start: DateStr
    horizon_years: Annotated[float, Field(ge=0.01, le=10)]
    seed: NonNegativeInt = 0
    site: Site = Site()
    finance: Finance = Finance()
    reliability: ReliabilitySpec = ReliabilitySpec()
    workloads: dict[str, InferenceWorkload]
    training: dict[str, TrainingCampaign] = {}
    cards: dict[str, CardOverride] = {}
    models: dict[str, ModelOverride] = {}
    options: dict[str, FleetOptionSpec]
    engine: EnginePlan = EnginePlan()
    """The engine plan of every option that does not give its own (`options.<name>.engine`)."""
    software_rate_per_year: dict[str, NonNegativeFloat] = {}
    """Per stack (cuda, rocm, synapseai): the fractional throughput gain per year past the
    stack's last release in the library (default: its fit, `hardware_specs/software_trends/`,
    floored at 0). Monte Carlo draws it; `fleetsim flip` can solve for it."""
    efficiency: dict[str, PositiveFloat] = {}
    """Per card: a multiplier on its modelled throughput (serving capacity and training speed),
    e.g. a software-maturity haircut or the model's own fidelity error in a Monte Carlo draw."""
    uncertain: dict[str, Distribution] = {}
    correlations: tuple[Correlation, ...] = ()
    joint: dict[str, JointCase] = {}
    analysis: Analysis = Analysis()
    capacity_requests: Annotated[int, Field(ge=100, le=1_000_000)] = 2000
    """Requests simulated per point of each capacity search (more: tighter p99 estimates)."""

    @model_validator(mode="after")
    def _non_empty(self) -> "Scenario":
        if not self.options:
            raise ValueError("options: name at least one fleet option to compare")
        if not self.workloads and not self.training:
            raise ValueError("workloads: give at least one workload or training campaign")
        return self

    def _repr_html_(self) -> str:
        from sim.config.base import html_repr
        return html_repr("scenario", self)


_ID_FIELDS = {"card": "card", "model": "model", "lengths": "workload"}


def check_references(scn: Scenario, library: Library, where: str) -> None:
    """Every card/model/length-mix id resolves in the library; overrides name real fields."""
    def unknown(path: str, kind: str, ident: str) -> ConfigError:
        known = library.ids(kind)
        close = difflib.get_close_matches(ident, known, n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
        return ConfigError(f"{where}: {path}: unknown {kind} '{ident}'{hint}")

    def need(path: str, kind: str, ident: str) -> None:
        if ident not in library.ids(kind):
            raise unknown(path, kind, ident)

    for name, w in scn.workloads.items():
        need(f"workloads.{name}.model", "model", w.model)
        if w.traffic.lengths:
            need(f"workloads.{name}.traffic.lengths", "workload", w.traffic.lengths)
        if w.rent:
            need(f"workloads.{name}.rent.card", "card", w.rent.card)
    for name, t in scn.training.items():
        need(f"training.{name}.model", "model", t.model)
        need(f"training.{name}.card", "card", t.card)
    for oname, o in scn.options.items():
        for kind_name, items in (("buy", o.buy), ("lease", o.lease), ("reserve", o.reserve)):
            for i, b in enumerate(items):
                need(f"options.{oname}.{kind_name}[{i}].card", "card", b.card)
        for i, c in enumerate(o.serve_on):
            need(f"options.{oname}.serve_on[{i}]", "card", c)
    plans = [("engine", scn.engine)] + [(f"options.{n}.engine", o.engine)
                                         for n, o in scn.options.items() if o.engine]
    for path, plan in plans:
        for cid, eid in plan.pinned.items():
            need(f"{path}.pinned.{cid}", "card", cid)
            _check_runs(library, where, f"{path}.pinned.{cid}", eid, [cid], need)
        for i, up in enumerate(plan.upgrades):
            _check_runs(library, where, f"{path}.upgrades[{i}].engine", up.engine, [], need)
    known_stacks = sorted({library.engine(e).stack for e in library.ids("engine")})
    for st in scn.software_rate_per_year:
        if st not in known_stacks:
            raise ConfigError(f"{where}: software_rate_per_year.{st}: unknown stack '{st}' "
                              f"(known: {', '.join(known_stacks)})")
    for cid, ov in scn.cards.items():
        need(f"cards.{cid}", "card", cid)
        _check_override_fields(where, f"cards.{cid}", ov, library.card(cid))
    for mid, ov in scn.models.items():
        need(f"models.{mid}", "model", mid)
        _check_override_fields(where, f"models.{mid}", ov, library.model(mid))
    for cid in scn.efficiency:
        need(f"efficiency.{cid}", "card", cid)
    _check_site(scn, library, where)
    _check_dates(scn, where)
    _check_experiment_paths(scn, library, where)


def _check_runs(library: Library, where: str, path: str, eid: str, cards: list[str],
                need) -> None:
    need(path, "engine", eid)
    runs = library.engine(eid).runs_on
    for cid in cards:
        if cid not in runs:
            raise ConfigError(f"{where}: {path}: engine '{eid}' does not run on card '{cid}' "
                              f"(it runs on: {', '.join(runs)})")


def hours_after_start(start: str, date: str) -> float:
    """Hours from the scenario's start to `date` (negative before it); YYYY and YYYY-MM mean
    the first day."""
    def parse(s: str) -> dt.date:
        parts = [int(x) for x in s.split("-")] + [1, 1]
        return dt.date(parts[0], parts[1], parts[2])
    return (parse(date) - parse(start)).days * 24.0


def _check_dates(scn: Scenario, where: str) -> None:
    """Every dated thing (orders, leases, reservations, campaign starts, traffic events) falls
    inside the horizon: on or after `start`, before `start + horizon_years`."""
    end_h = scn.horizon_years * HOURS_PER_YEAR
    dated: list[tuple[str, str]] = []
    for oname, o in scn.options.items():
        for kind_name, items in (("buy", o.buy), ("lease", o.lease), ("reserve", o.reserve)):
            dated += [(f"options.{oname}.{kind_name}[{i}].at", b.at) for i, b in enumerate(items)]
    dated += [(f"training.{n}.start", t.start) for n, t in scn.training.items() if t.start]
    plans = [("engine", scn.engine)] + [(f"options.{n}.engine", o.engine)
                                         for n, o in scn.options.items() if o.engine]
    dated += [(f"{path}.upgrades[{i}].at", u.at) for path, p in plans
              for i, u in enumerate(p.upgrades)]
    for wname, w in scn.workloads.items():
        dated += [(f"workloads.{wname}.traffic.events.{e}.at", ev.at)
                  for e, ev in w.traffic.events.items()]
    for path, date in dated:
        h = hours_after_start(scn.start, date)
        if h < 0:
            raise ConfigError(f"{where}: {path}: {date} is before the scenario's start "
                              f"{scn.start}")
        if h >= end_h:
            raise ConfigError(f"{where}: {path}: {date} is after the horizon ({scn.start} + "
                              f"{scn.horizon_years:g} years)")


def _check_experiment_paths(scn: Scenario, library: Library, where: str) -> None:
    """Uncertain inputs, correlations, joint worlds, flips and sweeps name real values."""
    from sim.config.paths import with_overrides

    def try_path(section: str, path: str, value) -> None:
        try:
            with_overrides(scn, {path: value}, None, where="")
        except ConfigError as exc:
            msg = str(exc).removeprefix(": ")
            raise ConfigError(f"{where}: {section}: {msg}") from None

    for path, d in scn.uncertain.items():
        value = {"uniform": lambda: d.uniform[0], "triangular": lambda: d.triangular[0],
                 "choice": lambda: d.choice[0], "normal": lambda: d.normal.mean,
                 "lognormal": lambda: d.lognormal.median}[d.kind]()
        try_path(f"uncertain.{path}", path, value)
    for i, c in enumerate(scn.correlations):
        for p in c.between:
            if p not in scn.uncertain:
                raise ConfigError(f"{where}: correlations[{i}].between: '{p}' is not an "
                                  "uncertain input")
        if c.between[0] == c.between[1]:
            raise ConfigError(f"{where}: correlations[{i}].between: the same input twice")
    total = sum(j.probability for j in scn.joint.values())
    if total > 1 + 1e-9:
        raise ConfigError(f"{where}: joint: probabilities sum to {total:g} (> 1)")
    for name, j in scn.joint.items():
        for p, v in j.set.items():
            try_path(f"joint.{name}.set.{p}", p, v)
    for i, f in enumerate(scn.analysis.flip):
        if f.between[0] >= f.between[1]:
            raise ConfigError(f"{where}: analysis.flip[{i}].between: low {f.between[0]} >= "
                              f"high {f.between[1]}")
        try_path(f"analysis.flip[{i}].param", f.param, f.between[0])
        for o in f.options or ():
            if o not in scn.options:
                raise ConfigError(f"{where}: analysis.flip[{i}].options: unknown option "
                                  f"'{o}' (known: {', '.join(scn.options)})")
    for path, values in scn.analysis.sweep.items():
        for v in values:
            try_path(f"analysis.sweep.{path}", path, v)


CARD_OVERRIDES = CardOverride.SCENARIO_KEYS
SERVER_KW_PER_CARD_KW = 10.2 / (8 * 0.7)
"""Server power per card as a multiple of the card's power: DGX H100, 10.2 kW for 8 x 700 W
GPUs (reference-data E4)."""
CARDS_PER_SERVER = 8


def card_power_w(scn: "Scenario", card_tdp_w: float, card: str) -> float:
    """The power a card runs at in this scenario: its power cap (`cards.<id>.power_cap_w`), else
    a TDP override, else the library's TDP."""
    ov = scn.cards.get(card)
    if ov is None:
        return float(card_tdp_w)
    return float(ov.power_cap_w or ov.tdp_w or card_tdp_w)


def _check_site(scn: "Scenario", library: Library, where: str) -> None:
    """Liquid-cooled parts need a site with liquid cooling; an 8-card server must fit a rack;
    a power cap lies between the card's configurable minimum and its TDP."""
    for cid, ov in scn.cards.items():
        cap = ov.power_cap_w
        if cap is None:
            continue
        p = library.card(cid).power
        tdp = float(ov.tdp_w or p.tdp_w)
        lo = p.configurable_min_w or 0.3 * p.tdp_w
        if not lo <= cap <= tdp:
            raise ConfigError(f"{where}: cards.{cid}.power_cap_w: {cap:g} W is outside the card's "
                              f"range {lo:g}-{tdp:g} W")
    for oname, o in scn.options.items():
        for kind_name, items in (("buy", o.buy), ("lease", o.lease), ("reserve", o.reserve)):
            if kind_name == "reserve":
                continue  # cloud capacity: not on this site
            for i, b in enumerate(items):
                spec = library.card(b.card)
                path = f"options.{oname}.{kind_name}[{i}].card"
                if spec.power.cooling == "liquid" and not scn.site.liquid_cooling:
                    raise ConfigError(f"{where}: {path}: {b.card} needs liquid cooling and the "
                                      "site has none (site.liquid_cooling: false)")
                if scn.site.rack_kw is not None:
                    server_kw = (card_power_w(scn, spec.power.tdp_w, b.card) / 1000
                                 * SERVER_KW_PER_CARD_KW * CARDS_PER_SERVER)
                    if server_kw > scn.site.rack_kw:
                        raise ConfigError(
                            f"{where}: {path}: an {CARDS_PER_SERVER}-card {b.card} server draws "
                            f"{server_kw:.1f} kW, more than site.rack_kw ({scn.site.rack_kw:g} "
                            f"kW); cap its power (cards.{b.card}.power_cap_w) or raise rack_kw")


def _check_override_fields(where: str, path: str, ov: Override, spec) -> None:
    """Each library path must name a field of the record (`spec`), and the record with the
    values applied must stay valid (its own pydantic schema). The scenario-level keys are
    typed on `CardOverride`."""
    from sim.config.paths import override_spec

    fields = set(type(spec).model_fields)
    for k in ov.fields:
        if k.split(".")[0] not in fields:
            known = [*type(ov).SCENARIO_KEYS, *sorted(fields - {"sources", "notes"})]
            close = difflib.get_close_matches(k.split(".")[0], known, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"{where}: {path}.{k}: cannot be overridden{hint}")
    if ov.fields:
        try:
            override_spec(spec, ov.fields)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {path}.{str(exc)}") from None


def load_scenario(path: Path | str, library: Library | None = None) -> Scenario:
    """Parse, validate and resolve the references of a scenario file (one-line errors)."""
    lib = library or Library.default()
    path = Path(path)
    where = str(path)
    scn = validate(Scenario, read_yaml(path, where), where)
    check_references(scn, lib, where)
    return scn
