"""Layout search: the layouts a Megatron-LM / NeMo (or DeepSpeed) recipe would try, and the
fastest that fits."""

from __future__ import annotations

import math
from dataclasses import replace

from sim.perf.hardware import Hardware
from sim.perf.train.layout import stage_layers
from sim.perf.train.memory import memory_per_card
from sim.perf.train.step import train_step
from sim.perf.train.types import TrainingLayoutError, TrainJob, TrainLayout, TrainStep


def _divisors(n: int, cap: int) -> list[int]:
    return [d for d in range(1, min(n, cap) + 1) if n % d == 0]


def candidate_layouts(job: TrainJob, hw: Hardware, cards: int) -> list[TrainLayout]:
    """The search space of Megatron-LM / NeMo recipes: TP within the scale-up domain (1-8),
    PP 1-16 (uneven splits allowed, `stage_layers`), virtual stages 2-8, CP 1-4 for sequences
    of 8K or more, EP for MoE, micro-batches 1-4, recomputation none/selective/full or the
    fewest layers of a block recomputation that fit (`min_block_recompute`), ZeRO-1
    (distributed optimizer) or ZeRO-3 (not for LoRA on `LORA_UNSHARDED_STACKS`). A LoRA job on
    `LORA_DEEPSPEED_STACKS` gets its recipe's space instead (`deepspeed_lora_layouts`)."""
    if job.task == "lora" and hw.card.stack in LORA_DEEPSPEED_STACKS:
        return deepspeed_lora_layouts(job, cards)
    a = job.model.architecture
    zeros = (1,) if job.task == "lora" and hw.card.stack in LORA_UNSHARDED_STACKS else (1, 3)
    dom = hw.card.scale_up.domain_size
    out = []
    tps = [t for t in (1, 2, 4, 8) if t <= max(dom, 1) and a.num_attention_heads % t == 0]
    cps = [c for c in (1, 2, 4) if job.seq_tokens >= 8192 * c / 2 and job.seq_tokens % c == 0]
    eps = [1] if a.moe is None else [e for e in (1, 2, 4, 8, 16, 32, 64)
                                     if a.moe.num_experts % e == 0]
    for tp in tps:
        for pp in [p for p in (1, 2, 4, 8, 16) if p <= a.num_layers]:
            for cp in cps:
                if cards % (tp * pp * cp):
                    continue
                dp = cards // (tp * pp * cp)
                for ep in [e for e in eps if e <= dp * cp]:
                    for mb in (1, 2, 4):
                        if job.global_batch % (dp * mb):
                            continue
                        vps = [1] + [v for v in (2, 4, 8) if pp > 1
                                     and stage_layers(a.num_layers, pp) >= v]
                        for vp in vps:
                            for z in zeros:
                                for rc in ("none", "selective", "full"):
                                    out.append(TrainLayout(tp, pp, dp, cp, ep, mb, vp, rc, z))
                                block = min_block_recompute(job, out[-3], hw)
                                if block is not None:
                                    out.append(block)
    return out


LORA_DEEPSPEED_STACKS = ("synapseai",)
"""Stacks whose LoRA recipe is Hugging Face PEFT under DeepSpeed ZeRO-3 (optimum-habana's
GaudiTrainer), with every rank a data-parallel rank and every decoder layer checkpointed. Intel's
MLPerf v4.0 Gaudi 2 Llama 2 70B LoRA code (mlcommons/training_results_v4.0 @62f111b,
Intel-HabanaLabs/benchmarks/llm_finetune): run_llama_70B_submission_fp8.sh runs
`gaudi_spawn.py --world_size 8 --use_deepspeed` with `--per_device_train_batch_size 1
--gradient_accumulation_steps 1 --deepspeed configs/ds_zero3.json` (`"stage": 3`) and
`--gradient_checkpointing True`; scripts/train.py takes the global batch as per-device batch x
accumulation x WORLD_SIZE (no tensor, pipeline or context parallel group); scripts/utils.py
calls `model.gradient_checkpointing_enable()` before `get_peft_model`: each decoder layer keeps
only its input and runs its forward again in the backward (the model's "full")."""


