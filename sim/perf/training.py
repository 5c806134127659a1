"""Training from physics: a parallel layout's step time, memory per card and MFU.

One optimizer step of a job (a model, sequence length, global batch in sequences, precision,
task) on a layout (tensor, pipeline, data, context and expert parallel degrees; micro-batch;
virtual pipeline stages; activation recomputation; ZeRO stage):

    F          forward of one micro-batch on the slowest pipeline stage: the serving step model
               (`sim.perf.step.StepModel`: GEMMs, attention, MoE, elementwise, TP all-reduces)
               on micro_batch x seq / cp tokens through ceil(layers / pp) layers, or the last
               stage's remaining layers plus the LM head over every token if that is slower
    B          backward = 2 (F - attention) + 2.5 attention (activation and weight gradients;
               FlashAttention's backward recomputes the scores); a LoRA job's frozen weights need
               only activation gradients: B = (F - attention) + 2.5 attention
    R          recomputation: full = F again, selective = the attention core, block = the
               forward of the N layers recomputed whole (Megatron's `recompute_method=block`,
               `recompute_num_layers`), none = 0
    compute    (m + (pp - 1) / vp) (F + B + R), m = global_batch / (dp x micro_batch): 1F1B with
               its pipeline bubble (interleaved by vp)
    pp p2p     2 m sends of one micro-batch's activations per stage boundary (not overlapped;
               an interleaved schedule's further sends are: Megatron's `overlap_p2p_comm`)
    dp         gradient reduce-scatter + parameter all-gather of the stage's weights over dp
               (ring volume 2 (dp-1)/dp), on the scale-out NIC when the job spans more than one
               scale-up domain; overlapped with one micro-batch's backward and forward, the rest
               exposed
    moe        4 all-to-alls per MoE layer and micro-batch (dispatch and combine, both passes)
    cp         context parallelism's exchange per layer and micro-batch as Transformer Engine
               runs it (`cp_comm_s`): all-to-all of Q, K, V and O (a NeMo LoRA recipe's "a2a",
               exposed) or the ring's K, V blocks (Megatron's default "p2p", hidden under each
               ring step's attention up to its length); again for a recomputed layer
    fp8        an FP8 run's quantisation of GEMM operands (Transformer Engine): per micro-batch
               each GEMM's input (forward; again under full recomputation) and output gradient
               (backward), 2 B read + 1 B per FP8 copy written, with a transposed copy where a
               weight gradient needs one and the card's FP8 GEMMs take TN layouts only; the
               weights once per step; memory-bound at the card's achieved bandwidth
               (`fp8_quantize_bytes_per_token`, `fp8_weight_quantize_bytes`)
    optimizer  28 bytes per local parameter (Adam: read master, m, v, grad; write master, m, v,
               param) at the achieved memory bandwidth

Memory per card: bf16 weights (2 B/param; 1 B in an FP8 run on a Transformer Engine stack,
`FP8_STORAGE_STACKS`: NeMo's `fp8_params`, FP8_PARAMS=True in NVIDIA's MLPerf LoRA and 405B
configs), bf16 gradients reduced in bf16 (2 B, NeMo's default;
ZeRO >= 2 shards them),
fp32 master weights and Adam moments (12 B; ZeRO >= 1 shards them over dp), ZeRO-3 shards the
weights too; a LoRA job keeps only its frozen weights. Activations per layer and token
follow Korthikanti et al. 2022 (sequence parallel, FlashAttention: no s^2 term), with the FFN
width in place of 4h; full recomputation keeps only each layer's input; selective
recomputation (Megatron's: the attention core) saves nothing more once FlashAttention keeps no
score matrix; block recomputation keeps only the input of its N layers per stage; a dense LoRA
job (adapters on QKV and the output projection, the MLPerf recipe) is counted tensor by tensor
from what Transformer Engine and Megatron save (`lora_saved_bytes_per_token_layer`: no frozen
GEMM input, the stacks' FP8 attention and FP8 SwiGLU-input settings); the first stage holds
min(m, pp) micro-batches in flight through its ceil(layers / pp) layers, more when interleaved
(`in_flight_layer_microbatches`); the last stage also holds fp32 logits; FP8 runs on a
Transformer Engine stack keep the saved GEMM inputs in FP8. `USABLE_FRACTION` of the card's
memory is usable.

What the framework achieves beyond the card's microbenchmarks (one compute factor per card) is
fitted to published, non-MLPerf training tables (`hardware_specs/training_tables/`,
`sim.calibrate.training`); MLPerf Training results only validate. MFU is an output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from sim.config.model import Architecture, ModelSpec
from sim.perf.hardware import Hardware
from sim.perf.memory import Layout
from sim.perf.params import active_params, layer_params, total_params
from sim.perf.precision import Precision
from sim.perf.step import StepBatch, StepModel

SECONDS_PER_DAY = 86400.0
USABLE_FRACTION = 0.90
"""Share of device memory a training job can hold (CUDA/ROCm context, NCCL buffers, allocator
fragmentation take the rest; assumed, the common 10% headroom)."""
OPTIMIZER_BYTES_PER_PARAM = 28.0
NIC_EFFICIENCY = 0.8
"""Achieved share of the NIC's line rate in ring collectives over the scale-out network
(assumed; NCCL over InfiniBand/RoCE reaches 80-90%)."""

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


def training_flops_per_token(model: ModelSpec, seq_tokens: int) -> float:
    """Model FLOPs per trained token: 6 x matmul parameters a token uses (the input embedding
    is a lookup) + causal attention 6 x layers x seq x d_attn (half of 12 L s d)."""
    a = model.architecture
    matmul_active = active_params(a) - a.vocab_size * a.hidden_size
    if a.attention == "mla":
        assert a.mla is not None
        d_attn = a.num_attention_heads * (a.mla.qk_nope_head_dim + a.mla.qk_rope_head_dim
                                          + a.mla.v_head_dim) / 2
    else:
        d_attn = a.num_attention_heads * a.head_dim
    return 6.0 * matmul_active + 6.0 * a.num_layers * seq_tokens * d_attn


# ---- checks ----------------------------------------------------------------------------------

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


# ---- FP8 storage --------------------------------------------------------------------------

FP8_STORAGE_STACKS = ("cuda", "rocm")
"""Stacks whose FP8 training runs through Transformer Engine, which also stores FP8 weights
(`fp8_model_init`; NeMo's `fp8_params`, FP8_PARAMS=True in NVIDIA's MLPerf configs; AMD's MLPerf
rows name TransformerEngine) and keeps the GEMM inputs it saves for backward in FP8. Elsewhere
(Intel Gaudi: DeepSpeed ZeRO-3 with a bf16 model and FP8 GEMMs, optimum-habana's Llama 2 70B
LoRA FP8 recipe) FP8 is a compute precision only: weights and saved activations stay 16-bit."""


def fp8_storage(job: TrainJob, hw: Hardware) -> bool:
    return job.precision == "fp8" and hw.card.stack in FP8_STORAGE_STACKS


# ---- FP8 quantisation traffic ----------------------------------------------------------------

FP8_COLUMNWISE_NATIVE_CARDS = ("b200", "gb200")
"""Cards whose FP8 GEMMs read an operand column-wise, so one quantised copy of a tensor serves
the forward GEMM and both backward GEMMs. Transformer Engine (docs, 'Performance Considerations -
Handling transposes'): a Linear's forward reads its input and weight row-wise, the weight
gradient reads the input and the output gradient column-wise, the input gradient the weight
column-wise; 'Hopper: cannot efficiently access elements in columnwise fashion, so columnwise
tensors need to be physically transposed in memory ... Blackwell: supports columnwise access
natively'. `is_non_tn_fp8_gemm_supported` (transformer_engine/pytorch/utils.py,
NVIDIA/TransformerEngine @0139fa5) holds for compute capability 10.x-11.x and >= 13.0: the B200
and GB200 (10.0, Blackwell data centre), not Hopper (9.0), Ada (8.9: L4, L40, L40S, RTX 4090) or
consumer Blackwell (12.0: RTX 5090). ROCm's Transformer Engine returns False on every AMD GPU
(ROCm/TransformerEngine @07f3c6a, same function: 'release until rocm support non-TN fp8
gemms'), so the MI300X, MI325X and MI355X write transposed copies. Intel Gaudi trains FP8 through
its own Transformer Engine (docs.habana.ai 'FP8 Training with Intel Gaudi Transformer Engine');
whether its matrix engine needs transposed copies is not published: assumed not (one copy)."""


def _fp8_transposed_copy(hw: Hardware) -> bool:
    """Whether a column-wise use of an FP8 tensor needs its own, transposed, copy on `hw`."""
    return hw.card.stack != "synapseai" and hw.card_id not in FP8_COLUMNWISE_NATIVE_CARDS


@dataclass(frozen=True)
class Fp8Gemm:
    """One FP8 GEMM of a layer, per token of the layer (unsharded): input and output widths,
    whether a fused norm quantises its input, its rows per token (top-k for routed experts) and
    its weight matrices (the experts for routed ones), both scaled by the share of layers that
    have it."""

    k: float
    n: float
    norm_fused: bool
    rows: float = 1.0
    matrices: float = 1.0
    routed: bool = False


def fp8_gemms(a: Architecture) -> list[Fp8Gemm]:
    """The GEMMs Transformer Engine quantises, averaged over the layers. Attention: every
    projection but the output one reads a normalised tensor (the input norm; MLA's
    up-projections the latent norms), so its quantisation is fused into the norm
    (`LayerNormLinear`: 'the LayerNorm output is quantized directly, eliminating the separate
    quantization step'); the output projection quantises the attention output. Dense FFN:
    fc1 fused with the norm, fc2 quantises the activation. Routed experts quantise the permuted
    tokens (no norm in front) for both GEMMs, top-k rows per token; shared experts as a dense
    FFN. The router and the LM head stay 16-bit (the step model runs them in BF16)."""
    h, L = a.hidden_size, a.num_layers
    if a.attention == "mla":
        m = a.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        heads = a.num_attention_heads
        attn = [(m.q_lora_rank or h, heads * qk), (h, m.kv_lora_rank + m.qk_rope_head_dim),
                (m.kv_lora_rank, heads * (m.qk_nope_head_dim + m.v_head_dim))]
        if m.q_lora_rank:
            attn.insert(0, (h, m.q_lora_rank))
        out = [Fp8Gemm(k, n, True) for k, n in attn]
        out.append(Fp8Gemm(heads * m.v_head_dim, h, False))
    else:
        q = a.num_attention_heads * a.head_dim
        kv = a.num_kv_heads * a.head_dim
        out = [Fp8Gemm(h, q + 2 * kv, True), Fp8Gemm(q, h, False)]
    up = 2 if a.ffn_kind == "swiglu" else 1
    moe = a.moe
    dense_f = float(a.ffn_size if moe is None else (moe.dense_ffn_size or 0))
    dense_share = 1.0 if moe is None else moe.num_dense_layers / L
    if dense_share > 0:
        out += [Fp8Gemm(h, up * dense_f, True, dense_share, dense_share),
                Fp8Gemm(dense_f, h, False, dense_share, dense_share)]
    if moe is not None:
        share = 1.0 - dense_share
        fe = float(moe.expert_ffn_size)
        if moe.num_shared_experts:
            fs = moe.num_shared_experts * fe
            out += [Fp8Gemm(h, up * fs, True, share, share), Fp8Gemm(fs, h, False, share, share)]
        k, e = moe.experts_per_token * share, moe.num_experts * share
        out += [Fp8Gemm(h, up * fe, False, k, e, True), Fp8Gemm(fe, h, False, k, e, True)]
    return out


def fp8_quantize_bytes_per_token(job: TrainJob, hw: Hardware) -> tuple[float, float]:
    """(forward, backward) bytes per token and layer, unsharded, that an FP8 run moves
    quantising GEMM operands: a memory-bound cast kernel reads the 16-bit tensor (2 B per
    element) and writes one FP8 byte per copy (amax is reduced in the same pass: delayed
    scaling's `cast_transpose` fuses it; current scaling's separate amax pass is not counted).
    Copies: the row-wise one, plus a transposed one where a weight gradient reads the tensor
    column-wise and the card needs it (`FP8_COLUMNWISE_NATIVE_CARDS`). Forward: each GEMM's
    input; a norm-fused quantisation writes its FP8 copies (1 B each) in place of the norm's
    16-bit output (2 B, already in the elementwise term), so it adds nothing for up to two copies
    (no saving is claimed for one). Backward: each GEMM's output gradient (the row-
    wise copy for the input gradient, the column-wise one for the weight gradient). A LoRA job's
    frozen GEMMs compute no weight gradient: one copy (Transformer Engine saves the column-wise
    input only when `weight.requires_grad`). 0 for a 16-bit job."""
    if job.precision != "fp8":
        return 0.0, 0.0
    copies = 1 + int(job.task != "lora" and _fp8_transposed_copy(hw))
    fwd = bwd = 0.0
    for g in fp8_gemms(job.model.architecture):
        cast_in = max(0.0, copies - 2.0) if g.norm_fused else 2.0 + copies
        fwd += g.rows * g.k * cast_in
        bwd += g.rows * g.n * (2.0 + copies)
    return fwd, bwd


def fp8_weight_quantize_bytes(job: TrainJob, lay: TrainLayout, hw: Hardware) -> float:
    """Bytes one card moves quantising its stage's FP8 GEMM weights, per quantisation: Transformer
    Engine stores FP8 weights (`fp8_storage`) and then only writes the transposed copy the input
    gradient reads where the card needs one (read 1 B, write 1 B); else it reads the 16-bit
    weight and writes the row-wise copy and, where needed, the transposed one. Weights of routed
    experts count whole (E per layer) over TP x EP."""
    if job.precision != "fp8":
        return 0.0
    a = job.model.architecture
    t_copy = _fp8_transposed_copy(hw)
    per_w = 2.0 * t_copy if fp8_storage(job, hw) else 3.0 + t_copy
    params = sum(g.k * g.n * g.matrices / (lay.ep if g.routed else 1) for g in fp8_gemms(a))
    layers = stage_layers(a.num_layers, lay.pp)
    return per_w * params * layers / lay.tp


# ---- pipeline split ------------------------------------------------------------------------

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


# ---- memory ----------------------------------------------------------------------------------

def _local_params(job: TrainJob, lay: TrainLayout) -> float:
    a = job.model.architecture
    experts = sum(layer_params(a, i).experts for i in range(a.num_layers))
    return (total_params(a) - experts) / (lay.tp * lay.pp) + experts / (lay.tp * lay.pp * lay.ep)


LORA_FP8_ATTENTION_STACKS = ("cuda",)
"""Stacks whose LoRA recipe runs attention in FP8 (Transformer Engine's FP8 fused attention keeps
Q, K, V and O in FP8 for the backward): NVIDIA's MLPerf Llama 2 70B LoRA recipe sets FP8_DPA=1
with NVTE_FP8_DPA_BWD=1 (config_common.sh of the NeMo LoRA implementation, as copied by Inventec,
jkjung-avt/training_results_v5.0 @7f52382 Inventec/benchmarks/llama2_70b_lora/implementations/
nemo25.09, and by Krai for the H200, mlcommons/training_results_v5.1 @4da2d1c Krai/.../
Cray-XD670-H200-SXM5-141GB_nX_v5.0/config_XD670_common.sh); AMD's recipe sets FP8_DPA=0
(Krai's reproduction, mlcommons/training_results_v5.1 @4da2d1c Krai/benchmarks/llama2_70b_lora/
implementations/PowerEdge-XE9680-MI300X-192GB_n1_v5.0/config_MI300X_1x8x1.sh)."""

LORA_FP8_SWIGLU_INPUT_STACKS = ("cuda",)
"""Stacks whose LoRA recipe stores the SwiGLU input in FP8 for its backward (Megatron's
`activation_func_fp8_input_store`: `input.to(torch.float8_e4m3fn)` before `save_for_backward`,
megatron/core/fusions/fused_bias_swiglu.py): NVIDIA's B200 1x8 configs set FP8_ACT=1, which
NVIDIA's megatron_gpt_peft_tuning_config.yaml maps to `activation_func_fp8_input_store`
(prishajain1/training_results_v5.0 @0fdc28f NVIDIA/benchmarks/llama2_70b_lora/implementations/
nyx_n1_ngc25.04_nemo/conf; the B200 config read is Inventec's copy, config_P9000AG7B200_1x8x1x
tp1pp1cp1.sh @0709c7c, with the v5.0 log's LR 0.00055 and 800 steps); AMD's recipe does not set
FP8_ACT (the yaml's default 0)."""


def lora_saved_bytes_per_token_layer(job: TrainJob, hw: Hardware) -> float:
    """Bytes a LoRA job (adapters on QKV and the output projection, the MLPerf recipe) keeps
    for the backward per token and dense attention layer, unsharded, no recomputation, on
    Megatron-core's Transformer Engine layer (fused norm + QKV, fused attention, output
    projection, fused norm + fc1, SwiGLU, fc2):

    - each RMSNorm's input in 16 bits and its fp32 rsigma (TE's LayerNormLinear saves
      `inputmat`, `mu`, `rsigma`): 2 x (2 h + 4);
    - the frozen GEMMs' inputs are not kept (TE frees the norm output when the weight needs no
      gradient and the output is not returned; Linear saves its input only for a weight
      gradient): nothing for fc1, fc2 and the output projection;
    - the normalised input of QKV, which NeMo's LoRA returns to the adapter
      (`return_layernorm_output = True`): kept in 16 bits by the adapter's first GEMM (2 h),
      and, in an FP8 run, also TE's FP8 copy, which a returned norm output does not free (h);
    - fused attention keeps Q, K, V, O and fp32 softmax statistics (TE fused_attn_fp8.cu: Q, K,
      V, O, M, ZInv; FP8 on `LORA_FP8_ATTENTION_STACKS`, else 16 bits and one log-sum-exp per
      head); the output projection's adapter keeps O in 16 bits, the same tensor as
      attention's unless attention keeps it in FP8 (then 2 q more);
    - the SwiGLU input (2 f wide; f for a plain activation) in 16 bits, or FP8 on
      `LORA_FP8_SWIGLU_INPUT_STACKS` in an FP8 run.

    Not counted: the adapters' rank-wide inputs to their second GEMM (4 r B: 64 B at rank 16,
    0.04%) and LoRA dropout masks (not sourced)."""
    a = job.model.architecture
    h, f, heads = a.hidden_size, float(a.ffn_size), a.num_attention_heads
    q, kv = heads * a.head_dim, a.num_kv_heads * a.head_dim
    fp8 = fp8_storage(job, hw)
    fp8_attn = fp8 and hw.card.stack in LORA_FP8_ATTENTION_STACKS
    e_attn = 1.0 if fp8_attn else 2.0
    norms = 2 * (2.0 * h + 4.0)
    qkv_norm_out = 2.0 * h + (h if fp8 else 0.0)
    attn = e_attn * (2 * q + 2 * kv) + 4.0 * heads * (2 if fp8_attn else 1)
    proj_adapter_in = 2.0 * q if fp8_attn else 0.0
    act_in = (2 if a.ffn_kind == "swiglu" else 1) * f
    act = act_in * (1.0 if fp8 and hw.card.stack in LORA_FP8_SWIGLU_INPUT_STACKS else 2.0)
    return norms + qkv_norm_out + attn + proj_adapter_in + act


LORA_TE_ACCOUNTING_STACKS = ("cuda", "rocm")
"""Stacks whose LoRA recipe runs Megatron-core's Transformer Engine layer, the code
`lora_saved_bytes_per_token_layer` was read from (NVIDIA's NeMo LoRA; AMD's recipe is the same
NeMo implementation on ROCm's Transformer Engine). Intel Gaudi's LoRA recipe runs neither
(Hugging Face PEFT on optimum-habana's GaudiTrainer with DeepSpeed ZeRO-3: mlcommons/
training_results_v4.0 @62f111b Intel-HabanaLabs/benchmarks/llm_finetune/scripts/train.py and
utils.py), so its layers are not counted this way (`LORA_DEEPSPEED_STACKS`)."""


def _lora_accounting_applies(job: TrainJob, hw: Hardware) -> bool:
    a = job.model.architecture
    return (job.task == "lora" and a.moe is None and a.attention != "mla"
            and hw.card.stack in LORA_TE_ACCOUNTING_STACKS)


def _act_bytes_per_token_layer(job: TrainJob, lay: TrainLayout, hw: Hardware,
                               recomputed: bool = False) -> float:
    """Bytes per token of one layer's saved activations on one card (TP-sharded); a
    recomputed layer (full recomputation, or one of a block) keeps only its 16-bit input."""
    a = job.model.architecture
    h = a.hidden_size
    if recomputed or lay.recompute == "full":
        return 2.0 * h / lay.tp
    if _lora_accounting_applies(job, hw):
        return lora_saved_bytes_per_token_layer(job, hw) / lay.tp
    fp8_saved = fp8_storage(job, hw)
    moe = a.moe
    f = float(moe.expert_ffn_size * moe.experts_per_token if moe else a.ffn_size)
    mlp = 2 * h + (6 * f if a.ffn_kind == "swiglu" else 4 * f) + h
    total = 15 * h + mlp  # Korthikanti: attention 15 sbh; MLP with width f
    if fp8_saved:  # GEMM inputs are kept in FP8 (Transformer Engine): 1 byte
        total -= 3 * h + f
    if job.task == "lora":  # MoE / MLA LoRA: the frozen MLP GEMMs' inputs are not kept
        total -= (h + f) if fp8_saved else (2 * h + 2 * f)
    return total / lay.tp


def _recomputed_share(num_layers: int, lay: TrainLayout) -> float:
    """Share of a stage's layers recomputed whole: 1 for full, N / stage layers for block."""
    if lay.recompute == "full":
        return 1.0
    if lay.recompute == "block":
        return min(lay.recompute_layers, stage_layers(num_layers, lay.pp)) / stage_layers(
            num_layers, lay.pp)
    return 0.0


def memory_per_card(job: TrainJob, lay: TrainLayout, hw: Hardware) -> TrainMemory:
    a = job.model.architecture
    p = _local_params(job, lay)
    d = lay.dp * lay.cp  # Megatron's distributed optimizer shards over data x context ranks
    lora = job.task == "lora"
    w_bytes = 1.0 if fp8_storage(job, hw) else 2.0
    params = w_bytes * p / (d if lay.zero >= 3 else 1)
    grads = 0.0 if lora else 2.0 * p / (d if lay.zero >= 2 else 1)
    opt = 0.0 if lora else 12.0 * p / (d if lay.zero >= 1 else 1)
    m = job.global_batch // (lay.dp * lay.micro_batch)
    tokens = lay.micro_batch * job.seq_tokens / lay.cp
    share = _recomputed_share(a.num_layers, lay)
    per_layer = tokens * ((1 - share) * _act_bytes_per_token_layer(job, lay, hw)
                          + share * _act_bytes_per_token_layer(job, lay, hw, recomputed=True))
    one = per_layer * stage_layers(a.num_layers, lay.pp)
    acts = per_layer * in_flight_layer_microbatches(a.num_layers, lay, m)
    logits = tokens * a.vocab_size / lay.tp * 4.0  # fp32, on the last stage
    if lay.pp > 1:  # the last stage holds one micro-batch and the logits: whichever is more
        logits = max(0.0, one + logits - acts)
    gb = 1e9
    return TrainMemory(params / gb, grads / gb, opt / gb, acts / gb, logits / gb,
                       hw.memory_bytes * USABLE_FRACTION / gb)


# ---- time ------------------------------------------------------------------------------------

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


# ---- context-parallel communication -----------------------------------------------------------

CpComm = Literal["a2a", "p2p"]

CP_A2A_LORA_STACKS = ("cuda", "rocm")
"""Stacks whose LoRA recipe runs context parallelism as all-to-all of Q, K, V and O
(Transformer Engine's `cp_comm_type="a2a"`, Ulysses-style): NVIDIA's NeMo LoRA config sets
`cp_comm_type: ${oc.env:CP_COMM_TYPE,'a2a'}` (prishajain1/training_results_v5.0 @0fdc28f
NVIDIA/benchmarks/llama2_70b_lora/implementations/nyx_n1_ngc25.04_nemo/conf/
megatron_gpt_peft_tuning_config.yaml). ROCm: assumed the same; AMD's recipe is that NeMo LoRA
implementation (its config, Krai's reproduction config_MI300X_1x8x1.sh, mlcommons/
training_results_v5.1 @4da2d1c, sets NVIDIA's variables: LORA_A2A=1, NVTE_FP8_DPA_BWD=1, FP8_DPA,
ACG/ACM/ACL) and sets no CP_COMM_TYPE; its yaml is not in the store. Every other job runs
Megatron's default, the ring ("p2p": Megatron-core's TEDotProductAttention passes `"p2p"` when
`cp_comm_type` is None; NVIDIA/Megatron-LM docs/source/api-guide/context_parallel.rst: the KV
all-gather and reduce-scatter 'are transformed to point-to-point communications in ring
topology'). Transformer Engine's all-to-all does not take MLA (K and V widths differ), so MLA
models use the ring."""


def cp_comm_type(job: TrainJob, hw: Hardware) -> CpComm:
    a = job.model.architecture
    lora_a2a = job.task == "lora" and hw.card.stack in CP_A2A_LORA_STACKS
    return "a2a" if lora_a2a and a.attention != "mla" else "p2p"


def _attention_widths(a: Architecture) -> tuple[float, float, float, float]:
    """Per token and layer, unsharded: the widths of Q, K, V and the attention output O."""
    if a.attention == "mla":
        m = a.mla
        qk = a.num_attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
        v = a.num_attention_heads * m.v_head_dim
        return float(qk), float(qk), float(v), float(v)
    q = float(a.num_attention_heads * a.head_dim)
    kv = float(a.num_kv_heads * a.head_dim)
    return q, kv, kv, q


def cp_bytes_per_token_layer(job: TrainJob, lay: TrainLayout, hw: Hardware) -> tuple[float, float]:
    """(forward, backward) bytes one card sends per local token and layer for context
    parallelism, heads sharded over TP. Transformer Engine (NVIDIA/TransformerEngine @015d225,
    transformer_engine/pytorch/attention/dot_product_attention/context_parallel.py):

    - "a2a" (`AttnFuncWithCPAndQKVOA2A`): forward all-to-alls Q, K, V before attention and O
      after it; backward O and dO before, dQ, dK, dV after (`flash_attn_a2a_communicate`,
      `all_to_all_single`); each sends (cp - 1) / cp of the local tensor;
    - "p2p" (`AttnFuncWithCPAndKVP2P`): cp - 1 ring steps each sending the K and V block it
      holds (`p2p_comm_buffers`, `flash_attn_p2p_communicate`); backward passes K, V and their
      gradients dK, dV (`[kv, dkv]` buffers).

    One byte per element where the recipe runs FP8 attention (Q, K, V, O, dO and dQKV are
    quantised before they are sent: `QKV_quantizer(...)._data`, `dout._data`), else two."""
    if lay.cp <= 1:
        return 0.0, 0.0
    q, k, v, o = (w / lay.tp for w in _attention_widths(job.model.architecture))
    fp8_attn = (job.task == "lora" and fp8_storage(job, hw)
                and hw.card.stack in LORA_FP8_ATTENTION_STACKS)
    e = 1.0 if fp8_attn else 2.0
    if cp_comm_type(job, hw) == "a2a":
        share = (lay.cp - 1) / lay.cp
        return e * (q + k + v + o) * share, e * (2 * o + q + k + v) * share
    steps = lay.cp - 1
    return e * (k + v) * steps, 2 * e * (k + v) * steps


def cp_comm_s(job: TrainJob, lay: TrainLayout, hw: Hardware,
              attn_layer_s: float) -> tuple[float, float]:
    """(forward, backward) exposed seconds of context-parallel communication per layer and
    micro-batch, over the CP group's collective bandwidth (`_group_bps`: ranks `tp` apart,
    assumed, the scale-up domain's all-reduce bus bandwidth when they fit in it, else the NIC).
    The all-to-alls are exposed (the attention waits for them: `current_stream().wait_stream(
    cp_stream)`); each ring step's send overlaps that step's attention, 1 / cp of the layer's
    (backward 2.5 x), and only what exceeds it is exposed."""
    if lay.cp <= 1:
        return 0.0, 0.0
    tokens = lay.micro_batch * job.seq_tokens / lay.cp
    bw = _group_bps(hw, lay.cp, lay.tp)
    f_b, b_b = cp_bytes_per_token_layer(job, lay, hw)
    if cp_comm_type(job, hw) == "a2a":
        return tokens * f_b / bw, tokens * b_b / bw
    steps = lay.cp - 1
    step_f, step_b = tokens * f_b / steps / bw, tokens * b_b / steps / bw
    return (steps * max(0.0, step_f - attn_layer_s / lay.cp),
            steps * max(0.0, step_b - 2.5 * attn_layer_s / lay.cp))


TRAIN_NEUTRAL = {"engine_bandwidth": 1.0, "step_overhead_ms": 0.0, "engine_seq_overhead_us": 0.0}
"""A serving engine's factors that do not apply to a training step (batching overheads)."""


@dataclass(frozen=True)
class TrainingHardware:
    hw: Hardware
    tp_overlap: float
    tier: str
    source: str


def training_hardware(card: str, library, compute: float | None = None,
                      tp_overlap: float | None = None,
                      fp8_compute: float | None = None) -> TrainingHardware:
    """The card as a training framework runs it: the card's microbenchmark factors with the
    training fit's compute factor in place of a serving engine's (its own fit, tier
    `published`, or a same-die sibling's written under its name, tier `assumed`:
    `sim.calibrate.training.SAME_SILICON`; else the pooled fit over every card, `assumed`;
    else neutral, `assumed`).
    The fit's FP8 factor scales the card's FP8 GEMM efficiency (the FP8 GEMMs only; attention
    and BF16 GEMMs of an FP8 run keep theirs).
    `compute` / `tp_overlap` / `fp8_compute` override the fit (calibration)."""
    base = Hardware.load(card, library)
    fit = library.training_fit(card)
    if fit is None:
        c, o, f8 = 1.0, 0.5, 1.0
        tier, src = "assumed", "no training fit: neutral compute, half overlap"
    else:
        c, o, f8 = fit.factors.compute, fit.factors.tp_overlap, fit.factors.fp8_compute
        tier = fit.tier if fit.card == card else "assumed"
        src = f"hardware_specs/training_fits/{fit.card}.yaml ({fit.points} points)"
    c = c if compute is None else compute
    o = o if tp_overlap is None else tp_overlap
    f8 = f8 if fp8_compute is None else fp8_compute
    over = dict(engine_compute=c, **TRAIN_NEUTRAL)
    if "gemm_fp8" in base.factors and f8 != 1.0:
        over["gemm_fp8"] = base.factors["gemm_fp8"].value * f8
    return TrainingHardware(base.with_overrides(**over), o, tier, src)


def _forward(job: TrainJob, lay: TrainLayout,
             hw: Hardware) -> tuple[float, float, float, int, float]:
    """(forward s of one micro-batch on the slowest stage, its attention part, its TP part, its
    transformer layers, one transformer layer's forward s).
    The stages other than the last hold ceil(layers / pp) layers; the last holds the rest and
    the LM head; the slower of the two sets the pace."""
    a = job.model.architecture
    prec = Precision.preset(job.precision)
    sm = StepModel(job.model, hw, Layout(tp=lay.tp, pp=1), prec)
    sm.layer_scale = 1.0 / a.num_layers  # one layer's share
    T = lay.micro_batch * job.seq_tokens / lay.cp
    parts = {k: float(v[0]) for k, v in sm.token_parts(np.array([T])).items()}
    if lay.tp > hw.card.scale_up.domain_size:  # TP across servers: the NIC carries it
        msg = T * a.hidden_size * 2.0
        parts["allreduce"] = 2 * msg * 2 * (lay.tp - 1) / lay.tp / _scale_out_bps(hw)
    b = StepBatch.prefill(lay.micro_batch, job.seq_tokens)
    b = replace(b, prefill_tokens=T, prefill_pairs=b.prefill_pairs / lay.cp,
                prefill_kv_tokens=b.prefill_kv_tokens / lay.cp)
    attn = sm.attention(b)
    layer = sum(parts.values()) + attn
    head = float(sm.lm_head(np.array([T]))[0])
    full, last = stage_layers(a.num_layers, lay.pp), last_stage_layers(a.num_layers, lay.pp)
    n = full if full * layer >= last * layer + head else last
    fwd = n * layer + (head if n == last else 0.0)
    return fwd, n * attn, n * parts["allreduce"], n, layer


def train_step(job: TrainJob, lay: TrainLayout, hw: Hardware,
               tp_overlap: float = 0.0, forward: dict | None = None) -> TrainStep:
    """Time of one optimizer step on `lay`, its parts, throughput, MFU and memory;
    `tp_overlap` of the tensor-parallel communication is hidden under compute. `forward`: a
    cache of forwards by (tp, pp, cp, micro-batch) for one job and card (the layout search)."""
    check_train_layout(job, lay)
    a = job.model.architecture
    key = (lay.tp, lay.pp, lay.cp, lay.micro_batch)  # what the forward depends on
    if forward is None or key not in forward:
        got = _forward(job, lay, hw)
        if forward is None:
            forward = {}
        forward[key] = got
    fwd, attn, tp_s, n_layers, layer_s = forward[key]
    fwd -= tp_overlap * tp_s
    layer_s -= tp_overlap * tp_s / max(n_layers, 1)  # one layer's share of the hidden TP time
    # backward: GEMMs twice the forward (activation and weight gradients; once for LoRA's frozen
    # weights), attention 2.5x (FlashAttention's backward recomputes the scores: 5 matmuls to 2)
    bwd = (1.0 if job.task == "lora" else 2.0) * (fwd - attn) + 2.5 * attn
    # block: the stage's first N layers run their forward again (not the LM head)
    n_rec = min(lay.recompute_layers, n_layers)
    rec = {"full": fwd, "selective": attn, "none": 0.0, "block": n_rec * layer_s}[lay.recompute]
    m = job.global_batch // (lay.dp * lay.micro_batch)
    T = lay.micro_batch * job.seq_tokens / lay.cp
    # FP8 quantisation of GEMM operands: memory-bound kernels apart from the GEMMs, sharded
    # over TP (sequence parallel quantises before gathering); full recomputation redoes the
    # forward's; the weights once per step (per micro-batch when ZeRO-3 gathers them each time)
    q_fwd_b, q_bwd_b = fp8_quantize_bytes_per_token(job, hw)
    bw = hw.mem_bandwidth_bps
    q_fwd = n_layers * T * q_fwd_b / lay.tp / bw
    redo = {"full": 1.0, "block": n_rec / max(n_layers, 1)}.get(lay.recompute, 0.0)
    q_mb = q_fwd * (1.0 + redo) + n_layers * T * q_bwd_b / lay.tp / bw
    q_w = fp8_weight_quantize_bytes(job, lay, hw) / bw * (m if lay.zero >= 3 else 1)
    # context parallelism: each layer's exchange, again for each layer whose forward is redone
    cp_f, cp_b = cp_comm_s(job, lay, hw, attn / max(n_layers, 1))
    cp_redo = {"full": 1.0, "selective": 1.0}.get(lay.recompute, redo)
    cp_mb = n_layers * (cp_f * (1.0 + cp_redo) + cp_b)
    per_mb = fwd + bwd + rec + q_mb + cp_mb
    compute = m * per_mb + q_w
    bubble = (lay.pp - 1) / lay.vp * per_mb
    p2p = 0.0
    if lay.pp > 1:
        # interleaved, a micro-batch crosses vp x as many boundaries, but Megatron overlaps
        # those sends with compute (`overlap_p2p_comm`); 2 m sends stay exposed either way
        p2p = 2 * m * T * a.hidden_size * 2.0 / _group_bps(hw, lay.pp, lay.tp)
    p_local = _local_params(job, lay)
    dp_ranks = lay.dp * lay.cp
    dp_s, window = 0.0, fwd + bwd + q_mb
    if dp_ranks > 1 and (job.task != "lora" or lay.zero >= 3):
        # ZeRO-1/2: one reduce-scatter of the gradients and one all-gather of the parameters
        # per step, overlapped with the last micro-batch's backward and the first's forward;
        # ZeRO-3 also gathers the weights for every micro-batch's forward and backward,
        # prefetched layer by layer under the whole step's compute
        w_bytes = 1.0 if fp8_storage(job, hw) else 2.0  # FP8 weights gather in FP8
        gathers = 2 * m if lay.zero >= 3 else 1
        per_param = gathers * w_bytes + (0.0 if job.task == "lora" else 2.0)  # + bf16 grads
        vol = per_param * p_local * (dp_ranks - 1) / dp_ranks
        dp_s = vol / _group_bps(hw, dp_ranks, lay.tp * lay.pp)
        window = compute if lay.zero >= 3 else fwd + bwd
    dp_exposed = max(0.0, dp_s - window)
    moe_s = 0.0
    if a.moe is not None and lay.ep > 1:
        n_moe = (a.num_layers - a.moe.num_dense_layers) / lay.pp
        msg = T * a.moe.experts_per_token * a.hidden_size * 2.0 * (lay.ep - 1) / lay.ep
        moe_s = 4 * n_moe * m * msg / _group_bps(hw, lay.ep, lay.tp)
    opt_params = 0.0 if job.task == "lora" else p_local / (dp_ranks if lay.zero >= 1 else 1)
    optimizer = opt_params * OPTIMIZER_BYTES_PER_PARAM / hw.mem_bandwidth_bps
    parts = {"forward": m * fwd, "backward": m * bwd, "recompute": m * rec,
             "fp8_quantize": m * q_mb + q_w, "cp_comm": m * cp_mb,
             "pipeline_bubble": bubble, "pipeline_p2p": p2p, "dp_exposed": dp_exposed,
             "moe_all_to_all": moe_s, "optimizer": optimizer}
    step = compute + bubble + p2p + dp_exposed + moe_s + optimizer
    tok_card = job.global_batch * job.seq_tokens / step / lay.cards
    fpt = training_flops_per_token(job.model, job.seq_tokens) * (4 / 6 if job.task == "lora"
                                                                  else 1.0)
    mfu = tok_card * fpt / hw.peak_flops("bf16")  # LoRA: forward + activation gradients only
    return TrainStep(lay, step, parts, tok_card, mfu, memory_per_card(job, lay, hw))


# ---- layout search ---------------------------------------------------------------------------

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


# ---- interruptions ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Interruptions:
    failures_per_day: float
    checkpoint_interval_s: float
    checkpoint_write_s: float
    restart_s: float
    goodput: float
    """Share of wall time that advances training (1 - checkpoint time - lost work - restarts)."""

    def lost_fraction(self) -> float:
        return 1.0 - self.goodput


RESTART_S = 11 * 60.0
"""Automated restart from a checkpoint: median retry 11 minutes (reference-data D2, the B200
cluster report)."""
CHECKPOINT_BYTES_PER_PARAM = 14.0
"""bf16 weights + fp32 master weights and Adam moments (2 + 12 bytes per parameter)."""
CHECKPOINT_WRITE_BPS_PER_CARD = 1e9
"""Checkpoint write bandwidth per card to shared storage (assumed 1 GB/s; synchronous)."""


def lost_fraction(interval_s: float, mtbf_s: float, write_s: float, restart_s: float) -> float:
    """First-order share of wall time lost: writing checkpoints (write / interval), the work
    since the last checkpoint at each failure (interval / 2 on average) and the restart."""
    return write_s / interval_s + (interval_s / 2.0 + restart_s) / mtbf_s


def young_daly_interval(mtbf_s: float, write_s: float) -> float:
    """sqrt(2 x write x MTBF): the checkpoint interval that minimises `lost_fraction`."""
    return math.sqrt(2.0 * write_s * mtbf_s)


def interruptions(model: ModelSpec, cards: int, failures_per_card_year: float,
                  interval_s: float | None = None, restart_s: float = RESTART_S) -> Interruptions:
    """Expected interruptions of a job on `cards` cards (failures in proportion to cards, the
    reliability section's rate), checkpointing at `interval_s` (default Young/Daly)."""
    rate_s = failures_per_card_year * cards / (365.0 * SECONDS_PER_DAY)
    write = total_params(model.architecture) * CHECKPOINT_BYTES_PER_PARAM / (
        cards * CHECKPOINT_WRITE_BPS_PER_CARD) + 10.0
    if rate_s <= 0:
        return Interruptions(0.0, math.inf, write, restart_s, 1.0)
    mtbf = 1.0 / rate_s
    tau = interval_s or young_daly_interval(mtbf, write)
    lost = min(lost_fraction(tau, mtbf, write, restart_s), 0.99)
    return Interruptions(rate_s * SECONDS_PER_DAY, tau, write, restart_s, 1.0 - lost)


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
