"""What a run returns: a frozen `Result` whose options are typed `OptionSummary` records.

The report (`sim.report`) and the experiments (`sim.experiments`) read these records; nothing
re-derives a rule from text. `Result.summary` (and `summary.json`) is written from them, with
the keys and values it had when it was a dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from sim.config.scenario import Scenario


@dataclass(frozen=True)
class CampaignRecord:
    """One run of a training campaign in one option's timeline. `campaign` is
    `<training>#<run>`; `planned_start_hour` the earliest start the scenario asks for;
    `cards`, `start_hour`, `end_hour` and `met_deadline` are None when it never started."""

    campaign: str
    training: str
    run: int
    card: str
    planned_start_hour: float
    cards: int | None
    start_hour: int | None
    end_hour: int | None
    completed: bool
    met_deadline: bool | None
    reason: str

    @property
    def started(self) -> bool:
        return self.start_hour is not None

    def as_json(self) -> dict:
        """The fleet timeline's dict of this run (its keys in `summary.json`)."""
        if not self.started:
            return {"campaign": self.campaign, "start_hour": None, "end_hour": None,
                    "completed": False, "reason": self.reason}
        return {"campaign": self.campaign, "cards": self.cards, "start_hour": self.start_hour,
                "end_hour": self.end_hour, "completed": self.completed,
                "met_deadline": self.met_deadline, "reason": self.reason}


@dataclass(frozen=True)
class OptionSummary:
    """One option's answer: money, service, the cards that serve and the rule it is judged by."""

    name: str
    npv_usd: float
    total_cost_usd: float
    after_tax_npv_usd: float
    usd_per_m_tokens: float | None
    usd_per_m_input_tokens: float | None
    usd_per_m_output_tokens: float | None
    joules_per_token: float | None
    slo_attainment: float
    """Share of the demand served within the SLOs by owned or rented cards."""
    utilization: float
    usd_per_card_hour: float
    software_gain: float | None
    campaigns: tuple[CampaignRecord, ...]
    serving_cards: tuple[str, ...]
    """The cards that may serve inference: `serve_on` (else every card held), plus, under the
    elastic policy, the training cards it holds."""
    slo_tolerance: float
    """The share of demand it must serve to qualify for the winner (the decide stage's rule)."""

    @property
    def meets_slo(self) -> bool:
        return self.slo_attainment >= self.slo_tolerance

    def as_json(self) -> dict:
        """Its entry under `options` in `summary.json`."""
        return {"npv_usd": self.npv_usd, "total_cost_usd": self.total_cost_usd,
                "after_tax_npv_usd": self.after_tax_npv_usd,
                "usd_per_m_tokens": self.usd_per_m_tokens,
                "usd_per_m_input_tokens": self.usd_per_m_input_tokens,
                "usd_per_m_output_tokens": self.usd_per_m_output_tokens,
                "joules_per_token": self.joules_per_token,
                "slo_attainment": self.slo_attainment, "utilization": self.utilization,
                "usd_per_card_hour": self.usd_per_card_hour,
                "campaigns": [c.as_json() for c in self.campaigns],
                "software_gain": self.software_gain}


@dataclass(frozen=True)
class TrainingSummary:
    """A scenario training campaign on its fastest layout (sim.perf.training)."""

    card: str
    cards: int
    model: str
    tokens: float
    layout: str
    mfu: float
    tokens_per_s_per_card: float
    goodput: float
    ideal_days: float
    time_to_train_days: float
    calibration: str

    def as_json(self) -> dict:
        return {"card": self.card, "cards": self.cards, "model": self.model,
                "tokens": self.tokens, "layout": self.layout, "mfu": self.mfu,
                "tokens_per_s_per_card": self.tokens_per_s_per_card, "goodput": self.goodput,
                "ideal_days": self.ideal_days, "time_to_train_days": self.time_to_train_days,
                "calibration": self.calibration}


@dataclass(frozen=True)
class Decision:
    """The winner under the SLO rule: the cheapest NPV among options serving at least
    `slo_tolerance` of demand within the SLOs (owned or rented), or None."""

    winner: str | None
    slo_tolerance: float

    @property
    def rule(self) -> str:
        return (f"cheapest NPV among options serving >= {self.slo_tolerance:.0%} of demand "
                "within the SLOs (owned or rented)")


@dataclass(frozen=True)
class Result:
    """A scenario's run: the typed answer (`options`, `decision`, `training`) and its frames."""

    scenario: Scenario
    options: dict[str, OptionSummary]
    decision: Decision
    training: dict[str, TrainingSummary]
    per_year: pd.DataFrame
    per_hour: pd.DataFrame
    capacity: pd.DataFrame
    notes: tuple[str, ...] = ()
    analyses: dict = field(default_factory=dict)
    """Experiments run on this scenario (`sim.experiments.suite.run_analyses`, added with
    `with_analyses`): Monte Carlo, tornado, flip points, sweep; written to results/."""
    software: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per (option, workload, card): the engine releases it runs and from when, the projection
    past the last one (rate, roofline ceiling) and its capacity at the start and the end."""
    trajectory: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per (workload, card) under the scenario's engine plan, monthly: capacity per card, its
    5-95% band from the stack's rate, and the roofline ceiling (requests/s per card)."""
    software_history: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The stacks' dated releases as each card's capacity (history points, with sources)."""

    @property
    def winner(self) -> str | None:
        return self.decision.winner

    @property
    def summary(self) -> dict:
        """The answer as plain JSON values (`summary.json` less the report's verdict)."""
        return {"options": {k: v.as_json() for k, v in self.options.items()},
                "winner": self.decision.winner, "winner_rule": self.decision.rule,
                "slo_tolerance": self.decision.slo_tolerance, "scenario": self.scenario.name,
                "training": {k: v.as_json() for k, v in self.training.items()}}

    def with_analyses(self, analyses: dict) -> "Result":
        return replace(self, analyses=dict(analyses))

    @property
    def plot(self):
        """Figures of this result: `res.plot.cost_per_year()`, `.capacity_vs_demand()`, ...
        (`sim.report.plots.ResultPlots`; matplotlib Figures, shown inline in Jupyter)."""
        from sim.report.plots import ResultPlots
        return ResultPlots(self)

    def _repr_html_(self) -> str:
        from sim.report.repr import result_html
        return result_html(self)

    def to_dir(self, out: Path, force: bool = False) -> Path:
        """Write results atomically (`sim.report.files.write_result`)."""
        from sim.report.files import write_result
        return write_result(self, Path(out), force)