def deepspeed_lora_layouts(job: TrainJob, cards: int) -> list[TrainLayout]:
    """The layouts of a `LORA_DEEPSPEED_STACKS` LoRA recipe on `cards` cards: data parallel
    over every card, ZeRO-3, every layer recomputed; micro-batches 1-4 that divide the batch."""
    return [TrainLayout(dp=cards, micro_batch=mb, recompute="full", zero=3) for mb in (1, 2, 4)
            if job.global_batch % (cards * mb) == 0]


LORA_UNSHARDED_STACKS = ("cuda", "rocm")
"""Stacks whose LoRA recipe keeps the frozen weights whole on every data-parallel rank (no
ZeRO-3 / FSDP): NVIDIA's NeMo LoRA config runs Megatron DDP with the distributed optimizer
(`use_distributed_optimizer`, `ddp:` overlap settings, no FSDP option:
prishajain1/training_results_v5.0 @0fdc28f NVIDIA/benchmarks/llama2_70b_lora/implementations/
nyx_n1_ngc25.04_nemo/conf/megatron_gpt_peft_tuning_config.yaml) at TP1 PP1 CP1 on 8 B200s
(Inventec's copy of the config, @0709c7c) and CP8 on GB200 (config_GB200_128x4x1xtp1pp1cp8.sh,
@0fdc28f); AMD's recipe (Krai's reproduction, mlcommons/training_results_v5.1 @4da2d1c
config_MI300X_1x8x1.sh) runs TP1 PP1 CP1 and recomputes 21 of 80 layers (ACG=full ACM=block
ACL=21) instead of sharding. Intel Gaudi's LoRA recipe runs DeepSpeed ZeRO-3
(`LORA_DEEPSPEED_STACKS`)."""


def min_block_recompute(job: TrainJob, lay: TrainLayout, hw: Hardware) -> TrainLayout | None:
    """`lay` (no recomputation) with the fewest whole layers per stage recomputed (Megatron's
    block method) that make it fit, when some but not all do; else None. Memory falls by the
    same amount per recomputed layer, so the count is solved, then checked."""
    n = stage_layers(job.model.architecture.num_layers, lay.pp)
    base = replace(lay, recompute="none", recompute_layers=0)
    m0 = memory_per_card(job, base, hw)
    if m0.fits or n < 2:
        return None
    full = memory_per_card(job, replace(lay, recompute="block", recompute_layers=n), hw)
    if not full.fits:
        return None
    per_layer = (m0.total_gb - full.total_gb) / n
    v = lay.vp  # the same count in each virtual stage
    k = max(1, math.ceil((m0.total_gb - m0.usable_gb) / per_layer - 1e-9))
    k = v * math.ceil(k / v)
    while k < n and not memory_per_card(job, replace(lay, recompute="block",
                                                     recompute_layers=k), hw).fits:
        k += v
    return replace(lay, recompute="block", recompute_layers=k) if k < n else None


def search_layout(job: TrainJob, hw: Hardware, cards: int, tp_overlap: float = 0.0) -> TrainStep:
    """The fastest layout that fits (ties: fewer model-parallel cards, then the listed order).
    `TrainingLayoutError` naming the smallest memory need when none fits."""
    best: TrainStep | None = None
    smallest: TrainStep | None = None
    forward: dict = {}  # one forward per (tp, pp, cp, micro-batch), shared by the candidates
    for lay in candidate_layouts(job, hw, cards):
        mem = memory_per_card(job, lay, hw)
        if not mem.fits:
            if smallest is None or mem.total_gb < smallest.memory.total_gb:
                smallest = TrainStep(lay, math.inf, {}, memory=mem)
            continue
        st = train_step(job, lay, hw, tp_overlap, forward)
        if best is None or st.step_s < best.step_s * (1 - 1e-9):
            best = st
    if best is None:
        if smallest is None:
            raise TrainingLayoutError(f"{job.model.name}: no layout of {cards} cards divides "
                                      f"a global batch of {job.global_batch} sequences")
        mm = smallest.memory
        raise TrainingLayoutError(
            f"{job.model.name} on {cards} x {hw.card_id}: no layout fits; the smallest, "
            f"{smallest.layout.label()}, needs {mm.total_gb:.1f} GB per card of "
            f"{mm.usable_gb:.1f} GB usable")
    return best
