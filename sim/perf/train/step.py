"""One optimizer step on a parallel layout: its time, parts and MFU.

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

Memory per card: `sim.perf.train.memory`.

What the framework achieves beyond the card's microbenchmarks (one compute factor per card) is
fitted to published, non-MLPerf training tables (`hardware_specs/training_tables/`,
`sim.calibrate.training`); MLPerf Training results only validate. MFU is an output.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sim.config.model import ModelSpec
from sim.perf.hardware import Hardware
from sim.perf.memory import Layout
from sim.perf.params import active_params
from sim.perf.precision import Precision
from sim.perf.step import StepBatch, StepModel
from sim.perf.train.context_parallel import cp_comm_s
from sim.perf.train.fp8 import (fp8_quantize_bytes_per_token, fp8_storage,
                                fp8_weight_quantize_bytes)
from sim.perf.train.layout import check_train_layout, last_stage_layers, stage_layers
from sim.perf.train.memory import _local_params, memory_per_card
from sim.perf.train.network import _group_bps, _scale_out_bps
from sim.perf.train.types import TrainJob, TrainLayout, TrainStep

OPTIMIZER_BYTES_PER_PARAM = 28.0


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
