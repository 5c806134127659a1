"""Parameter counts derived from an architecture (counts, not billions).

Counted: embeddings, untied LM head, attention projections (GQA/MHA/MLA, with biases where the
architecture has them), FFN (SwiGLU: 3·h·f; GELU: 2·h·f), MoE routers, routed and shared experts,
RMSNorm weights. Not counted: rotary tables (not parameters), multi-token-prediction modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config.model import Architecture


@dataclass(frozen=True)
class LayerParams:
    """Parameters of one decoder layer, split by where they sit (for memory and FLOP counts)."""

    attention: float
    dense_ffn: float  # dense FFN or shared experts: every token uses all of it
    experts: float  # routed experts, all of them
    expert_each: float  # one routed expert
    router: float
    norms: float


def attention_params(a: Architecture) -> float:
    h = a.hidden_size
    if a.attention == "mla":
        m = a.mla
        assert m is not None
        qk_head = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            q = h * m.q_lora_rank + m.q_lora_rank * a.num_attention_heads * qk_head + m.q_lora_rank
        else:
            q = h * a.num_attention_heads * qk_head
        kv = (h * (m.kv_lora_rank + m.qk_rope_head_dim)
              + m.kv_lora_rank * a.num_attention_heads * (m.qk_nope_head_dim + m.v_head_dim)
              + m.kv_lora_rank)
        o = a.num_attention_heads * m.v_head_dim * h
        return float(q + kv + o)
    q_dim = a.num_attention_heads * a.head_dim
    kv_dim = a.num_kv_heads * a.head_dim
    p = h * q_dim + 2 * h * kv_dim + q_dim * h
    if a.qkv_bias:
        p += q_dim + 2 * kv_dim + h  # q/k/v biases and the output bias
    return float(p)


def ffn_params(hidden: int, ffn: int, kind: str) -> float:
    return float((3 if kind == "swiglu" else 2) * hidden * ffn)


def layer_params(a: Architecture, layer_index: int) -> LayerParams:
    h = a.hidden_size
    att = attention_params(a)
    norms = 2.0 * h
    moe = a.moe
    if moe is None:
        return LayerParams(att, ffn_params(h, a.ffn_size, a.ffn_kind), 0.0, 0.0, 0.0, norms)
    if layer_index < moe.num_dense_layers:
        assert moe.dense_ffn_size is not None
        return LayerParams(att, ffn_params(h, moe.dense_ffn_size, a.ffn_kind), 0.0, 0.0, 0.0,
                           norms)
    each = ffn_params(h, moe.expert_ffn_size, a.ffn_kind)
    if a.qkv_bias:  # architectures with biases (GPT-OSS) also bias their experts and router
        each += 2 * moe.expert_ffn_size + h
    shared = moe.num_shared_experts * ffn_params(h, moe.expert_ffn_size, a.ffn_kind)
    router = h * moe.num_experts + (moe.num_experts if a.qkv_bias else 0)
    return LayerParams(att, shared, moe.num_experts * each, each, float(router), norms)


def embedding_params(a: Architecture) -> float:
    """Input embedding plus the LM head when untied."""
    e = a.vocab_size * a.hidden_size
    return float(e if a.tied_embeddings else 2 * e)


def total_params(a: Architecture) -> float:
    layers = sum(_layer_total(layer_params(a, i)) for i in range(a.num_layers))
    return layers + embedding_params(a) + a.hidden_size  # + final norm


def active_params(a: Architecture) -> float:
    """Parameters one token uses: routed experts count `experts_per_token` times one expert."""
    k = a.moe.experts_per_token if a.moe else 0
    layers = 0.0
    for i in range(a.num_layers):
        lp = layer_params(a, i)
        layers += lp.attention + lp.dense_ffn + lp.router + lp.norms + (
            k * lp.expert_each if lp.experts else 0.0)
    return layers + embedding_params(a) + a.hidden_size


def _layer_total(lp: LayerParams) -> float:
    return lp.attention + lp.dense_ffn + lp.experts + lp.router + lp.norms
