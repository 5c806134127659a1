"""What a request meets outside the GPU step: the API server and the engine's CPU work per step.

A library record (`hardware_specs/serving_overheads/<id>.yaml`, typed by `OverheadsRecord`;
every value carries `source:` and a tier) gives, for one serving engine:

- `api_request_s`: per-request cost in the API server's event loop (HTTP parse, chat
  template, request setup);
- `api_tokenize_s_per_input_token`: tokenisation, per prompt token (the tokenizer thread);
- `detokenize_s_per_output_token`: detokenisation and streaming, per emitted token (the event
  loop's output handler);
- `front_end`: `event_loop` (default): the three above are spent by each replica's API server
  as its own process (`sim.serving.api_server`: the event loop shared between request
  handlers and the output handler, the tokenizer thread FIFO; tokens reach the client when
  the output handler has processed their step); `fifo` (the earlier model): requests pass one
  FIFO server (entry = max(send, server free) + request + tokens x per-token) and
  detokenisation lengthens the engine step;
- `scheduler_s_per_running_request`: the scheduler's CPU time per step per running request;
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
    front_end: str = "event_loop"

    def __post_init__(self) -> None:
        if self.front_end not in FRONT_ENDS:
            raise ValueError(f"overheads.front_end must be one of {', '.join(FRONT_ENDS)} "
                             f"(got {self.front_end!r})")
        for k, v in self.__dict__.items():
            if k != "front_end" and v is not None and v < 0:
                raise ValueError(f"overheads.{k} must be >= 0 (got {v})")

    @property
    def front_end_process(self) -> bool:
        """Whether the API server runs as its own process (`front_end: event_loop` with any
        front-end cost); else the engine step carries detokenisation (`fifo`)."""
        return self.front_end == "event_loop" and bool(
            self.api_request_s or self.api_tokenize_s_per_input_token
            or self.detokenize_s_per_output_token)

    @classmethod
    def of(cls, rec: OverheadsRecord) -> "Overheads":
        kw = {k: getattr(rec, k).value for k in FIELDS
              if k != "front_end" and getattr(rec, k) is not None}
        kw["cuda_graph_max_tokens"] = int(kw["cuda_graph_max_tokens"])
        return cls(front_end=rec.front_end, **kw)

    def api_entry_s(self, send_s: float, server_free_s: float, prompt_tokens: int) -> float:
        """When a request sent at `send_s` reaches the engine's queue (FIFO API server)."""
        return (max(send_s, server_free_s) + self.api_request_s
                + self.api_tokenize_s_per_input_token * prompt_tokens)

    def step_cpu_s(self, running: int, emitted: int, sequences: int) -> float:
        """CPU time of one step beyond the card's fixed and per-sequence overheads (with the
        front-end as its own process, detokenisation is not in the step)."""
        detok = 0.0 if self.front_end_process else self.detokenize_s_per_output_token
        return (self.scheduler_s_per_running_request * running
                + detok * emitted
                + self.sampling_s_per_sequence * sequences)

    def graph_max_tokens(self, max_num_seqs: int, max_num_batched_tokens: int) -> int:
        """vLLM's largest captured size: min(2 x max_num_seqs, cap, max_num_batched_tokens)."""
        return min(2 * max_num_seqs, self.cuda_graph_max_tokens, max_num_batched_tokens)


FIELDS = tuple(k for k in Overheads.__dataclass_fields__)
FRONT_ENDS = ("event_loop", "fifo")


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
