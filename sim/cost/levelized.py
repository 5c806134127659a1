"""Levelized cost: $ per million tokens, $ per card-hour, cost split by card-hours.

All are ratios of present values under the package's one timing convention (hourly quantities
dated at the start of their hour, DF(t) = (1 + r)^(-t)):

    effective $/card-hour = PV(net cost) / PV(used card-hours)
    serving cost          = PV(net cost) x PV(serving card-h) / PV(serving + training card-h)
    input-token cost      = serving cost x PV(prefill GPU-hours) / PV(prefill + decode GPU-hours)
    output-token cost     = serving cost - input-token cost
    $/M input tokens      = input-token cost / PV(tokens in) x 1e6     (output likewise)
    $/M tokens (blended)  = serving cost / PV(tokens in + tokens out) x 1e6

Rule stated for reports: on an elastic fleet, cost (idle time, rental and penalties included) is
shared between training and serving by the card-hours each uses, and serving cost between input
and output tokens by the GPU time prefill and decode take (modeling-notes "Fleet and cost").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from sim.cost.flows import CashFlowsLike, npv, pv_hourly


@dataclass(frozen=True, eq=False)
class HourlyUsage:
    """What the fleet did in each hour of the horizon (arrays of equal length H, all >= 0)."""

    tokens_in: np.ndarray
    tokens_out: np.ndarray
    prefill_gpu_hours: np.ndarray
    decode_gpu_hours: np.ndarray
    serving_card_hours: np.ndarray
    training_card_hours: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for f in fields(self):
            a = np.asarray(getattr(self, f.name), dtype=float)
            if a.ndim != 1 or (n is not None and len(a) != n):
                raise ValueError(f"HourlyUsage.{f.name} must be a 1-D array of the same length as "
                                 f"tokens_in ({n}), got shape {a.shape}")
            n = len(a)
            if not np.all(np.isfinite(a)) or np.any(a < 0):
                raise ValueError(f"HourlyUsage.{f.name} must be finite and >= 0")
            object.__setattr__(self, f.name, a)


@dataclass(frozen=True)
class LevelizedCost:
    """Present values (USD, tokens at t = 0) and the levelized prices derived from them."""

    pv_cost_usd: float
    serving_pv_usd: float
    training_pv_usd: float
    input_pv_usd: float
    output_pv_usd: float
    pv_tokens_in: float
    pv_tokens_out: float
    usd_per_m_tokens: float  # blended, serving cost / all tokens
    usd_per_m_input_tokens: float
    usd_per_m_output_tokens: float


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def cost_split_by_card_hours(cash_flows: CashFlowsLike, card_hours: Mapping[str, np.ndarray],
                             rate: float) -> dict[str, float]:
    """PV of net cost shared among uses (serving, each training campaign...) by PV of card-hours.

    The PV cost of one training campaign ($ per training run) is its entry.
    """
    pv = {k: pv_hourly(v, rate) for k, v in card_hours.items()}
    total = sum(pv.values())
    if total <= 0:
        raise ValueError("card_hours has no positive card-hours to share the cost by")
    cost = npv(cash_flows, rate)
    return {k: cost * v / total for k, v in pv.items()}


def levelized_usd_per_m_tokens(cash_flows: CashFlowsLike, usage: HourlyUsage,
                               rate: float) -> LevelizedCost:
    """Levelized $ per million tokens, blended and split into input and output (module docstring).

    With no card-hours recorded at all, the whole cost is taken as serving; a price whose token
    count (or prefill + decode time) is zero is NaN.
    """
    cost_usd = npv(cash_flows, rate)
    pv_serving = pv_hourly(usage.serving_card_hours, rate)
    pv_training = pv_hourly(usage.training_card_hours, rate)
    pv_used = pv_serving + pv_training
    serving_share = 1.0 if pv_used == 0 else pv_serving / pv_used
    serving_usd = cost_usd * serving_share
    pv_prefill = pv_hourly(usage.prefill_gpu_hours, rate)
    pv_decode = pv_hourly(usage.decode_gpu_hours, rate)
    input_share = _ratio(pv_prefill, pv_prefill + pv_decode)
    input_usd = serving_usd * input_share
    output_usd = serving_usd - input_usd
    pv_in = pv_hourly(usage.tokens_in, rate)
    pv_out = pv_hourly(usage.tokens_out, rate)
    return LevelizedCost(
        pv_cost_usd=cost_usd,
        serving_pv_usd=serving_usd,
        training_pv_usd=cost_usd - serving_usd,
        input_pv_usd=input_usd,
        output_pv_usd=output_usd,
        pv_tokens_in=pv_in,
        pv_tokens_out=pv_out,
        usd_per_m_tokens=_ratio(serving_usd, pv_in + pv_out) * 1e6,
        usd_per_m_input_tokens=_ratio(input_usd, pv_in) * 1e6,
        usd_per_m_output_tokens=_ratio(output_usd, pv_out) * 1e6,
    )


def effective_usd_per_card_hour(cash_flows: CashFlowsLike, used_card_hours: np.ndarray,
                                rate: float) -> float:
    """PV(net cost) / PV(used card-hours): the rent that would cost the buyer the same (USD/h)."""
    pv_hours = pv_hourly(used_card_hours, rate)
    if pv_hours <= 0:
        raise ValueError("used_card_hours has no positive card-hours")
    return npv(cash_flows, rate) / pv_hours
