"""Memory per card: weights, KV cache, activations, runtime reserve; what fits.

    usable = capacity · memory_utilization - runtime reserve
    weights/card = (layers' weights) / (TP·PP) + embeddings/TP (kept in 16 bit)
    KV bytes/token/card (GQA) = 2 · (layers/PP) · max(kv_heads/TP, 1) · head_dim · kv_bytes
    KV bytes/token/card (MLA) = (layers/PP) · (kv_lora_rank + rope_dim) · kv_bytes  (replicated)
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config.model import Architecture, ModelSpec
from sim.perf.hardware import Hardware
from sim.perf.params import embedding_params, layer_params
from sim.perf.precision import BYTES_PER_ELEMENT, Precision

MEMORY_UTILIZATION = 0.90
"""Fraction of device memory the engine may use: vLLM's `gpu_memory_utilization` default (0.9,
vLLM engine arguments docs, 0.x through 0.15); TensorRT-LLM's KV fraction defaults similarly."""

RUNTIME_RESERVE_BYTES = 2.0e9
"""CUDA/HIP context, cuBLAS/hipBLASLt workspaces, NCCL buffers and CUDA-graph pools, ~1-3 GB per
process in vLLM's startup profile; an assumption, stated in the README limits."""

VLLM_NON_TORCH_BYTES_TP1 = 0.26 * 2**30
"""Memory vLLM's start-up profile finds outside PyTorch's allocator, grown since its first
snapshot, on a single card: 'non_torch_memory takes 0.26GiB' in a vLLM start-up log on one H100
(79.25 GiB), no tensor parallelism (xinyuwei-david/david-share, Deep-Learning/Phi4/readme.md,
commit 08a013b6; independent). vLLM V1 (0.10-0.11) subtracts only this, the weights and the
profile run's torch activation peak from total x gpu_memory_utilization
(vllm/v1/worker/gpu_worker.py, commit 35d5cda1: `requested_memory - non_kv_cache_memory`;
vLLM's `memory_profiling`: non_kv_cache_memory = non_torch_increase + torch_peak_increase +
weights_memory, non_torch_increase measured from the snapshot taken when the worker starts, so the
CUDA context is not in it). CUDA graphs are captured after the KV cache is allocated, from the
memory above that share (the KV cache size is logged before 'Graph capturing finished' in the
same log). With tensor parallelism NCCL and the custom all-reduce buffers add to it; no measured
figure was found: RUNTIME_RESERVE_BYTES stays the assumption there."""

TP_CHOICES = (1, 2, 4, 8, 16, 32, 64)

LOGITS_ROWS = 1024
"""Rows of FP32 logits budgeted per step: one per sampling sequence (vLLM's max_num_seqs is 256
by default; throughput deployments run up to ~1,000)."""


@dataclass(frozen=True)
class Layout:
    """How one model replica is split over cards. `ep`: routed experts are placed whole on the
    TP ranks (expert parallelism) instead of being sharded by tensor parallelism."""

    tp: int = 1
    pp: int = 1
    ep: bool = False

    @property
    def cards(self) -> int:
        return self.tp * self.pp


class LayoutError(ValueError):
    pass


def check_layout(model: ModelSpec, layout: Layout) -> None:
    a = model.architecture
    if layout.tp < 1 or layout.pp < 1:
        raise LayoutError(f"tp and pp must be >= 1 (got tp={layout.tp}, pp={layout.pp})")
    if a.num_attention_heads % layout.tp:
        raise LayoutError(f"tensor parallel {layout.tp} does not divide num_attention_heads "
                          f"{a.num_attention_heads} of {model.name}")
    if layout.pp > a.num_layers:
        raise LayoutError(f"pipeline parallel {layout.pp} exceeds num_layers {a.num_layers}")
    if layout.ep and a.moe is not None and a.moe.num_experts % layout.tp:
        raise LayoutError(f"expert parallel over {layout.tp} ranks does not divide num_experts "
                          f"{a.moe.num_experts}")


def weights_bytes_per_card(model: ModelSpec, layout: Layout, prec: Precision) -> float:
    a = model.architecture
    layer_total = 0.0
    for i in range(a.num_layers):
        lp = layer_params(a, i)
        layer_total += lp.attention + lp.dense_ffn + lp.experts + lp.router + lp.norms
    # Embedding and LM head stay 16-bit in FP8/FP4 deployments (TRT-LLM, vLLM quantize linear
    # layers only); both are vocab-parallel over TP.
    emb = embedding_params(a) * BYTES_PER_ELEMENT["bf16"] / layout.tp
    return layer_total * prec.weight_bytes / (layout.tp * layout.pp) + emb


def kv_heads_per_card(a: Architecture, tp: int) -> float:
    """KV heads each card holds: heads are replicated when TP exceeds their number."""
    return max(a.num_kv_heads / tp, 1.0)


def kv_bytes_per_token_layer(a: Architecture, tp: int, prec: Precision) -> float:
    """KV-cache bytes one token adds to one layer on one card."""
    if a.attention == "mla":
        m = a.mla
        assert m is not None
        return (m.kv_lora_rank + m.qk_rope_head_dim) * prec.kv_bytes  # one latent, replicated
    return 2 * kv_heads_per_card(a, tp) * a.head_dim * prec.kv_bytes


def layer_classes(a: Architecture) -> tuple[int, int, int]:
    """(full-attention layers, sliding-window layers, window tokens)."""
    if a.sliding_window is None:
        return a.num_layers, 0, 0
    sw = a.sliding_window
    return a.num_layers - sw.num_layers, sw.num_layers, sw.window_tokens


