"""Per-card bandwidth of a training collective: the scale-up domain, else the NIC."""

from __future__ import annotations

import math

from sim.perf.hardware import Hardware

NIC_EFFICIENCY = 0.8
"""Achieved share of the NIC's line rate in ring collectives over the scale-out network
(assumed; NCCL over InfiniBand/RoCE reaches 80-90%)."""


def _scale_out_bps(hw: Hardware) -> float:
    so = hw.card.scale_out
    return max(so.nic_gbit_per_s, 1e-9) * 1e9 / 8.0 * NIC_EFFICIENCY


def _group_bps(hw: Hardware, group: int, span_cards: int) -> float:
    """Per-card bandwidth of a collective over `group` ranks whose members lie `span_cards`
    apart in card order: inside the scale-up domain when they fit in it, else the NIC."""
    if group <= 1:
        return math.inf
    if group * span_cards <= hw.card.scale_up.domain_size:
        return hw.link_bandwidth_bps(min(group, hw.card.scale_up.domain_size)) * \
            hw.factors["allreduce_busbw"].value
    return _scale_out_bps(hw)
