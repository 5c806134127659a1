"""FP8 training: what a run stores in FP8 and the traffic of quantising its GEMM operands."""

from __future__ import annotations

from dataclasses import dataclass

from sim.config.model import Architecture
from sim.perf.hardware import Hardware
from sim.perf.train.layout import stage_layers
from sim.perf.train.types import TrainJob, TrainLayout

FP8_STORAGE_STACKS = ("cuda", "rocm")
"""Stacks whose FP8 training runs through Transformer Engine, which also stores FP8 weights
(`fp8_model_init`; NeMo's `fp8_params`, FP8_PARAMS=True in NVIDIA's MLPerf configs; AMD's MLPerf
rows name TransformerEngine) and keeps the GEMM inputs it saves for backward in FP8. Elsewhere
(Intel Gaudi: DeepSpeed ZeRO-3 with a bf16 model and FP8 GEMMs, optimum-habana's Llama 2 70B
LoRA FP8 recipe) FP8 is a compute precision only: weights and saved activations stay 16-bit."""


def fp8_storage(job: TrainJob, hw: Hardware) -> bool:
    return job.precision == "fp8" and hw.card.stack in FP8_STORAGE_STACKS


LORA_FP8_ATTENTION_STACKS = ("cuda",)
"""Stacks whose LoRA recipe runs attention in FP8 (Transformer Engine's FP8 fused attention keeps
Q, K, V and O in FP8 for the backward): NVIDIA's MLPerf Llama 2 70B LoRA recipe sets FP8_DPA=1
with NVTE_FP8_DPA_BWD=1 (config_common.sh of the NeMo LoRA implementation, as copied by Inventec,
jkjung-avt/training_results_v5.0 @7f52382 Inventec/benchmarks/llama2_70b_lora/implementations/
nemo25.09, and by Krai for the H200, mlcommons/training_results_v5.1 @4da2d1c Krai/.../
Cray-XD670-H200-SXM5-141GB_nX_v5.0/config_XD670_common.sh); AMD's recipe sets FP8_DPA=0
(Krai's reproduction, mlcommons/training_results_v5.1 @4da2d1c Krai/benchmarks/llama2_70b_lora/
implementations/PowerEdge-XE9680-MI300X-192GB_n1_v5.0/config_MI300X_1x8x1.sh)."""


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
