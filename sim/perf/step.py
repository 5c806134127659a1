"""Step time of one engine iteration as a per-operator roofline sum.

    step_s = Σ_ops [t0 +] max(bytes_op / achieved_bw, flops_op / (peak · eff_op(shape)))
             + layers · fixed non-GEMM kernel time
             + tensor-parallel all-reduces (2 per layer) + fixed per-step overhead

Operators do not overlap (modeling-notes.md: "sum per operator, not one global max"): at large
batch the GEMMs are compute-bound while decode attention stays memory-bound. A step may mix
decode tokens and prefill chunks (chunked prefill); `StepBatch` carries the aggregate sizes the
operators need, so the cost of a step is O(1) in the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.config.model import ModelSpec
from sim.perf.hardware import Hardware
from sim.perf.memory import Layout, kv_bytes_per_token_layer, kv_heads_per_card, layer_classes
from sim.perf.params import layer_params
from sim.perf.precision import Precision

ACT_BYTES = 2.0  # activations between kernels are 16-bit (see Precision.act_bytes)


@dataclass(frozen=True)
class StepBatch:
    """Aggregate shape of one step.

    decode_seqs: sequences generating one token each; decode_context: Σ of their KV lengths.
    prefill_tokens: Σ new prompt tokens this step; prefill_seqs: chunks in the step;
    prefill_pairs: Σ query-key pairs of the causal prefill attention, Σ n·c + n(n+1)/2 for a chunk
    of n new tokens after c cached ones; prefill_kv_tokens: Σ (c + n), the KV each chunk reads.
    logits_tokens: sequences that emit a token this step (decodes and finishing prefills).
    The *_window fields are the same sums with every context capped at the sliding window."""

    decode_seqs: float = 0.0
    decode_context: float = 0.0
    prefill_tokens: float = 0.0
    prefill_seqs: float = 0.0
    prefill_pairs: float = 0.0
    prefill_kv_tokens: float = 0.0
    logits_tokens: float = 0.0
    decode_context_window: float | None = None
    prefill_pairs_window: float | None = None
    prefill_kv_tokens_window: float | None = None

    @property
    def tokens(self) -> float:
        return self.decode_seqs + self.prefill_tokens

    @classmethod
    def decode(cls, batch: float, context_tokens: float, window: int | None = None) -> "StepBatch":
        """`batch` sequences, each with `context_tokens` of KV, each generating one token."""
        cw = min(context_tokens, window) if window else None
        return cls(decode_seqs=batch, decode_context=batch * context_tokens,
                   logits_tokens=batch, decode_context_window=None if cw is None else batch * cw)

    @classmethod
    def prefill(cls, seqs: float, prompt_tokens: float, prompt_tokens_sq: float | None = None,
                window: int | None = None) -> "StepBatch":
        """`seqs` whole prompts of mean length `prompt_tokens` (second moment
        `prompt_tokens_sq`, default the square of the mean)."""
        l2 = prompt_tokens**2 if prompt_tokens_sq is None else prompt_tokens_sq
        pairs = seqs * (l2 + prompt_tokens) / 2
        pw = kvw = None
        if window:
            # each query attends to at most `window` keys
            pw = seqs * _capped_pairs(prompt_tokens, window)
            kvw = seqs * min(prompt_tokens, window)
        return cls(prefill_tokens=seqs * prompt_tokens, prefill_seqs=seqs, prefill_pairs=pairs,
                   prefill_kv_tokens=seqs * prompt_tokens, logits_tokens=seqs,
                   prefill_pairs_window=pw, prefill_kv_tokens_window=kvw)

    @classmethod
    def of_sequences(cls, new_tokens, context_tokens, window: int | None = None,
                     emits=None) -> "StepBatch":
        """From explicit per-sequence (new tokens, cached tokens) lists; `emits[i]` says whether
        sequence i produces a token this step (default: all)."""
        dec_n = dec_c = pre_t = pre_s = pairs = kv = logits = 0.0
        dec_cw = pairs_w = kv_w = 0.0
        for i, (n, c) in enumerate(zip(new_tokens, context_tokens)):
            if n <= 0:
                continue
            if emits is None or emits[i]:
                logits += 1
            if n == 1:
                dec_n += 1
                dec_c += c + 1
                if window:
                    dec_cw += min(c + 1, window)
            else:
                pre_t += n
                pre_s += 1
                pairs += n * c + n * (n + 1) / 2
                kv += c + n
                if window:
                    pairs_w += sum(min(c + j + 1, window) for j in range(int(n)))
                    kv_w += min(c + n, window)
        return cls(dec_n, dec_c, pre_t, pre_s, pairs, kv, logits,
                   dec_cw if window else None, pairs_w if window else None,
                   kv_w if window else None)

    def __add__(self, other: "StepBatch") -> "StepBatch":
        def add(a, b):
            return None if a is None and b is None else (a or 0.0) + (b or 0.0)
        return StepBatch(
            self.decode_seqs + other.decode_seqs, self.decode_context + other.decode_context,
            self.prefill_tokens + other.prefill_tokens, self.prefill_seqs + other.prefill_seqs,
            self.prefill_pairs + other.prefill_pairs,
            self.prefill_kv_tokens + other.prefill_kv_tokens,
            self.logits_tokens + other.logits_tokens,
            add(self.decode_context_window, other.decode_context_window),
            add(self.prefill_pairs_window, other.prefill_pairs_window),
            add(self.prefill_kv_tokens_window, other.prefill_kv_tokens_window))


def _capped_pairs(n: float, w: int) -> float:
    """Σ_{j=1..n} min(j, w): causal pairs of an n-token prompt under a w-token window."""
    if n <= w:
        return n * (n + 1) / 2
    return w * (w + 1) / 2 + (n - w) * w


@dataclass(frozen=True)
class StepTime:
    """A step's time (s) and its parts, so reports can show where the time goes."""

    total_s: float
    parts: dict[str, float] = field(hash=False)


