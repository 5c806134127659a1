"""One run of a scenario as named stages, each a small function with typed input and output:

    resolve    scenario -> `Resolved` (library view with overrides, finance, plans, needs)
    capacity   `Resolved` -> `Capacity` (max rate per card at the SLOs, per engine release)
    training   `Resolved` -> `Training` (campaign speeds and runs)
    fleet      one option -> `OptionFleet` (hourly timeline)
    cost       `OptionFleet` -> `OptionResult` (`OptionSummary` record, per-year frame)
    decide     `OptionSummary`s -> `Decision` (the winner under the SLO rule)

`run` chains them into a frozen `Result` (`records`); `inputs` holds the scenario values the
stages read (prices, power, finance, software rate, adoption). Writing files and rendering
live in `sim.report`; the experiments call `run` and read its records.
"""

from sim.stages.capacity import RunCache, precision_for
from sim.stages.decide import SLO_TOLERANCE, decide
from sim.stages.inputs import (SERVER_POWER_PER_TDP, adoption_hour, card_price_usd,
                               finance_assumptions, power_cap_factor, resolve_path,
                               software_rate)
from sim.stages.records import (CampaignRecord, Decision, OptionSummary, Result,
                                TrainingSummary)
from sim.stages.run import run

__all__ = ["SERVER_POWER_PER_TDP", "SLO_TOLERANCE", "CampaignRecord", "Decision",
           "OptionSummary", "Result", "RunCache", "TrainingSummary", "adoption_hour",
           "card_price_usd", "decide", "finance_assumptions", "power_cap_factor",
           "precision_for", "resolve_path", "run", "software_rate"]
