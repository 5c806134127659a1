"""Hourly fleet timeline: what a buyer owns, what fails, what trains, what serves, what is rented.

Vectorised over hours with numpy (a 5-year horizon is 43,800 hours); the few sequential
decisions (training campaigns in priority order) loop over campaigns, not hours.

Per hour h, for one fleet option:
    owned     = delivered (order + lead time + burn-in) and not yet retired (end of life)
    repair    = cards failed within the last repair_hours (failures: infant mortality in the
                first 30 days after delivery, then a constant rate per card-year; seeded)
    available = owned - max(repair - spares, 0) - spares      (hot spares cover failures)
    training  = cards held by campaigns (elastic: taken from serving, whole replicas)
    serving   = available - training;   idle = serving cards beyond what demand needs
    needed    = demand_rps / capacity_rps_per_card            (capacity from sim.serving curves)
    rented    = min(needed - serving capacity, rent cap);  unserved = what is left
Conservation: owned = training + serving + idle + unavailable (repair and spares) + unpowered
(beyond the site power cap); reserved = reserved_serving + reserved_idle; in-transit cards are
not owned yet; demand = served + rented + unserved.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sim.units import HOURS_PER_QUARTER, HOURS_PER_YEAR

INFANT_WINDOW_H = 720  # infant mortality shows within ~30 days of install (reference-data D2)


class FleetError(ValueError):
    """A user-facing fleet configuration error."""


@dataclass(frozen=True)
class Demand:
    """Inference demand of one workload in requests/s: base rate growing by `growth_per_year`
    (compounded continuously per hour) or by `growth_by_quarter` (quarter-over-quarter rates,
    compounded within each quarter, the last holding afterwards), times a diurnal cosine (peak
    at `peak_hour`), times a weekend factor, times named events (start hour, duration hours,
    multiplier)."""

    base_rps: float
    growth_per_year: float = 0.0
    diurnal_amplitude: float = 0.0
    peak_hour: float = 14.0
    weekend_factor: float = 1.0
    events: tuple[tuple[float, float, float], ...] = ()
    share_by_year: tuple[float, ...] = ()
    """Mix shift: this workload's demand in year y is multiplied by share_by_year[y] (the last
    value holds afterwards), e.g. reasoning traffic rising from 0.1 to 0.6 of a service."""
    growth_by_quarter: tuple[float, ...] = ()

    def rps(self, hours: np.ndarray) -> np.ndarray:
        r = self.base_rps * self.growth_factor(hours)
        if self.share_by_year:
            shares = np.asarray(self.share_by_year, dtype=float)
            r = r * shares[np.minimum((hours // HOURS_PER_YEAR).astype(int), len(shares) - 1)]
        r = r * (1.0 + self.diurnal_amplitude * np.cos(2 * np.pi * ((hours % 24) - self.peak_hour)
                                                       / 24.0))
        weekend = ((hours // 24) % 7) >= 5
        r = np.where(weekend, r * self.weekend_factor, r)
        for start, dur, mult in self.events:
            r = np.where((hours >= start) & (hours < start + dur), r * mult, r)
        return r

    def growth_factor(self, hours: np.ndarray) -> np.ndarray:
        """Demand at `hours` over demand at hour 0 from growth alone."""
        hours = np.asarray(hours, dtype=float)
        if not self.growth_by_quarter:
            return (1.0 + self.growth_per_year) ** (hours / HOURS_PER_YEAR)
        logs = np.log1p(np.asarray(self.growth_by_quarter, dtype=float))
        done = np.concatenate([[0.0], np.cumsum(logs)])  # log level at each quarter's start
        n = len(logs)
        q = np.floor(hours / HOURS_PER_QUARTER).astype(int)
        frac = hours / HOURS_PER_QUARTER - q
        qc = np.minimum(q, n)
        level = done[qc] + (q - qc) * logs[-1] + frac * logs[np.minimum(q, n - 1)]
        return np.exp(level)


@dataclass(frozen=True)
class Workload:
    """One inference workload: demand, tokens per request, and how many requests/s one card
    sustains within the SLOs on each card type (read off the serving capacity curves)."""

    name: str
    demand: Demand
    input_tokens: float
    output_tokens: float
    capacity_rps_per_card: dict[str, float | np.ndarray]
    """Per card: requests/s one card sustains within the SLOs, one number for the horizon or
    one per hour (the engine release in force and its projection, `sim.perf.software`)."""
    rent_usd_per_card_hour: float = 0.0
    rent_card: str | None = None
    rent_cap_cards: float = math.inf
    prefill_time_fraction: float | None = None
    """Share of this workload's GPU time spent on prefill (sim.perf reports it); the cost layer
    splits $/M tokens between input and output with it."""

    def capacity(self, card: str | None, num_hours: int) -> np.ndarray:
        """Requests/s per card of `card` at each hour (0 for a card it does not name)."""
        v = self.capacity_rps_per_card.get(card or "", 0.0)
        return np.broadcast_to(np.asarray(v, dtype=float), (num_hours,))

    def best_capacity(self, num_hours: int) -> np.ndarray:
        """The highest requests/s per card of any card it names, hour by hour."""
        if not self.capacity_rps_per_card:
            return np.zeros(num_hours)
        return np.max([self.capacity(c, num_hours) for c in self.capacity_rps_per_card], axis=0)


@dataclass(frozen=True)
class Campaign:
    """A training campaign on one card type: `card_hours` of work at full speed (tokens /
    tokens-per-second-per-card / 3600, from sim.perf.training), run on up to `cards` cards from
    `earliest_hour` (elastic data parallelism: fewer free cards slow it down rather than
    stall it), and slowed by failures and restarts (ETTR)."""

    name: str
    card: str
    cards: int | None
    card_hours: float
    earliest_hour: float = 0.0
    priority: int = 0
    ettr: float = 0.9  # effective training time ratio, reference-data F (Llama 3, ByteRobust)
    deadline_hour: float | None = None
    """With `cards` None, the cards are derived from the deadline: the fewest that finish
    `card_hours` of work by `deadline_hour` at the ETTR. Either way the results say whether the
    deadline was met."""

    def cards_needed(self) -> int:
        if self.cards is not None:
            return self.cards
        if self.deadline_hour is None or self.deadline_hour <= self.earliest_hour:
            raise FleetError(f"training.{self.name}: give cards, or a deadline after its "
                             "earliest start")
        return int(math.ceil(self.card_hours / (self.ettr * (self.deadline_hour
                                                               - self.earliest_hour))))


@dataclass(frozen=True)
class LeadTime:
    """Lead time distribution in weeks (reference-data E7: H100 servers 36-52 weeks in late
    2023, 8-12 weeks by 2024-04): `uniform` on [low, high], or `triangular` with a mode."""

    low_weeks: float
    high_weeks: float
    mode_weeks: float | None = None

    def sample_hours(self, rng: np.random.Generator) -> float:
        if self.mode_weeks is None:
            w = rng.uniform(self.low_weeks, self.high_weeks)
        else:
            w = rng.triangular(self.low_weeks, self.mode_weeks, self.high_weeks)
        return float(w) * 7 * 24


@dataclass(frozen=True)
class Purchase:
    """An order: `lead_time_hours` fixed, or drawn from `lead_time` (seeded, per purchase)."""

    card: str
    count: int
    order_hour: float
    lead_time_hours: float = 0.0
    burn_in_hours: float = 72.0
    life_years: float = 5.0
    lead_time: LeadTime | None = None

    @property
    def delivery_hour(self) -> float:
        return self.order_hour + self.lead_time_hours + self.burn_in_hours


@dataclass(frozen=True)
class Lease:
    """Leased cards: on site like owned ones (they fail, draw power, take space) for
    `term_years` from delivery, paid monthly, no capex and no residual value."""

    card: str
    count: int
    start_hour: float
    term_years: float
    usd_per_card_month: float
    lead_time_hours: float = 0.0


@dataclass(frozen=True)
class Reserved:
    """Reserved cloud capacity as a fleet option: `count` cards of `card` from `start_hour` for
    `term_years` (1- or 3-year terms, reference-data A4), paid every hour of the term whether
    used or not; the provider absorbs failures."""

    card: str
    count: int
    start_hour: float
    term_years: float
    usd_per_card_hour: float


@dataclass(frozen=True)
class Reliability:
    """Failure model per card type (reference-data D1-D2): 0.17 unexpected interruptions per
    GPU-year (Llama 3, H100-class), 5% infant mortality within 30 days (3-10%, ml-engineering),
    repair or replacement in `repair_hours` (no public MTTR: an assumption), `spare_fraction`
    of the fleet held as hot spares (5%, NCSA/BLOOM)."""

    failures_per_card_year: float = 0.17
    infant_mortality: float = 0.05
    repair_hours: float = 72.0
    spare_fraction: float = 0.05


@dataclass(frozen=True)
class FleetOption:
    name: str
    purchases: tuple[Purchase, ...]
    reliability: Reliability = Reliability()
    power_per_card_kw: dict[str, float] = field(default_factory=dict)
    """Server power per card at full load (e.g. DGX H100 10.2 kW / 8 GPUs = 1.275 kW, E4)."""
    reserved: tuple[Reserved, ...] = ()
    leases: tuple[Lease, ...] = ()
    site_power_cap_kw: float | None = None
    """Provisioned power the site has for this option; delivered cards beyond it wait
    (unpowered) in delivery order, earliest first (a retired purchase frees its power)."""


@dataclass
class Timeline:
    option: str
    hours: np.ndarray
    per_card: dict[str, dict[str, np.ndarray]]
    demand_rps: dict[str, np.ndarray]
    served_rps: dict[str, np.ndarray]
    rented_rps: dict[str, np.ndarray]
    unserved_rps: dict[str, np.ndarray]
    rented_card_hours: dict[str, np.ndarray]
    campaigns: list[dict]
    delivery_hours: tuple[float, ...] = ()
    """Delivery hour of each purchase (lead times may be drawn), in the option's order."""

    def per_year(self) -> pd.DataFrame:
        """Card-hours by state and request-hours by outcome, one row per year and card type."""
        year = (self.hours // HOURS_PER_YEAR).astype(int)
        years = np.unique(year)
        n = int(year.max()) + 1 if len(year) else 0

        def by_year(x: np.ndarray) -> np.ndarray:
            return np.bincount(year, weights=x, minlength=n)[years]

        frames = []
        for card, d in self.per_card.items():
            cols: dict[str, object] = {"option": self.option, "year": years, "card": card}
            for k in ("owned", "training", "serving", "idle", "unavailable", "unpowered",
                      "reserved"):
                if k in d:
                    cols[f"{k}_card_hours"] = by_year(d[k])
            cols["failures"] = by_year(d["failed"])
            cols["arrived"] = by_year(d["arrived"])
            frames.append(pd.DataFrame(cols))
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        for w in self.demand_rps:
            for k, arr in (("demand", self.demand_rps[w]), ("served", self.served_rps[w]),
                           ("rented", self.rented_rps[w]), ("unserved", self.unserved_rps[w])):
                per = dict(zip(years.tolist(), by_year(arr * 3600.0)))
                df[f"{w}.{k}_requests"] = df["year"].map(per).astype(float)
        return df

    def per_hour(self) -> pd.DataFrame:
        cols: dict[str, np.ndarray] = {"hour": self.hours}
        for card, d in self.per_card.items():
            for k, v in d.items():
                cols[f"{card}.{k}"] = v
        for w in self.demand_rps:
            cols[f"{w}.demand_rps"] = self.demand_rps[w]
            cols[f"{w}.served_rps"] = self.served_rps[w]
            cols[f"{w}.rented_rps"] = self.rented_rps[w]
            cols[f"{w}.unserved_rps"] = self.unserved_rps[w]
        df = pd.DataFrame(cols)
        df.insert(0, "option", self.option)
        return df


def poisson_inverse_cdf(u: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Smallest k with P(X <= k) >= u for X ~ Poisson(mu), elementwise (scipy.stats.poisson.ppf
    semantics), by walking the CDF: fast when mu is small, as hourly failure counts are."""
    mu = np.asarray(mu, dtype=float)
    pmf = np.exp(-mu)
    cdf = pmf.copy()
    k = np.zeros_like(mu)
    j = 0
    active = u > cdf
    while active.any():
        j += 1
        pmf = pmf * mu / j
        cdf = cdf + pmf
        k = k + active
        active = active & (u > cdf) & (j < 10_000)
    return k


def delivery_hour(p: Purchase, stream: np.random.SeedSequence) -> float:
    """Order + lead time (fixed, or drawn from the purchase's own stream) + burn-in."""
    if p.lead_time is None:
        return p.delivery_hour
    # a child key of the purchase's stream, derived without mutating it (separate from the
    # infant-mortality draws, and the same however often it is asked)
    rng = np.random.default_rng(np.random.SeedSequence(stream.entropy,
                                                       spawn_key=(*stream.spawn_key, 1)))
    return p.order_hour + p.lead_time.sample_hours(rng) + p.burn_in_hours


def _check(option: FleetOption, workloads: list[Workload], campaigns: list[Campaign],
           horizon_years: float) -> None:
    if not horizon_years > 0:
        raise FleetError(f"horizon_years must be > 0 (got {horizon_years})")
    for i, p in enumerate(option.purchases):
        where = f"options.{option.name}.buy[{i}]"
        if p.count < 0:
            raise FleetError(f"{where}.count: must be >= 0 (got {p.count})")
        if not p.life_years > 0:
            raise FleetError(f"{where}.life_years: must be > 0 (got {p.life_years})")
        if p.lead_time_hours < 0:
            raise FleetError(f"{where}.lead_time: must be >= 0 (got {p.lead_time_hours})")
    for i, ls in enumerate(option.leases):
        where = f"options.{option.name}.lease[{i}]"
        if ls.count < 0 or not ls.term_years > 0 or ls.usd_per_card_month < 0:
            raise FleetError(f"{where}: count and price must be >= 0 and term_years > 0 (got "
                             f"{ls.count}, {ls.usd_per_card_month}, {ls.term_years})")
    owned_types = {p.card for p in option.purchases} | {ls.card for ls in option.leases}
    for w in workloads:
        for card in owned_types:
            if card not in w.capacity_rps_per_card:
                raise FleetError(f"workloads.{w.name}: no serving capacity for card '{card}'")
    for c in campaigns:
        total = sum(p.count for p in option.purchases if p.card == c.card) + sum(
            ls.count for ls in option.leases if ls.card == c.card)
        need = c.cards_needed()
        if need > total:
            raise FleetError(f"training.{c.name}.cards: {need} {c.card} cards needed but "
                             f"option '{option.name}' buys only {total}: it can never fit")


def simulate_fleet(option: FleetOption, workloads: list[Workload], campaigns: list[Campaign],
                   horizon_years: float, seed: int = 0) -> Timeline:
    """Hour-by-hour timeline of one fleet option (deterministic for a seed)."""
    _check(option, workloads, campaigns, horizon_years)
    H = int(round(horizon_years * HOURS_PER_YEAR))
    hours = np.arange(H, dtype=float)
    # leased cards are on site like bought ones for their term: same physics, other money
    on_site = tuple(option.purchases) + tuple(
        Purchase(ls.card, ls.count, ls.start_hour, ls.lead_time_hours, 0.0, ls.term_years)
        for ls in option.leases)
    cards = sorted({p.card for p in on_site})
    # one stream per card type (hourly failures), keyed by the card's name, and one per
    # purchase and per lease, keyed by its place among its kind (delivery and infant mortality
    # draw from two children of it), so adding a card type, a purchase or a lease, or resizing
    # one, leaves every other draw unchanged (common random numbers)
    card_streams = {c: np.random.SeedSequence(seed, spawn_key=(0, zlib.crc32(c.encode())))
                    for c in cards}
    buy_streams = [np.random.SeedSequence(seed, spawn_key=(1, i))
                   for i in range(len(option.purchases))] + [
        np.random.SeedSequence(seed, spawn_key=(2, j)) for j in range(len(option.leases))]
    deliveries = tuple(delivery_hour(p, ss) for p, ss in zip(option.purchases, buy_streams))
    deliveries_all = tuple(delivery_hour(p, ss) for p, ss in zip(on_site, buy_streams))
    rel = option.reliability
    per_card: dict[str, dict[str, np.ndarray]] = {}
    for card in cards:
        rng = np.random.default_rng(card_streams[card])
        u_fail = rng.random(H)
        arrived = np.zeros(H)
        retired = np.zeros(H)
        infant = np.zeros(H)
        for p, ss in zip(on_site, buy_streams):
            if p.card != card:
                continue
            dh = delivery_hour(p, ss)
            d = int(math.ceil(dh))
            if d < H and p.count:
                arrived[d] += p.count
                # infant failures: each card fails within 30 days with probability p_inf, at a
                # uniform time; one row of two uniforms per card keeps a bigger purchase a
                # superset of a smaller (its own stream, apart from the delivery draw)
                prng = np.random.default_rng(
                    np.random.SeedSequence(ss.entropy, spawn_key=(*ss.spawn_key, 2)))
                u = prng.random((p.count, 2))
                fails = u[:, 0] < rel.infant_mortality
                when = d + np.floor(u[:, 1] * INFANT_WINDOW_H).astype(int)
                sel = fails & (when < H)
                np.add.at(infant, when[sel], 1)
            e = int(math.ceil(dh + p.life_years * HOURS_PER_YEAR))
            if e < H:
                retired[e] += p.count
        owned = np.cumsum(arrived - retired)
        lam = rel.failures_per_card_year / HOURS_PER_YEAR
        # Poisson failures by inverse CDF of fixed uniforms: monotone in the number owned
        failed = poisson_inverse_cdf(u_fail, lam * owned) + infant
        rep = max(int(round(rel.repair_hours)), 0)
        if rep == 0:
            in_repair = np.zeros(H)
        else:
            # cards in repair = failures of the last `rep` hours, less the share of them that
            # retired since (cards retire at random among their type): a failure at hour s
            # still counts at t by keep(s+1..t), the product of (cards left / cards before) over
            # the retirements between; keep is floored so that a type retired whole and bought
            # again starts afresh instead of dividing by zero
            before = owned + retired
            keep = np.where(retired > 0, np.divide(owned, before, out=np.zeros(H),
                                                   where=before > 0), 1.0)
            surv = np.cumprod(np.maximum(keep, 1e-9))
            c = np.cumsum(failed / surv)
            lagged = np.concatenate([np.zeros(min(rep, H)), c[: max(H - rep, 0)]])
            in_repair = surv * (c - lagged)
        in_repair = np.minimum(in_repair, owned)
        spares = np.floor(rel.spare_fraction * owned)
        available = np.maximum(owned - np.maximum(in_repair - spares, 0) - spares, 0.0)
        per_card[card] = {"owned": owned, "arrived": arrived, "retired": retired,
                          "failed": failed, "in_repair": in_repair, "spares": spares,
                          "available": available, "unavailable": owned - available,
                          "training": np.zeros(H)}

    # ---- site power cap: delivered cards beyond it wait unpowered, in delivery order ---------
    # (earliest delivery first, ties by order in the option; a retired purchase frees its power
    # for the next in line)
    if option.site_power_cap_kw is not None:
        remaining = np.full(H, float(option.site_power_cap_kw))
        powered_by_card = {c: np.zeros(H) for c in cards}
        order = sorted(range(len(on_site)), key=lambda i: (deliveries_all[i], i))
        for i in order:
            p = on_site[i]
            kw = option.power_per_card_kw.get(p.card, 0.0)
            d = int(math.ceil(deliveries_all[i]))
            e = int(math.ceil(deliveries_all[i] + p.life_years * HOURS_PER_YEAR))
            here = np.zeros(H)
            here[min(d, H):min(e, H)] = p.count
            if kw <= 0:
                powered_by_card[p.card] += here
                continue
            got = np.minimum(here, np.floor(np.maximum(remaining, 0.0) / kw + 1e-9))
            remaining -= got * kw
            powered_by_card[p.card] += got
        for c in cards:
            pc = per_card[c]
            powered = np.minimum(powered_by_card[c], pc["owned"])
            pc["unpowered"] = pc["owned"] - powered
            pc["available"] = np.maximum(np.minimum(pc["available"], powered - np.maximum(
                pc["in_repair"] - pc["spares"], 0) - pc["spares"]), 0.0)
            pc["unavailable"] = pc["owned"] - pc["unpowered"] - pc["available"]
    for c in cards:
        per_card[c].setdefault("unpowered", np.zeros(H))

    # ---- reserved cloud capacity: serves (only) during its term, paid every hour -------------
    reserved = {}
    for r in option.reserved:
        arr = np.where((hours >= r.start_hour)
                       & (hours < r.start_hour + r.term_years * HOURS_PER_YEAR), r.count, 0.0)
        reserved[r.card] = reserved.get(r.card, np.zeros(H)) + arr

    # ---- training campaigns, in priority order, elastic: they take cards from serving -------
    results = []
    for camp in sorted(campaigns, key=lambda c: (-c.priority, c.earliest_hour, c.name)):
        pc = per_card[camp.card]
        free = pc["available"] - pc["training"]
        # elastic data parallelism: from its earliest hour the campaign takes up to `cards`
        # of the cards that are free and progresses in proportion (it waits only while none is)
        start = int(math.ceil(camp.earliest_hour))
        ok = np.nonzero(free[start:] > 0)[0]
        if start >= H or len(ok) == 0:
            results.append({"campaign": camp.name, "start_hour": None, "end_hour": None,
                            "completed": False, "reason": "no card free before the horizon"})
            continue
        s = start + int(ok[0])
        n_cards = camp.cards_needed()
        got = np.minimum(np.maximum(free[s:], 0.0), n_cards)
        work = np.cumsum(got * camp.ettr)  # card-hours of progress
        done = np.nonzero(work >= camp.card_hours)[0]
        end = s + (int(done[0]) + 1 if len(done) else len(got))
        pc["training"][s:end] += got[: end - s]
        met = None if camp.deadline_hour is None else bool(len(done)) and end <= camp.deadline_hour
        results.append({"campaign": camp.name, "cards": n_cards, "start_hour": s,
                        "end_hour": end, "completed": bool(len(done)), "met_deadline": met,
                        "reason": "" if len(done) else "horizon ended before it finished"})

    # ---- serving: each workload's demand on the cards not training -------------------------
    demand = {w.name: w.demand.rps(hours) for w in workloads}
    served = {}
    rented = {}
    unserved = {}
    rented_ch = {}
    serve_cards = sorted(set(cards) | set(reserved))
    zero = np.zeros(H)
    serve_cap = {c: (per_card[c]["available"] - per_card[c]["training"] if c in per_card
                     else zero) + reserved.get(c, zero) for c in serve_cards}
    used_cards = {c: np.zeros(H) for c in serve_cards}
    for w in workloads:
        left = demand[w.name].copy()
        caps = {c: w.capacity(c, H) for c in serve_cards}
        # the card with the higher capacity over the horizon serves first (ties by id)
        for c in sorted(serve_cards, key=lambda c: (-float(caps[c].mean()), c)):
            cap = caps[c]
            free_cards = np.maximum(serve_cap[c] - used_cards[c], 0.0)
            take = np.minimum(np.divide(left, cap, out=np.zeros(H), where=cap > 0), free_cards)
            used_cards[c] += take
            left = np.maximum(left - take * cap, 0.0)  # rounding must not go below 0
        left = np.maximum(left, 0.0)
        served[w.name] = demand[w.name] - left
        rent_rate = w.capacity(w.rent_card, H)
        rent_cap_rps = w.rent_cap_cards * rent_rate if w.rent_card else 0.0
        rented[w.name] = np.minimum(left, rent_cap_rps) if w.rent_card else np.zeros(H)
        rented_ch[w.name] = np.divide(rented[w.name], rent_rate, out=np.zeros(H),
                                      where=rent_rate > 0) if w.rent_card else np.zeros(H)
        unserved[w.name] = left - rented[w.name]
    for c in serve_cards:
        pc = per_card.setdefault(c, {k: np.zeros(H) for k in (
            "owned", "arrived", "retired", "failed", "in_repair", "spares", "available",
            "unavailable", "unpowered", "training")})
        res = reserved.get(c, zero)
        pc["reserved"] = res
        # serving takes owned cards first, then reserved ones
        owned_free = serve_cap[c] - res
        pc["serving"] = np.minimum(used_cards[c], owned_free)
        pc["reserved_serving"] = used_cards[c] - pc["serving"]
        pc["idle"] = np.maximum(owned_free - pc["serving"], 0.0)
        pc["reserved_idle"] = res - pc["reserved_serving"]
        kw = option.power_per_card_kw.get(c, 0.0)
        pc["provisioned_kw"] = (pc["owned"] - pc["unpowered"]) * kw
    return Timeline(option.name, hours, per_card, demand, served, rented, unserved, rented_ch,
                    results, deliveries)
