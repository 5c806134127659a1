"""Interruptions of a training job: failures, checkpoints and restarts, and the goodput left."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sim.config.model import ModelSpec
from sim.perf.params import total_params

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class Interruptions:
    failures_per_day: float
    checkpoint_interval_s: float
    checkpoint_write_s: float
    restart_s: float
    goodput: float
    """Share of wall time that advances training (1 - checkpoint time - lost work - restarts)."""

    def lost_fraction(self) -> float:
        return 1.0 - self.goodput


RESTART_S = 11 * 60.0
"""Automated restart from a checkpoint: median retry 11 minutes (reference-data D2, the B200
cluster report)."""
CHECKPOINT_BYTES_PER_PARAM = 14.0
"""bf16 weights + fp32 master weights and Adam moments (2 + 12 bytes per parameter)."""
CHECKPOINT_WRITE_BPS_PER_CARD = 1e9
"""Checkpoint write bandwidth per card to shared storage (assumed 1 GB/s; synchronous)."""


def lost_fraction(interval_s: float, mtbf_s: float, write_s: float, restart_s: float) -> float:
    """First-order share of wall time lost: writing checkpoints (write / interval), the work
    since the last checkpoint at each failure (interval / 2 on average) and the restart."""
    return write_s / interval_s + (interval_s / 2.0 + restart_s) / mtbf_s


def young_daly_interval(mtbf_s: float, write_s: float) -> float:
    """sqrt(2 x write x MTBF): the checkpoint interval that minimises `lost_fraction`."""
    return math.sqrt(2.0 * write_s * mtbf_s)


def interruptions(model: ModelSpec, cards: int, failures_per_card_year: float,
                  interval_s: float | None = None, restart_s: float = RESTART_S) -> Interruptions:
    """Expected interruptions of a job on `cards` cards (failures in proportion to cards, the
    reliability section's rate), checkpointing at `interval_s` (default Young/Daly)."""
    rate_s = failures_per_card_year * cards / (365.0 * SECONDS_PER_DAY)
    write = total_params(model.architecture) * CHECKPOINT_BYTES_PER_PARAM / (
        cards * CHECKPOINT_WRITE_BPS_PER_CARD) + 10.0
    if rate_s <= 0:
        return Interruptions(0.0, math.inf, write, restart_s, 1.0)
    mtbf = 1.0 / rate_s
    tau = interval_s or young_daly_interval(mtbf, write)
    lost = min(lost_fraction(tau, mtbf, write, restart_s), 0.99)
    return Interruptions(rate_s * SECONDS_PER_DAY, tau, write, restart_s, 1.0 - lost)