class _Roofline:
    """Per-operator roofline evaluator for one (model, hardware, layout, precision)."""

    def __init__(self, model: ModelSpec, hw: Hardware, layout: Layout, prec: Precision):
        self.a = model.architecture
        self.hw = hw
        self.t = layout.tp
        self.layout = layout
        self.prec = prec
        self.bw = hw.mem_bandwidth_bps
        self.peak = hw.peak_flops(prec.compute)
        self.peak_attn = hw.peak_flops("bf16")
        self.attn_eff = (hw.factors["attention_prefill"].value
                         * hw.factors["gemm_sustained"].value)  # same power-capped clocks
        self.dec_bw = self.bw * hw.factors["attention_decode_bw"].value
        self.t0 = hw.gemm_latency_s

    def gemm(self, m: float, k: float, n: float, w_bytes: float | None = None) -> float:
        """t0 + max(bytes / bw, flops / (peak · eff(m))) for an (m×k)·(k×n) GEMM; t0 is the
        calibrated per-kernel latency."""
        if m <= 0:
            return 0.0
        wb = self.prec.weight_bytes if w_bytes is None else w_bytes
        byts = k * n * wb + m * (k + n) * ACT_BYTES
        flops = 2.0 * m * k * n
        eff = self.hw.gemm_efficiency(self.prec.compute, m)
        return self.t0 + max(byts / self.bw, flops / (self.peak * eff))

    def gemm_bf16(self, m: float, k: float, n: float) -> float:
        if m <= 0:
            return 0.0
        byts = k * n * 2.0 + m * (k + n) * ACT_BYTES
        flops = 2.0 * m * k * n
        eff = self.hw.gemm_efficiency("bf16", m)
        return self.t0 + max(byts / self.bw, flops / (self.hw.peak_flops("bf16") * eff))


