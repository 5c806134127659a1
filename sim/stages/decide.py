"""Stage 5, decide: the winner under the SLO rule. An option meets its SLOs when at least
`SLO_TOLERANCE` of the demand is served by owned or rented cards within their SLO capacity;
the winner is the cheapest option by NPV among those that do (unserved demand priced as
configured), or none."""

from __future__ import annotations

from sim.stages.records import Decision, OptionSummary

SLO_TOLERANCE = 0.99


def decide(options: dict[str, OptionSummary], slo_tolerance: float = SLO_TOLERANCE) -> Decision:
    meets = {k: v for k, v in options.items() if v.slo_attainment >= slo_tolerance}
    winner = min(meets, key=lambda k: meets[k].npv_usd) if meets else None
    return Decision(winner, slo_tolerance)
