"""Training benchmarks as library records (`workloads/training/<id>.yaml`): what a predictor
needs to turn a step time into a time to train, from the benchmark's own rules and reference
convergence points (MLPerf Training's RCPs: samples to the quality target by global batch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.config.base import FleetsimModel, PositiveFloat, PositiveInt, WithSources


class ConvergencePoint(FleetsimModel):
    global_batch: PositiveInt
    samples: PositiveFloat
    """Olympic mean of the reference runs' samples to the quality target."""


class Evaluation(FleetsimModel):
    source: str
    first_at_samples: PositiveFloat
    every_samples: PositiveFloat
    eval_samples: PositiveInt


class TrainingBenchmark(WithSources):
    source: str
    """The rules' source (model, sequence length, task); `convergence_source` the RCPs'."""
    convergence_source: str
    name: str
    model: str
    task: Literal["pretrain", "finetune", "lora"]
    seq_tokens: PositiveInt
    precision: Literal["bf16", "fp8"] = "bf16"
    default_global_batch: PositiveInt
    convergence: tuple[ConvergencePoint, ...] = Field(min_length=1)
    evaluation: Evaluation
    notes: tuple[str, ...] = ()

    def samples_to_train(self, global_batch: int) -> float:
        """Samples to the target at `global_batch`: the reference points interpolated linearly
        in the batch size (the nearest end outside them), as MLPerf's RCP checker does."""
        pts = sorted(self.convergence, key=lambda p: p.global_batch)
        if global_batch <= pts[0].global_batch:
            return pts[0].samples
        for a, b in zip(pts, pts[1:]):
            if global_batch <= b.global_batch:
                w = (global_batch - a.global_batch) / (b.global_batch - a.global_batch)
                return a.samples + w * (b.samples - a.samples)
        return pts[-1].samples

    def evaluations(self, samples: float) -> int:
        e = self.evaluation
        if samples < e.first_at_samples:
            return 0
        return 1 + int((samples - e.first_at_samples) // e.every_samples)