def step_time(model: ModelSpec, hw: Hardware, layout: Layout, prec: Precision,
              batch: StepBatch) -> StepTime:
    """Time (s) of one engine step on one pipeline stage of a replica (all layers when pp=1)."""
    r = _Roofline(model, hw, layout, prec)
    a = r.a
    t = layout.tp
    h = a.hidden_size
    T = batch.tokens
    parts = {"gemm": 0.0, "attention": 0.0, "moe": 0.0, "elementwise": 0.0, "layer_fixed": 0.0,
             "lm_head": 0.0, "allreduce": 0.0, "overhead": hw.step_overhead_s}
    if T <= 0:
        return StepTime(parts["overhead"], parts)

    # ---- attention projections (same for every layer) ------------------------------------
    heads = a.num_attention_heads / t
    if a.attention == "mla":
        m = a.mla
        assert m is not None
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        proj = (r.gemm(T, h, m.q_lora_rank) if m.q_lora_rank else 0.0)
        proj += r.gemm(T, m.q_lora_rank or h, a.num_attention_heads * qk / t)
        proj += r.gemm(T, h, m.kv_lora_rank + m.qk_rope_head_dim)
        proj += r.gemm(T, m.kv_lora_rank,
                       a.num_attention_heads * (m.qk_nope_head_dim + m.v_head_dim) / t)
        proj += r.gemm(T, a.num_attention_heads * m.v_head_dim / t, h)
        qkv_width = a.num_attention_heads * qk / t + m.kv_lora_rank
        flop_per_pair = 2.0 * heads * (m.kv_lora_rank + m.qk_rope_head_dim) + 2.0 * heads * (
            m.kv_lora_rank)
    else:
        kvh = kv_heads_per_card(a, t)
        qkv_n = (heads + 2 * kvh) * a.head_dim
        proj = r.gemm(T, h, qkv_n) + r.gemm(T, heads * a.head_dim, h)
        qkv_width = qkv_n
        flop_per_pair = 4.0 * heads * a.head_dim

    kv_tok = kv_bytes_per_token_layer(a, t, prec)

    def attention_core(windowed: bool) -> float:
        dec_ctx = batch.decode_context_window if windowed and batch.decode_context_window is not None \
            else batch.decode_context
        pairs = batch.prefill_pairs_window if windowed and batch.prefill_pairs_window is not None \
            else batch.prefill_pairs
        kv_read = batch.prefill_kv_tokens_window if windowed and \
            batch.prefill_kv_tokens_window is not None else batch.prefill_kv_tokens
        s = 0.0
        if batch.decode_seqs > 0:
            s += max(dec_ctx * kv_tok / r.dec_bw,
                     dec_ctx * flop_per_pair / (r.peak_attn * r.attn_eff))
        if batch.prefill_tokens > 0:
            s += max((kv_read * kv_tok + batch.prefill_tokens * qkv_width * ACT_BYTES) / r.bw,
                     pairs * flop_per_pair / (r.peak_attn * r.attn_eff))
        return s

    full_layers, swa_layers, _ = layer_classes(a)
    layer_scale = 1.0 / layout.pp
    attn = (full_layers * attention_core(False) + swa_layers * attention_core(True)) * layer_scale
    parts["gemm"] += a.num_layers * proj * layer_scale
    parts["attention"] += attn

    # ---- FFN per layer class ----------------------------------------------------------------
    moe = a.moe

    def dense_ffn(f: float) -> float:
        if a.ffn_kind == "swiglu":
            return r.gemm(T, h, 2 * f / t) + r.gemm(T, f / t, h)
        return r.gemm(T, h, f / t) + r.gemm(T, f / t, h)

    n_dense = a.num_layers if moe is None else moe.num_dense_layers
    n_moe = 0 if moe is None else a.num_layers - moe.num_dense_layers
    if n_dense:
        f_dense = a.ffn_size if moe is None else moe.dense_ffn_size
        parts["gemm"] += n_dense * dense_ffn(float(f_dense)) * layer_scale
    if n_moe:
        assert moe is not None
        lp = layer_params(a, a.num_layers - 1)
        parts["moe"] += n_moe * _moe_layer_s(r, batch, lp.expert_each) * layer_scale
        if moe.num_shared_experts:
            parts["gemm"] += n_moe * dense_ffn(
                float(moe.num_shared_experts * moe.expert_ffn_size)) * layer_scale

    # ---- elementwise, bandwidth-bound: two fused residual-add + RMSNorm (read x and residual,
    # write both: 4·h each) and the SwiGLU activation (read 2f, write f). RoPE and the KV write
    # are fused into attention; GEMM inputs/outputs are counted in the GEMMs.
    f_card = (moe.expert_ffn_size * moe.experts_per_token if moe else a.ffn_size) / t
    elem_bytes = T * (8 * h + 3 * f_card) * ACT_BYTES
    parts["elementwise"] += a.num_layers * elem_bytes / r.bw * layer_scale
    parts["layer_fixed"] += a.num_layers * hw.factors["layer_fixed_us"].value * 1e-6 * layer_scale

    # ---- LM head on the last stage: only sequences emitting a token need logits -------------
    parts["lm_head"] += r.gemm_bf16(batch.logits_tokens, h, a.vocab_size / t)

    # ---- tensor-parallel all-reduces: 2 per layer, 16-bit activations ------------------------
    if t > 1:
        per_ar = hw.allreduce_s(T * h * ACT_BYTES, t)
        parts["allreduce"] += 2 * a.num_layers * per_ar * layer_scale

    return StepTime(sum(parts.values()), parts)


