"""What a request meets outside the GPU step: the API server and the engine's CPU work per step.

A library record (`hardware_specs/serving_overheads/<id>.yaml`, typed by `OverheadsRecord`;
every value carries `source:` and a tier) gives, for one serving engine:

- `api_request_s`: per-request cost in the API server (HTTP parse, arrival, request setup);
- `api_tokenize_s_per_input_token`: tokenisation, per prompt token.
  Both are spent by one API-server process, FIFO: a burst of requests reaches the engine's
  queue one after the other (entry = max(send, server free) + request + tokens x per-token).
- `scheduler_s_per_running_request`: the scheduler's CPU time per step per running request;
- `detokenize_s_per_output_token`: detokenisation and streaming, per token emitted in a step;
- `sampling_s_per_sequence`: sampling per sequence in the step, added to the card's own
  `engine_seq_overhead_us` (engine fits);
- CUDA graphs: steps of at most `cuda_graph_max_tokens` tokens replay a captured graph, so
  their fixed per-layer kernel time (the card's `layer_fixed_us`, from eager PyTorch layer
  microbenchmarks) is scaled by `cuda_graph_layer_fixed_scale`; larger steps run eager.
- `moe_grouped_gemm_efficiency` (optional): routed experts run through the engine's fused MoE
  kernel (token permutation, grouped GEMMs at this fraction of the dense GEMM efficiency at the
  same rows per expert, top-k combine), `StepModel(fused_moe_efficiency=...)`; absent: the
  experts are modelled as dense GEMMs, as before.

All step terms are affine in the batch of a decode span, so the fast mode stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim.config.serving_overheads import FOLDER, OverheadsRecord

__all__ = ["FOLDER", "Overheads", "OverheadsRecord", "load", "load_record"]


@dataclass(frozen=True)
class Overheads:
    """The overheads in SI, as the simulator uses them (all zero = the GPU step alone)."""

    api_request_s: float = 0.0
    api_tokenize_s_per_input_token: float = 0.0
    scheduler_s_per_running_request: float = 0.0
    detokenize_s_per_output_token: float = 0.0
    sampling_s_per_sequence: float = 0.0
    cuda_graph_max_tokens: int = 0
    cuda_graph_layer_fixed_scale: float = 1.0
    moe_grouped_gemm_efficiency: float | None = None

    def __post_init__(self) -> None:
        for k, v in self.__dict__.items():
            if v is not None and v < 0:
                raise ValueError(f"overheads.{k} must be >= 0 (got {v})")

    @classmethod
    def of(cls, rec: OverheadsRecord) -> "Overheads":
        kw = {k: getattr(rec, k).value for k in FIELDS if getattr(rec, k) is not None}
        kw["cuda_graph_max_tokens"] = int(kw["cuda_graph_max_tokens"])
        return cls(**kw)

    def api_entry_s(self, send_s: float, server_free_s: float, prompt_tokens: int) -> float:
        """When a request sent at `send_s` reaches the engine's queue (FIFO API server)."""
        return (max(send_s, server_free_s) + self.api_request_s
                + self.api_tokenize_s_per_input_token * prompt_tokens)

    def step_cpu_s(self, running: int, emitted: int, sequences: int) -> float:
        """CPU time of one step beyond the card's fixed and per-sequence overheads."""
        return (self.scheduler_s_per_running_request * running
                + self.detokenize_s_per_output_token * emitted
                + self.sampling_s_per_sequence * sequences)

    def graph_max_tokens(self, max_num_seqs: int, max_num_batched_tokens: int) -> int:
        """vLLM's largest captured size: min(2 x max_num_seqs, cap, max_num_batched_tokens)."""
        return min(2 * max_num_seqs, self.cuda_graph_max_tokens, max_num_batched_tokens)


FIELDS = tuple(k for k in Overheads.__dataclass_fields__)


def record_path(ident: str, roots=None) -> Path:
    """The record's file in the first library root that has it."""
    return _library(roots).path("serving_overheads", ident)


def _library(roots=None):
    from sim.config.library import Library

    return Library(tuple(roots)) if roots else Library.default()


def load_record(ident: str = "vllm-v1", roots=None) -> OverheadsRecord:
    """The record `ident`, loaded and cached through the Library (kind `serving_overheads`)."""
    return _library(roots).serving_overheads(ident)


def load(ident: str = "vllm-v1", roots=None) -> Overheads:
    return Overheads.of(load_record(ident, roots))
