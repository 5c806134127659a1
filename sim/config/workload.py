"""Request length mixes (workloads/lengths): the input/output token statistics of a dataset."""

from __future__ import annotations

from pydantic import model_validator

from sim.config.base import FleetsimModel, PositiveFloat, PositiveInt, Sourced, WithSources


class LengthStats(FleetsimModel):
    """Token-length statistics of one side (input or output). `std` lets the perf model take the
    second moment (attention cost grows with L²) rather than the square of the mean."""

    mean: PositiveFloat
    std: float = 0.0
    min: PositiveInt = 1
    max: PositiveInt

    @model_validator(mode="after")
    def _check(self) -> "LengthStats":
        if not self.min <= self.mean <= self.max:
            raise ValueError(f"mean {self.mean} is outside [min {self.min}, max {self.max}]")
        if self.std < 0:
            raise ValueError(f"std must be >= 0 (got {self.std})")
        return self

    @property
    def second_moment(self) -> float:
        return self.mean**2 + self.std**2


class Lengths(Sourced):
    input_tokens: LengthStats
    output_tokens: LengthStats


class LengthMix(WithSources):
    """A named workload's length mix, e.g. the MLPerf Llama 2 70B OpenOrca subset."""

    name: str
    model: str | None = None
    dataset: str
    num_samples: PositiveInt | None = None
    lengths: Lengths
    notes: tuple[str, ...] = ()
