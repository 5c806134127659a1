"""A training layout's rules: what divides (Megatron-style) and how the pipeline splits."""

from __future__ import annotations

import math

from sim.perf.train.types import TrainingLayoutError, TrainJob, TrainLayout


def check_train_layout(job: TrainJob, lay: TrainLayout, cards: int | None = None) -> None:
    """Divisibility rules of Megatron-style layouts; one-line `TrainingLayoutError`."""
    a = job.model.architecture
    name = lay.label()
    if cards is not None and lay.cards != cards:
        raise TrainingLayoutError(f"layout {name} uses {lay.cards} cards, not {cards} "
                                  "(tp x pp x dp x cp must equal the cards)")
    if lay.tp > a.num_attention_heads or a.num_attention_heads % lay.tp:
        raise TrainingLayoutError(f"layout {name}: TP {lay.tp} does not divide the "
                                  f"{a.num_attention_heads} attention heads")
    if lay.pp > a.num_layers:
        raise TrainingLayoutError(f"layout {name}: PP {lay.pp} exceeds the {a.num_layers} layers")
    if lay.vp > 1 and (lay.pp == 1 or stage_layers(a.num_layers, lay.pp) < lay.vp):
        raise TrainingLayoutError(f"layout {name}: {a.num_layers} layers do not split into "
                                  f"PP {lay.pp} x VP {lay.vp} stages of at least one layer")
    if job.global_batch % (lay.dp * lay.micro_batch):
        raise TrainingLayoutError(f"layout {name}: global batch {job.global_batch} is not a "
                                  f"multiple of DP {lay.dp} x micro-batch {lay.micro_batch}")
    if job.seq_tokens % lay.cp:
        raise TrainingLayoutError(f"layout {name}: CP {lay.cp} does not divide the sequence "
                                  f"of {job.seq_tokens} tokens")
    moe = a.moe
    if lay.ep > 1 and (moe is None or moe.num_experts % lay.ep or lay.ep > lay.dp * lay.cp):
        raise TrainingLayoutError(f"layout {name}: EP {lay.ep} needs an MoE model whose experts "
                                  "it divides, within DP x CP")
    if lay.zero not in (0, 1, 2, 3):
        raise TrainingLayoutError(f"layout {name}: ZeRO stage must be 0-3")
    n = stage_layers(a.num_layers, lay.pp)
    if lay.recompute == "block" and not 0 < lay.recompute_layers <= n:
        raise TrainingLayoutError(f"layout {name}: block recomputation of "
                                  f"{lay.recompute_layers} layers needs 1 to the stage's {n}")
    if lay.recompute == "block" and lay.recompute_layers % lay.vp:
        raise TrainingLayoutError(f"layout {name}: block recomputation of "
                                  f"{lay.recompute_layers} layers is not the same number in "
                                  f"each of the {lay.vp} virtual stages")


def stage_layers(num_layers: int, pp: int) -> int:
    """Transformer layers on the fullest pipeline stage: ceil(layers / pp). Megatron splits
    unevenly (`num_layers_in_first/last_pipeline_stage`, or counting the embedding and the loss
    as one layer each: NVIDIA's Llama 3.1 405B MLPerf configs set ASYM_PP_EMBED / ASYM_PP_LOSS,
    126 layers + 2 = 128 on PP8 x VP8), so PP need not divide the layers."""
    return math.ceil(num_layers / pp)


def last_stage_layers(num_layers: int, pp: int) -> int:
    """Layers left to the last stage (which also runs the LM head and the loss) when the others
    are full: layers - (pp - 1) x ceil(layers / pp), at least 0."""
    return max(0, num_layers - (pp - 1) * stage_layers(num_layers, pp))


def in_flight_layer_microbatches(num_layers: int, lay: TrainLayout, m: int) -> float:
    """Activations the first pipeline stage holds at its peak, in units of one micro-batch
    through one layer. 1F1B: pp micro-batches in warm-up (at most m) through the stage's
    layers. Interleaved (vp > 1): Megatron's schedule warms up 2 (pp - 1) + (vp - 1) pp model
    chunks and holds one more in its steady state (`megatron/core/pipeline_parallel/
    schedules.py`, num_warmup_microbatches), each chunk of stage_layers / vp layers: the
    Korthikanti et al. factor 1 + (pp - 1) / (pp vp) over plain 1F1B."""
    n = stage_layers(num_layers, lay.pp)
    if lay.pp == 1:
        return float(n)
    if lay.vp == 1:
        return float(n * min(m, lay.pp))
    chunks = min(2 * (lay.pp - 1) + (lay.vp - 1) * lay.pp + 1, m * lay.vp)
    return chunks * n / lay.vp