def expected_distinct_experts(num_experts: int, top_k: int, tokens: float) -> float:
    """E·(1 - (1 - k/E)^B): distinct experts a batch of B tokens touches under uniform routing
    (modeling-notes.md; DeepSeek-V3 at B = 64 touches ≈ 87% of 256)."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)


def _moe_layer_s(r: _Roofline, batch: StepBatch, expert_params: float) -> float:
    """Routed-expert FFN of one layer: router, expert GEMMs (bytes follow distinct experts
    touched, FLOPs follow active experts), with the hottest rank setting the time under EP."""
    a = r.a
    moe = a.moe
    assert moe is not None
    T = batch.tokens
    h = a.hidden_size
    E, k, t = moe.num_experts, moe.experts_per_token, r.t
    router = r.gemm_bf16(T, h, E)
    distinct = expected_distinct_experts(E, k, T)
    flops_per_assignment = 2.0 * expert_params
    if r.layout.ep and t > 1:
        mu = T * k / t
        hottest = mu + math.sqrt(max(mu * (1 - 1 / t), 0.0)) * math.sqrt(2 * math.log(t))
        experts_card = distinct / t
        byts = experts_card * expert_params * r.prec.weight_bytes + hottest * 2 * h * ACT_BYTES
        flops = hottest * flops_per_assignment
        m_per_expert = hottest / max(experts_card, 1e-9)
        # dispatch and combine all-to-alls of the routed activations
        a2a_bytes = 2 * T * k * h * ACT_BYTES * (t - 1) / t / t
        comm = 2 * r.hw.factors["allreduce_latency_us"].value * 1e-6 + a2a_bytes / (
            r.hw.factors["allreduce_busbw"].value * r.hw.link_bandwidth_bps(t))
    else:
        byts = distinct * expert_params * r.prec.weight_bytes / t + T * k * 2 * h * ACT_BYTES
        flops = T * k * flops_per_assignment / t
        m_per_expert = T * k / max(distinct, 1e-9)
        comm = 0.0
    eff = r.hw.gemm_efficiency(r.prec.compute, m_per_expert)
    # three grouped-GEMM kernels (gate, up, down; or gate_up fused + down + routing) per layer
    return router + 3 * r.t0 + max(byts / r.bw, flops / (r.peak * eff)) + comm