def kv_bytes_per_token(model: ModelSpec, layout: Layout, prec: Precision) -> float:
    """KV bytes per token per card on full-attention layers (sliding-window layers are capped
    per sequence; see `kv_bytes_for_sequence`)."""
    a = model.architecture
    full, _, _ = layer_classes(a)
    return kv_bytes_per_token_layer(a, layout.tp, prec) * full / layout.pp


def kv_bytes_for_sequence(model: ModelSpec, layout: Layout, prec: Precision,
                          tokens: float) -> float:
    a = model.architecture
    full, swa, window = layer_classes(a)
    per = kv_bytes_per_token_layer(a, layout.tp, prec)
    return per * (full * tokens + swa * min(tokens, window)) / layout.pp


def kv_window_bytes_per_sequence(model: ModelSpec, layout: Layout, prec: Precision) -> float:
    """KV bytes per card that a sequence of at least the window's length holds on its
    sliding-window layers (0 without them)."""
    a = model.architecture
    _, swa, window = layer_classes(a)
    return kv_bytes_per_token_layer(a, layout.tp, prec) * swa * window / layout.pp


def activation_bytes(model: ModelSpec, layout: Layout, tokens_per_step: float) -> float:
    """Peak activation workspace of one step (16-bit): residual, QKV and FFN intermediates for
    `tokens_per_step` tokens, and FP32 logits only for the rows that sample (at most
    LOGITS_ROWS: engines compute logits for the last token of each sequence)."""
    a = model.architecture
    ffn = a.moe.expert_ffn_size * a.moe.experts_per_token if a.moe else a.ffn_size
    per_token = 2.0 * (4 * a.hidden_size + 3 * ffn / layout.tp)
    logits = min(tokens_per_step, LOGITS_ROWS) * 4.0 * a.vocab_size / layout.tp
    return tokens_per_step * per_token + logits


@dataclass(frozen=True)
class MemoryPlan:
    capacity_bytes: float
    usable_bytes: float
    weights_bytes: float
    activation_bytes: float
    kv_budget_bytes: float
    kv_bytes_per_token: float
    kv_tokens_capacity: int
    fits: bool
    reason: str


def _reserve_bytes(layout: Layout, vllm_rule: bool) -> float:
    """Memory outside weights, activations and KV that the engine's rule subtracts: vLLM's
    measured non-torch memory on one card, the library's runtime reserve otherwise."""
    if vllm_rule and layout.cards == 1:
        return VLLM_NON_TORCH_BYTES_TP1
    return RUNTIME_RESERVE_BYTES


def plan_memory(model: ModelSpec, hw: Hardware, layout: Layout, prec: Precision,
                tokens_per_step: int = 8192, min_sequence_tokens: int | None = None,
                mean_sequence_tokens: float | None = None,
                memory_utilization: float | None = None) -> MemoryPlan:
    """Budget one card's memory; `fits` needs room for at least one sequence of
    `min_sequence_tokens` (default: the model's context window, capped at 8192). With sliding-
    window layers, `kv_bytes_per_token` spreads their capped KV over a sequence of
    `mean_sequence_tokens` (default 4,096): a short sequence holds relatively more of it.
    `memory_utilization`: the share of device memory the engine fills, as vLLM's
    gpu_memory_utilization (default: the engine's own rule, `EngineRules.memory_rule`)."""
    a = model.architecture
    cap = hw.memory_bytes
    w = weights_bytes_per_card(model, layout, prec)
    act = activation_bytes(model, layout, tokens_per_step)
    rules = hw.engine.rules if hw.engine is not None else None
    if memory_utilization is None and rules is not None and rules.memory_rule == "free":
        usable = cap - RUNTIME_RESERVE_BYTES
        budget = (usable - w - act) * rules.memory_utilization
    else:
        util = memory_utilization or (rules.memory_utilization if rules else MEMORY_UTILIZATION)
        usable = cap * util - _reserve_bytes(layout, vllm_rule=memory_utilization is not None)
        budget = usable - w - act
    per_tok = kv_bytes_per_token(model, layout, prec)
    if a.sliding_window is not None:  # amortize the capped layers over a typical sequence
        seq = max(float(mean_sequence_tokens or 4096), 1.0)
        per_tok = kv_bytes_for_sequence(model, layout, prec, seq) / seq
    kv_tokens = int(budget // per_tok) if budget > 0 else 0
    need = min_sequence_tokens or min(a.max_context_tokens, 8192)
    fits = kv_tokens >= need
    if fits:
        reason = "fits"
    elif budget <= 0:
        reason = (f"weights {w / 1e9:.1f} GB + activations {act / 1e9:.1f} GB exceed the "
                  f"{usable / 1e9:.1f} GB usable per card")
    else:
        reason = f"room for {kv_tokens} KV tokens, fewer than one {need}-token sequence"
    return MemoryPlan(cap, usable, w, act, budget, per_tok, kv_tokens, fits, reason)


def min_tp(model: ModelSpec, hw: Hardware, prec: Precision, pp: int = 1) -> int | None:
    """Smallest tensor-parallel degree (dividing the head count) whose memory plan fits."""
    for tp in TP_CHOICES:
        if model.architecture.num_attention_heads % tp:
            continue
        if plan_memory(model, hw, Layout(tp=tp, pp=pp), prec).fits:
            return tp
    return None
