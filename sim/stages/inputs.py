"""The scenario's values the stages read, each with its rule of precedence: a card's price, its
power and power-cap throughput, a stack's improvement rate, when an option adopts its software,
the cost layer's finance assumptions, and the paths a scenario may name.

Conventions: hour 0 is the scenario's `start`; dates in the file (`at`, `start`) are converted
to hours from it. Server power per card is the card's TDP scaled as a DGX H100 is (10.2 kW per
8 x 700 W GPUs, reference-data E4: x1.82).
"""

from __future__ import annotations

from pathlib import Path

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.scenario import (SERVER_KW_PER_CARD_KW, Scenario, card_power_w,
                                 hours_after_start)
from sim.cost.finance import FinanceAssumptions, ResidualCurve
from sim.perf.software import default_rate, stack_of

SERVER_POWER_PER_TDP = SERVER_KW_PER_CARD_KW  # DGX H100: 10.2 kW for 8 x 700 W GPUs (E4)


def hours_from(start: str, date: str | None) -> float:
    """Hours from the scenario's start to `date` (0 for none or a date before the start)."""
    return 0.0 if date is None else max(hours_after_start(start, date), 0.0)


def card_value(scn: Scenario, card: str, key: str, default):
    """A card's scenario-level override (`cards.<card>.<key>`, a `CardOverride` field), else
    `default`."""
    ov = scn.cards.get(card)
    v = getattr(ov, key) if ov is not None else None
    return default if v is None else v


def power_cap_factor(scn: Scenario, lib: Library, card: str, compute_share: float) -> float:
    """Throughput kept by a power-capped card: the compute-bound share of its time slows with
    the clock, f ~ (P / TDP)^(1/3) (dynamic power ~ f V^2 with V ~ f); the memory-bound rest is
    taken as unchanged. `compute_share`: prefill's share of serving time, 1 for training.
    Assumed physics, not a measurement (reference-data G7 gives the B200's 700 W set point
    but no throughput at it)."""
    tdp = float(card_value(scn, card, "tdp_w", None) or lib.card(card).power.tdp_w)
    p = card_power_w(scn, tdp, card)
    if p >= tdp:
        return 1.0
    share = min(max(compute_share or 0.0, 0.0), 1.0)
    return 1.0 / ((1.0 - share) + share / (p / tdp) ** (1.0 / 3.0))


def server_kw(scn: Scenario, lib: Library, card: str) -> float:
    """A server's draw per card (kW): the card's power (capped or not) x the DGX ratio."""
    return card_power_w(scn, lib.card(card).power.tdp_w, card) / 1000 * SERVER_POWER_PER_TDP


def purchase_price_usd(scn: Scenario, lib: Library, card: str, given: float | None) -> float:
    """A purchase's price per card: its own `price_usd`, else `cards.<card>.price_usd`, else
    the library's GPU price midpoint."""
    if given is not None:
        return given
    v = card_value(scn, card, "price_usd", None)
    if v is not None:
        return float(v)
    gpu = [p for p in lib.card(card).prices if p.basis == "gpu"]
    if gpu:
        return (gpu[0].low_usd + gpu[0].high_usd) / 2
    raise ConfigError(f"no price for card '{card}': give `price_usd` in the purchase or "
                      f"`cards.{card}.price_usd` in the scenario")


def card_price_usd(scn: Scenario, lib: Library, card: str) -> float:
    """The scenario's price for a card: an explicit purchase price in any option, else the
    card override, else the library's GPU price midpoint."""
    for o in scn.options.values():
        for b in o.buy:
            if b.card == card and b.price_usd is not None:
                return b.price_usd
    return purchase_price_usd(scn, lib, card, None)


def software_rate(scn: Scenario, lib: Library, card: str) -> float:
    """The improvement per year a card's stack projects past its last release: the
    scenario's `software_rate_per_year.<stack>`, else the library fit floored at 0."""
    stack = stack_of(card, lib)
    if stack is not None and stack in scn.software_rate_per_year:
        return scn.software_rate_per_year[stack]
    return default_rate(stack, lib)


def adoption_hour(scn: Scenario, lib: Library, oname: str) -> float:
    """When an option takes up its software (porting paid, ongoing engineers start): the first
    order of a card whose stack is not CUDA, else its first order of any card. The cards of
    that stack run the release in force at that date (the engine plan): the port's cost and the
    stack's maturity are both dated here, neither counted twice."""
    o = scn.options[oname]
    dated = [(hours_from(scn.start, x.at), stack_of(x.card, lib))
             for x in (*o.buy, *o.lease, *o.reserve) if x.count]
    other = [h for h, st in dated if st not in (None, "cuda")]
    return max(min(other or [h for h, _ in dated] or [0.0]), 0.0)


def finance_assumptions(scn: Scenario) -> FinanceAssumptions:
    """The cost layer's assumptions from the scenario's finance section and site."""
    site = scn.site.resolved()
    return FinanceAssumptions(
        discount_rate=scn.finance.discount_rate, depreciation_years=scn.finance.depreciation_years,
        electricity_usd_per_kwh=site["electricity_usd_per_kwh"], pue=site["pue"],
        colo_usd_per_kw_month=site["colo_usd_per_kw_month"],
        server_multiplier=scn.finance.server_multiplier, network_share=scn.finance.network_share,
        maintenance_fraction_per_year=scn.finance.maintenance_fraction_per_year,
        unserved_penalty_usd_per_card_hour=scn.finance.unserved_penalty_usd_per_card_hour,
        tax_rate=scn.finance.tax_rate, price_decline_per_year=scn.finance.price_decline_per_year,
        **({"residual_curve": ResidualCurve(r.age_years, r.fraction, r.source)}
           if (r := scn.finance.residual) else {}))


def serving_cards(scn: Scenario, oname: str) -> tuple[str, ...]:
    """The cards that may serve inference in an option: its `serve_on` (else every card it
    holds), plus, under the elastic policy, the training cards it holds."""
    o = scn.options[oname]
    held = {b.card for b in (*o.buy, *o.lease, *o.reserve)}
    cards = set(o.serve_on) or set(held)
    if o.policy == "elastic":
        cards |= {t.card for t in scn.training.values()} & held
    return tuple(sorted(cards))


def resolve_path(base: Path, lib: Library, rel: str, allow_outside: bool = False) -> Path:
    """A path named in a scenario (a trace): relative to the scenario's folder, then to each
    library folder. The file it reaches (symbolic links followed) must lie inside the scenario's
    folder or a library folder; absolute paths and `..` that escape them are refused unless
    `allow_outside` (`fleetsim run --allow-outside-paths`)."""
    p = Path(rel)
    roots = [Path(r).resolve() for r in (base, *lib.roots)]
    hint = "; pass --allow-outside-paths (allow_outside_paths=True) to allow it"
    if p.is_absolute() and not allow_outside:
        raise ConfigError(f"'{rel}' is an absolute path: give it relative to the scenario's "
                          f"folder{hint}")
    outside = None
    for root in ([Path("/")] if p.is_absolute() else roots):
        cand = (root / p).resolve()
        if not cand.is_file():
            continue
        if allow_outside or any(cand.is_relative_to(r) for r in roots):
            return cand
        outside = outside or cand
    if outside is not None:
        raise ConfigError(f"'{rel}' leads outside the scenario's folder and the library "
                          f"folders (to {outside}){hint}")
    raise ConfigError(f"'{rel}': not found next to the scenario or in the library folders")
