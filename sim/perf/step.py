"""Step time of one engine iteration as a per-operator roofline sum.

    step_s = Σ_ops [t0 +] max(bytes_op / achieved_bw, flops_op / (peak · eff_op(shape)))
                      (eff_op: the card's large-GEMM rate x m/(m + m_half) [x its rate
                      beyond the last-level cache where the operands exceed it,
                      `Hardware.cache_share`])
                      [+ t_c · m/(m + m_half)]   (a tiled kernel's fixed time, `gemm_time_s`)
             + layers · fixed non-GEMM kernel time
             + tensor-parallel all-reduces (2 per layer) + fixed per-step overhead
             + per-sequence overhead · running sequences (the engine's sampling and scheduling)

Operators do not overlap (modeling-notes.md: "sum per operator, not one global max"): at large
batch the GEMMs are compute-bound while decode attention stays memory-bound. A step may mix
decode tokens and prefill chunks (chunked prefill); `StepBatch` carries the aggregate sizes the
operators need, so the cost of a step is O(1) in the batch size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

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
                    pairs_w += _window_pairs(int(n), c, window)
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


def _window_pairs(n: int, c: int, w: int) -> int:
    """Σ_{j=0..n-1} min(c + j + 1, w) in closed form (the same integer as the sum): n new
    tokens after c cached ones under a w-token window."""
    k = min(max(w - c, 0), n)  # the first k terms are below the window
    return k * c + k * (k + 1) // 2 + (n - k) * w


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


class StepModel:
    """Step-time evaluator for one (model, hardware, layout, precision).

    The token-count-dependent parts (GEMMs, MoE, elementwise, fixed per-layer time, all-reduce)
    are computed vectorised over an array of token counts, so the same code serves a single
    step (`step`) and the cached tables of `StepCostTable` that the serving simulator uses."""

    def __init__(self, model: ModelSpec, hw: Hardware, layout: Layout, prec: Precision,
                 fused_moe_efficiency: float | None = None):
        """`fused_moe_efficiency`: routed experts run as a serving engine's fused/grouped MoE
        kernel (vLLM's fused_moe: permuted tokens, grouped GEMMs at this fraction of the
        card's dense GEMM efficiency at the same rows per expert, plus the permutation and
        combine traffic, `_moe_permutation_bytes`); None keeps the experts as dense GEMMs
        (training, engine calibration)."""
        a = model.architecture
        self.a, self.hw, self.layout, self.prec = a, hw, layout, prec
        self.fused_moe_efficiency = fused_moe_efficiency
        self.t = t = layout.tp
        self.bw = hw.mem_bandwidth_bps
        self.peak = hw.peak_flops(prec.compute)
        self.peak_bf16 = hw.peak_flops("bf16")
        self.t0 = hw.gemm_latency_s
        self.tc = hw.gemm_compute_fixed_s
        self.layer_scale = 1.0 / layout.pp
        self.full_layers, self.swa_layers, _ = layer_classes(a)
        h = a.hidden_size
        heads = a.num_attention_heads / t
        if a.attention == "mla":
            m = a.mla
            assert m is not None
            qk = m.qk_nope_head_dim + m.qk_rope_head_dim
            self.proj_shapes = [(m.q_lora_rank or h, a.num_attention_heads * qk / t),
                                (h, m.kv_lora_rank + m.qk_rope_head_dim),
                                (m.kv_lora_rank,
                                 a.num_attention_heads * (m.qk_nope_head_dim + m.v_head_dim) / t),
                                (a.num_attention_heads * m.v_head_dim / t, h)]
            if m.q_lora_rank:
                self.proj_shapes.insert(0, (h, m.q_lora_rank))
            self.qkv_width = a.num_attention_heads * qk / t + m.kv_lora_rank
            # decode runs MLA weight-absorbed (attention in the 512+64 latent space); prefill
            # runs it non-absorbed, with per-head q/k of nope+rope dims and v of v_head_dim
            fpp = 2.0 * heads * (m.kv_lora_rank + m.qk_rope_head_dim) + 2.0 * heads * m.kv_lora_rank
            fpp_prefill = 2.0 * heads * qk + 2.0 * heads * m.v_head_dim
        else:
            kvh = kv_heads_per_card(a, t)
            qkv_n = (heads + 2 * kvh) * a.head_dim
            self.proj_shapes = [(h, qkv_n), (heads * a.head_dim, h)]
            self.qkv_width = qkv_n
            fpp = 4.0 * heads * a.head_dim
            fpp_prefill = fpp
        self.flop_per_pair = fpp
        self.flop_per_pair_prefill = fpp_prefill
        self.kv_tok = kv_bytes_per_token_layer(a, t, prec)
        attn_eff = (hw.factors["attention_prefill"].value * hw.factors["gemm_sustained"].value
                    * hw.factors["engine_compute"].value)
        self.attn_rate = self.peak_bf16 * attn_eff  # same power-capped clocks as the GEMMs
        dec_bw = self.bw * hw.factors["attention_decode_bw"].value
        # decode attention is linear in the KV tokens read: max(a·x, b·x) = x·max(a, b)
        self.dec_coef = max(self.kv_tok / dec_bw, fpp / self.attn_rate)
        moe = a.moe
        self.n_dense = a.num_layers if moe is None else moe.num_dense_layers
        self.n_moe = 0 if moe is None else a.num_layers - moe.num_dense_layers
        self.f_dense = float(a.ffn_size if moe is None else (moe.dense_ffn_size or 0))
        self.expert_params = layer_params(a, a.num_layers - 1).expert_each if moe else 0.0
        self.f_card = (moe.expert_ffn_size * moe.experts_per_token if moe else a.ffn_size) / t

    # ---- vectorised building blocks ------------------------------------------------------
    def _gemm(self, m: np.ndarray, k: float, n: float, w_bytes: float, peak: float,
              compute: str) -> np.ndarray:
        """t0 + max(bytes / bw, flops / (peak · eff(m))) for (m×k)·(k×n) GEMMs; 0 where m = 0."""
        byts = k * n * w_bytes + m * (k + n) * ACT_BYTES
        flops = 2.0 * m * k * n
        eff = self.hw.gemm_efficiency(compute, m) * self.hw.cache_share(compute, m, k, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = gemm_time_s(self.t0, self.tc, byts / self.bw, flops / (peak * eff),
                            self.hw.tiled_share(m))
        return np.where(m > 0, t, 0.0)

    def gemm(self, m: np.ndarray, k: float, n: float) -> np.ndarray:
        return self._gemm(m, k, n, self.prec.weight_bytes, self.peak, self.prec.compute)

    def gemm_bf16(self, m: np.ndarray, k: float, n: float) -> np.ndarray:
        return self._gemm(m, k, n, 2.0, self.peak_bf16, "bf16")

    def _dense_ffn(self, T: np.ndarray, f: float) -> np.ndarray:
        h, t = self.a.hidden_size, self.t
        up = 2 * f / t if self.a.ffn_kind == "swiglu" else f / t
        return self.gemm(T, h, up) + self.gemm(T, f / t, h)

    def _moe(self, T: np.ndarray) -> np.ndarray:
        """Routed experts of one layer: router, expert GEMMs (bytes follow the distinct experts
        touched, FLOPs the active ones), the hottest rank setting the time under EP."""
        a, moe, t = self.a, self.a.moe, self.t
        assert moe is not None
        h, E, k = a.hidden_size, moe.num_experts, moe.experts_per_token
        wb = self.prec.weight_bytes
        router = self.gemm_bf16(T, h, E)
        distinct = expected_distinct_experts(E, k, T)
        fpa = 2.0 * self.expert_params
        if self.layout.ep and t > 1:
            mu = T * k / t
            hottest = mu + np.sqrt(np.maximum(mu * (1 - 1 / t), 0.0)) * math.sqrt(2 * math.log(t))
            experts_card = distinct / t
            # the rank holding the most distinct experts sets the weight traffic: each rank owns
            # E/t experts, each touched with probability q; Gaussian approximation of the max
            q = 1.0 - (1.0 - k / E) ** T
            per_rank = E / t
            hot_experts = np.minimum(per_rank, per_rank * q + np.sqrt(per_rank * q * (1 - q))
                                     * math.sqrt(2 * math.log(t)))
            byts = hot_experts * self.expert_params * wb + hottest * 2 * h * ACT_BYTES
            flops = hottest * fpa
            m_per = hottest / np.maximum(experts_card, 1e-9)
            a2a = 2 * T * k * h * ACT_BYTES * (t - 1) / t / t
            comm = 2 * self.hw.allreduce_latency_s + a2a / (
                self.hw.factors["allreduce_busbw"].value * self.hw.link_bandwidth_bps(t))
        else:
            byts = distinct * self.expert_params * wb / t + T * k * 2 * h * ACT_BYTES
            flops = T * k * fpa / t
            m_per = T * k / np.maximum(distinct, 1e-9)
            comm = 0.0
        f_rank = moe.expert_ffn_size / (1 if self.layout.ep and t > 1 else t)
        eff = (self.hw.gemm_efficiency(self.prec.compute, m_per)  # the gate/up GEMM's operands
               * self.hw.cache_share(self.prec.compute, m_per, h, 2 * f_rank))
        perm = 0.0
        if self.fused_moe_efficiency is not None:
            eff = eff * self.fused_moe_efficiency
            ep = bool(self.layout.ep and t > 1)
            perm = self._moe_permutation_bytes(hottest if ep else T * k, T, ep) / self.bw
        with np.errstate(divide="ignore", invalid="ignore"):
            experts = (gemm_time_s(3 * self.t0, 3 * self.tc, byts / self.bw,
                                   flops / (self.peak * eff), self.hw.tiled_share(m_per))
                       + comm + perm)
        return np.where(T > 0, router + experts, 0.0)

    def _moe_permutation_bytes(self, pairs: np.ndarray, T: np.ndarray, ep: bool) -> np.ndarray:
        """Activation traffic of vLLM's fused-MoE path beyond the gathered input rows and the
        expert outputs (already in the expert bytes): the gate/up output (`intermediate_cache1`,
        2f per (token, expert) pair) written by the first grouped GEMM, the activated
        intermediate (`intermediate_cache2`, f) read by the second (the activation kernel's own
        read and write are in the elementwise term), and the top-k combine reading every
        pair's h-wide output (`intermediate_cache3`) and writing one row per token. f is the
        expert width per card (sharded by TP, whole under EP)."""
        a, moe, t = self.a, self.a.moe, self.t
        assert moe is not None
        f = moe.expert_ffn_size / (1 if ep else t)
        h = a.hidden_size
        return (pairs * (3 * f + h) + T * h) * ACT_BYTES

    def token_parts(self, T: np.ndarray) -> dict[str, np.ndarray]:
        """Parts of a step that depend only on the number of tokens T it processes (per stage)."""
        T = np.asarray(T, dtype=float)
        a, t, ls = self.a, self.t, self.layer_scale
        h = a.hidden_size
        proj = sum(self.gemm(T, k, n) for k, n in self.proj_shapes)
        gemm = a.num_layers * proj * ls
        moe = np.zeros_like(T)
        if self.n_dense:
            gemm = gemm + self.n_dense * self._dense_ffn(T, self.f_dense) * ls
        if self.n_moe:
            moe = self.n_moe * self._moe(T) * ls
            if a.moe and a.moe.num_shared_experts:
                gemm = gemm + self.n_moe * self._dense_ffn(
                    T, float(a.moe.num_shared_experts * a.moe.expert_ffn_size)) * ls
        # elementwise, bandwidth-bound: two fused residual-add + RMSNorm (read x and residual,
        # write both: 4·h each) and the SwiGLU activation (read 2f, write f). RoPE and the KV
        # write are fused into attention; GEMM inputs/outputs are counted in the GEMMs.
        elem = a.num_layers * T * (8 * h + 3 * self.f_card) * ACT_BYTES / self.bw * ls
        fixed = np.where(T > 0, a.num_layers * self.hw.layer_fixed_s * ls, 0.0)
        ar = np.zeros_like(T)
        if t > 1:  # 2 all-reduces per layer of the 16-bit activations
            ar = np.where(T > 0, 2 * a.num_layers * ls * self.hw.allreduce_s(
                np.maximum(T, 1.0) * h * ACT_BYTES, t), 0.0)
        return {"gemm": gemm, "moe": moe, "elementwise": elem, "layer_fixed": fixed,
                "allreduce": ar}

    def lm_head(self, logits: np.ndarray) -> np.ndarray:
        """LM head on the last stage: only sequences emitting a token need logits."""
        return self.gemm_bf16(np.asarray(logits, dtype=float), self.a.hidden_size,
                              self.a.vocab_size / self.t)

    def attention(self, batch: StepBatch) -> float:
        """Attention core over all layers of the stage (decode and prefill parts)."""
        def core(dec_ctx: float, pairs: float, kv_read: float) -> float:
            s = dec_ctx * self.dec_coef if batch.decode_seqs > 0 else 0.0
            if batch.prefill_tokens > 0:
                s += max((kv_read * self.kv_tok + batch.prefill_tokens * self.qkv_width
                          * ACT_BYTES) / self.bw,
                         pairs * self.flop_per_pair_prefill / self.attn_rate)
            return s

        total = self.full_layers * core(batch.decode_context, batch.prefill_pairs,
                                        batch.prefill_kv_tokens)
        if self.swa_layers:
            def pick(w, full):
                return full if w is None else w
            total += self.swa_layers * core(
                pick(batch.decode_context_window, batch.decode_context),
                pick(batch.prefill_pairs_window, batch.prefill_pairs),
                pick(batch.prefill_kv_tokens_window, batch.prefill_kv_tokens))
        return total * self.layer_scale

    def step(self, batch: StepBatch) -> StepTime:
        parts = {"gemm": 0.0, "attention": 0.0, "moe": 0.0, "elementwise": 0.0,
                 "layer_fixed": 0.0, "lm_head": 0.0, "allreduce": 0.0,
                 "overhead": self.hw.step_overhead_s,
                 "per_sequence": self.hw.seq_overhead_s * (batch.decode_seqs + batch.prefill_seqs)}
        if batch.tokens > 0:
            for k, v in self.token_parts(np.array([batch.tokens])).items():
                parts[k] = float(v[0])
            parts["attention"] = self.attention(batch)
            parts["lm_head"] = float(self.lm_head(np.array([batch.logits_tokens]))[0])
        return StepTime(sum(parts.values()), parts)


class StepCostTable:
    """Cached step costs for the serving simulator: token-dependent parts tabulated for every
    token count up to `max_tokens` and the LM head for every logits count up to `max_seqs`, so a
    step costs a few additions. Values equal `StepModel.step` (same arithmetic)."""

    def __init__(self, sm: StepModel, max_tokens: int, max_seqs: int,
                 graph_max_tokens: int = 0, graph_layer_fixed_scale: float = 1.0):
        """`graph_max_tokens` > 0: steps of 1..that many tokens replay a CUDA graph, their
        fixed per-layer time (eager microbenchmarks) scaled by `graph_layer_fixed_scale`."""
        self.sm = sm
        T = np.arange(max_tokens + 1, dtype=float)
        parts = sm.token_parts(T)
        if graph_max_tokens > 0:
            graphed = (T >= 1) & (T <= graph_max_tokens)
            parts["layer_fixed"] = np.where(graphed, parts["layer_fixed"]
                                            * graph_layer_fixed_scale, parts["layer_fixed"])
        self.token_s = sum(parts[k] for k in ("gemm", "moe", "elementwise", "layer_fixed",
                                              "allreduce")).tolist()
        self.lm_s = sm.lm_head(np.arange(max_seqs + 1, dtype=float)).tolist()
        self.overhead_s = sm.hw.step_overhead_s
        self.seq_s = sm.hw.seq_overhead_s
        self.dec_coef_full = sm.dec_coef * sm.full_layers * sm.layer_scale
        self.dec_coef_swa = sm.dec_coef * sm.swa_layers * sm.layer_scale

    def token_cost(self, tokens: int) -> float:
        if tokens < len(self.token_s):
            return self.token_s[tokens]
        p = self.sm.token_parts(np.array([float(tokens)]))
        return float(sum(v[0] for v in p.values()))

    def lm_cost(self, logits: int) -> float:
        if logits < len(self.lm_s):
            return self.lm_s[logits]
        return float(self.sm.lm_head(np.array([float(logits)]))[0])

    def cost(self, batch: StepBatch) -> float:
        """Step time (s) of `batch`."""
        T = int(round(batch.tokens))
        if T <= 0:
            return self.overhead_s
        return (self.token_cost(T) + self.lm_cost(int(round(batch.logits_tokens)))
                + self.sm.attention(batch) + self.overhead_s
                + self.seq_s * (batch.decode_seqs + batch.prefill_seqs))


def gemm_time_s(t0_s, tc_s, memory_s, compute_s, tiled_share):
    """One GEMM kernel: t0 + max(memory, compute) + t_c · tiled share.

    t0 is the fixed time of every kernel; t_c the further fixed time a compute-bound tiled
    kernel takes (prologue, epilogue, scaling: the time-vs-FLOPs intercept of large square
    shapes, `GemmCalibration.compute_fixed_us`). Libraries choose the kernel by the GEMM's
    shape: a skinny decode GEMM of a few rows runs a GEMV-like or split-K kernel that does
    not pay t_c, a GEMM of many rows a tiled one. `tiled_share` is that choice as a function
    of the rows alone, m / (m + m_half) (the same rows scale as the GEMM efficiency,
    `Hardware.gemm_efficiency`), so the charge does not depend on the card's rates and more
    bandwidth or compute never slows a GEMM (a share computed from compute and memory time,
    as before, made faster memory raise the charge)."""
    return t0_s + np.maximum(memory_s, compute_s) + tc_s * tiled_share


def step_time(model: ModelSpec, hw: Hardware, layout: Layout, prec: Precision,
              batch: StepBatch) -> StepTime:
    """Time (s) of one engine step on one pipeline stage of a replica (all layers when pp=1)."""
    return StepModel(model, hw, layout, prec).step(batch)


def expected_distinct_experts(num_experts: int, top_k: int, tokens: float) -> float:
    """E·(1 - (1 - k/E)^B): distinct experts a batch of B tokens touches under uniform routing
    (modeling-notes.md; DeepSeek-V3 at B = 64 touches ≈ 87% of 256)."""
    return num_experts * (1.0 - (1.0 - top_k / num_experts) ** tokens)
