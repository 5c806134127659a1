"""Memory per card of a training layout: what it holds, and whether it fits.

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
"""

from __future__ import annotations

from sim.perf.hardware import Hardware
from sim.perf.params import layer_params, total_params
from sim.perf.train.fp8 import LORA_FP8_ATTENTION_STACKS, fp8_storage
from sim.perf.train.layout import in_flight_layer_microbatches, stage_layers
from sim.perf.train.types import TrainJob, TrainLayout, TrainMemory

USABLE_FRACTION = 0.90
"""Share of device memory a training job can hold (CUDA/ROCm context, NCCL buffers, allocator
fragmentation take the rest; assumed, the common 10% headroom)."""


def _local_params(job: TrainJob, lay: TrainLayout) -> float:
    a = job.model.architecture
    experts = sum(layer_params(a, i).experts for i in range(a.num_layers))
    return (total_params(a) - experts) / (lay.tp * lay.pp) + experts / (lay.tp * lay.pp * lay.ep)


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
