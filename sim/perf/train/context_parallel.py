"""Context parallelism's exchange per layer and micro-batch, as Transformer Engine runs it."""

from __future__ import annotations

from typing import Literal

from sim.config.model import Architecture
from sim.perf.hardware import Hardware
from sim.perf.train.fp8 import LORA_FP8_ATTENTION_STACKS, fp8_storage
from sim.perf.train.network import _group_bps
from sim.perf.train.types import TrainJob, TrainLayout

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
