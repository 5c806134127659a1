"""The typed library record of a serving engine's overheads outside the GPU step
(`hardware_specs/serving_overheads/<engine>.yaml`); the simulator's view of it, and what each
field means, is in `sim.serving.overheads`."""

from __future__ import annotations

from pydantic import Field

from sim.config.base import CalValue, WithSources

FOLDER = "hardware_specs/serving_overheads"


class OverheadsRecord(WithSources):
    """One engine's serving overheads, each a calibrated value with tier and source."""

    engine: str
    api_request_s: CalValue
    api_tokenize_s_per_input_token: CalValue
    scheduler_s_per_running_request: CalValue
    detokenize_s_per_output_token: CalValue
    sampling_s_per_sequence: CalValue
    cuda_graph_max_tokens: CalValue
    cuda_graph_layer_fixed_scale: CalValue
    moe_grouped_gemm_efficiency: CalValue | None = None
    """Routed experts through the engine's fused/grouped MoE kernel at this fraction of the
    card's dense GEMM efficiency (with the permutation traffic); absent: experts as dense GEMMs."""
    front_end: str = "event_loop"
    """How the API-server costs are spent: `event_loop` (each replica's front-end as its own
    process) or `fifo` (one FIFO server; detokenisation in the engine step); see
    `sim.serving.overheads`."""
    fit: dict | None = Field(default=None)
    """How the fitted values came out (rows, residuals): written by the fit, informative."""
    notes: list[str] = Field(default_factory=list)
