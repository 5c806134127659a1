"""Plan a training job: its fastest layout that fits (or a given one), time to train, interruptions.

The model underneath lives in `sim.perf.train`, one job per module (records, layout rules, FP8,
memory, context parallelism, step time, layout search, interruptions)."""

from __future__ import annotations

from dataclasses import dataclass

from sim.perf.train.hardware import training_hardware
from sim.perf.train.interruptions import SECONDS_PER_DAY, Interruptions, interruptions
from sim.perf.train.layout import check_train_layout
from sim.perf.train.search import search_layout
from sim.perf.train.step import train_step
from sim.perf.train.types import TrainingLayoutError, TrainJob, TrainLayout, TrainStep


@dataclass(frozen=True)
class TrainPlan:
    """A job on `cards` cards of one type: the step on its layout, the time to train, the
    interruptions it meets and the calibration it used."""

    card: str
    cards: int
    step: TrainStep
    tokens: float
    time_to_train_days: float
    """Wall time with interruptions (goodput)."""
    interruptions: Interruptions
    time_to_train_minutes: float | None = None
    """A benchmark's time to train (samples to its target + evaluations; no failures)."""
    calibration: str = ""

    def to_dict(self) -> dict:
        st = self.step
        return {"card": self.card, "cards": self.cards, "layout": st.layout.__dict__ | {
                    "label": st.layout.label()},
                "step_time_s": st.step_s, "step_parts_s": st.parts,
                "tokens_per_s_per_card": st.tokens_per_s_per_card, "mfu": st.mfu,
                "memory_gb_per_card": st.memory.total_gb if st.memory else None,
                "memory_parts_gb": None if st.memory is None else {
                    "params": st.memory.params_gb, "grads": st.memory.grads_gb,
                    "optimizer": st.memory.optimizer_gb, "activations": st.memory.activations_gb,
                    "logits": st.memory.logits_gb, "usable": st.memory.usable_gb},
                "tokens": self.tokens, "time_to_train_days": self.time_to_train_days,
                "goodput": self.interruptions.goodput,
                "checkpoint_interval_s": self.interruptions.checkpoint_interval_s,
                "failures_per_day": self.interruptions.failures_per_day,
                "time_to_train_minutes": self.time_to_train_minutes,
                "calibration": self.calibration}


def plan_training(job: TrainJob, card: str, cards: int, library, tokens: float | None = None,
                  layout: TrainLayout | None = None, failures_per_card_year: float = 0.17,
                  benchmark=None) -> TrainPlan:
    """The fastest layout that fits (or `layout`, checked), the time to train `tokens` (or the
    benchmark's samples to its target at the job's global batch, plus its evaluations) and the
    interruptions of `cards` cards for that long (failures per card-year: reference-data D1)."""
    th = training_hardware(card, library)
    if layout is not None:
        check_train_layout(job, layout, cards)
        step = train_step(job, layout, th.hw, th.tp_overlap)
        if not step.memory.fits:
            raise TrainingLayoutError(
                f"layout {layout.label()} does not fit on {card}: {step.memory.total_gb:.1f} GB "
                f"per card of {step.memory.usable_gb:.1f} GB usable")
    else:
        step = search_layout(job, th.hw, cards, th.tp_overlap)
    rate = step.tokens_per_s_per_card * cards
    minutes = None
    if benchmark is not None:
        samples = benchmark.samples_to_train(job.global_batch)
        tokens = samples * job.seq_tokens
        fwd_share = step.parts["forward"] / step.step_s
        evals = benchmark.evaluations(samples)
        eval_s = evals * benchmark.evaluation.eval_samples * job.seq_tokens / rate * fwd_share
        minutes = (tokens / rate + eval_s) / 60.0
    if tokens is None:
        raise TrainingLayoutError("give the tokens to train or a benchmark workload")
    ideal_s = tokens / rate
    inter = interruptions(job.model, cards, failures_per_card_year)
    return TrainPlan(card, cards, step, tokens, ideal_s / inter.goodput / SECONDS_PER_DAY, inter,
                     minutes, f"{th.source} (tier {th.tier})")
