"""Stage 3a, training: each scenario campaign's speed on its fastest layout (sim.perf.training)
and its runs over the horizon, as the fleet timeline's `Campaign`s."""

from __future__ import annotations

from dataclasses import dataclass

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.paths import spec_overrides
from sim.fleet.timeline import HOURS_PER_YEAR, Campaign
from sim.stages.capacity import RunCache
from sim.stages.inputs import hours_from, power_cap_factor
from sim.stages.records import CampaignRecord, TrainingSummary
from sim.stages.resolve import Resolved

CAMPAIGN_SEQ_TOKENS = 8192
CAMPAIGN_BATCH_TOKENS = 16 * 2**20
"""A scenario's campaign trains Llama-3-style: 8K sequences, 16M-token batches (reference-data
B4: the Llama 3 405B run), BF16, on the fastest layout that fits its cards."""
DEFAULT_CARDS = 64
"""Cards of a campaign that names neither cards nor a deadline (for its training plan)."""


@dataclass(frozen=True)
class Training:
    """The training stage's output."""

    campaigns: tuple[Campaign, ...]
    """Every run of every campaign over the horizon (`<training>#<run>`)."""
    runs: dict[str, tuple[str, int, float]]
    """Per run name: (training name, run number, earliest start hour)."""
    summaries: dict[str, TrainingSummary]


def training_plan(lib: Library, card: str, model_id: str, n_cards: int,
                  failures_per_card_year: float, cache: RunCache,
                  overrides: dict | None = None) -> dict:
    """Tokens/s per card of a campaign's fastest layout, its layout and MFU, and its goodput
    under interruptions (sim.perf.training)."""
    from sim.perf.training import TrainingLayoutError, TrainJob, plan_training

    def compute() -> dict:
        target = CAMPAIGN_BATCH_TOKENS // CAMPAIGN_SEQ_TOKENS
        # the target batch, else the nearest multiple of the cards above it (a card count
        # whose data-parallel degrees do not divide the target, e.g. 12)
        for gbs in dict.fromkeys((target, -(-target // n_cards) * n_cards)):
            job = TrainJob(lib.model(model_id), CAMPAIGN_SEQ_TOKENS, gbs)
            try:
                p = plan_training(job, card, n_cards, lib, tokens=1.0,
                                  failures_per_card_year=failures_per_card_year)
                break
            except TrainingLayoutError as exc:
                err = exc
        else:
            raise ConfigError(str(err)) from None
        return {"tokens_per_s_per_card": p.step.tokens_per_s_per_card,
                "goodput": p.interruptions.goodput, "layout": p.step.layout.label(),
                "mfu": p.step.mfu, "calibration": p.calibration}
    return dict(cache.get(["training", card, model_id, n_cards, failures_per_card_year,
                           [str(r) for r in lib.roots], overrides or {}], compute))


def _summary(t, plan: dict) -> TrainingSummary:
    n, tok_s = t.cards or DEFAULT_CARDS, plan["tokens_per_s_per_card"]
    ideal = t.tokens / (tok_s * n) / 86400.0
    return TrainingSummary(t.card, n, t.model, t.tokens, plan["layout"], plan["mfu"], tok_s,
                           plan["goodput"], ideal, ideal / plan["goodput"], plan["calibration"])


def training(rv: Resolved, cache: RunCache) -> Training:
    scn, lib = rv.scenario, rv.library
    horizon_h = scn.horizon_years * HOURS_PER_YEAR
    camps, runs, summaries = [], {}, {}
    for tname, t in scn.training.items():
        try:
            plan = training_plan(lib, t.card, t.model, t.cards or DEFAULT_CARDS,
                                 scn.reliability.failures_per_card_year, cache,
                                 spec_overrides(scn))
        except ConfigError as exc:
            raise ConfigError(f"{rv.where}: training.{tname}: {exc}") from None
        summaries[tname] = _summary(t, plan)
        card_hours = t.tokens / (plan["tokens_per_s_per_card"] * scn.efficiency.get(t.card, 1.0)
                                 * power_cap_factor(scn, lib, t.card, 1.0)) / 3600.0
        start = hours_from(scn.start, t.start)
        step = (t.every_months or 0) * HOURS_PER_YEAR / 12
        k = 0
        while start + k * step < horizon_h and (k == 0 or step > 0):
            s0 = start + k * step
            name = f"{tname}#{k + 1}"
            camps.append(Campaign(name, t.card, t.cards, card_hours, s0, t.priority,
                                  ettr=plan["goodput"],
                                  deadline_hour=None if t.deadline_days is None
                                  else s0 + t.deadline_days * 24))
            runs[name] = (tname, k + 1, s0)
            k += 1
    return Training(tuple(camps), runs, summaries)


def campaign_records(tr: Training, results: list[dict]) -> tuple[CampaignRecord, ...]:
    """The fleet timeline's campaign results as records: each names its training, run number,
    card and planned start."""
    card = {c.name: c.card for c in tr.campaigns}
    out = []
    for r in results:
        tname, k, planned = tr.runs[r["campaign"]]
        out.append(CampaignRecord(
            r["campaign"], tname, k, card[r["campaign"]], planned, r.get("cards"),
            r["start_hour"], r["end_hour"], r["completed"], r.get("met_deadline"), r["reason"]))
    return tuple(out)
