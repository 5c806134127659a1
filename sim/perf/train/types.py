"""Training records: the job, the layout, memory per card and one step; the layout error."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sim.config.model import ModelSpec

Recompute = Literal["none", "selective", "full", "block"]
Task = Literal["pretrain", "finetune", "lora"]


class TrainingLayoutError(ValueError):
    """A layout that cannot run (does not divide, does not fit): one line naming it."""


@dataclass(frozen=True)
class TrainLayout:
    tp: int = 1
    pp: int = 1
    dp: int = 1
    cp: int = 1
    ep: int = 1
    micro_batch: int = 1
    vp: int = 1
    recompute: Recompute = "none"
    zero: int = 1
    recompute_layers: int = 0
    """With recompute "block": the layers of each pipeline stage recomputed whole (Megatron's
    `recompute_method=block`, `recompute_num_layers`: the first N layers of a stage keep only
    their input, the others all their activations). Megatron applies the count to each
    TransformerBlock, i.e. to each virtual stage when interleaved
    (megatron/core/transformer/transformer_block.py loops over `num_layers_per_pipeline_rank` of
    the block), so a stage's count is a multiple of vp."""

    @property
    def cards(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    def label(self) -> str:
        extra = [f"CP{self.cp}"] * (self.cp > 1) + [f"EP{self.ep}"] * (self.ep > 1) + [
            f"VP{self.vp}"] * (self.vp > 1)
        rc = (f"block {self.recompute_layers}" if self.recompute == "block"
              else self.recompute)
        return " ".join([f"TP{self.tp} PP{self.pp} DP{self.dp}", *extra,
                         f"mb{self.micro_batch}", f"recompute {rc}",
                         f"ZeRO-{self.zero}"])


@dataclass(frozen=True)
class TrainJob:
    model: ModelSpec
    seq_tokens: int
    global_batch: int
    """Sequences per optimizer step."""
    precision: Literal["bf16", "fp8"] = "bf16"
    task: Task = "pretrain"


@dataclass(frozen=True)
class TrainMemory:
    params_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    logits_gb: float
    usable_gb: float

    @property
    def total_gb(self) -> float:
        return (self.params_gb + self.grads_gb + self.optimizer_gb + self.activations_gb
                + self.logits_gb)

    @property
    def fits(self) -> bool:
        return self.total_gb <= self.usable_gb


@dataclass(frozen=True)
class TrainStep:
    layout: TrainLayout
    step_s: float
    parts: dict[str, float] = field(hash=False)
    tokens_per_s_per_card: float = 0.0
    mfu: float = 0.0
    memory: TrainMemory | None = None
