"""Training speed of a parallel layout.

    FLOPs per token = 6 · P_matmul_active + 6 · layers · seq · d_attn   (causal attention: half
                      of 12·L·d, as in the Llama 3 / Megatron accounting)
    step_s           = FLOPs(global batch) / (cards · peak_bf16 · MFU)  + exposed TP comm

MFU is calibrated against published runs, which already contain communication and pipeline
bubbles (modeling-notes.md): it is used alone, never together with a separately computed
communication time. The one exception is a layout the calibration runs did not have: a tensor-
parallel group larger than the card's scale-up domain (TP over PCIe or the scale-out network);
its all-reduce time is then computed explicitly and added. The pipeline bubble of the layout,
(pp-1)/(microbatches+pp-1), is reported for information, not added. MoE and FP8 runs are
counted against the BF16 peak. Failures and restarts (ETTR) are applied by the fleet layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.config.model import ModelSpec
from sim.perf.hardware import Hardware
from sim.perf.memory import Layout, check_layout
from sim.perf.params import active_params

SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class TrainingLayout:
    dp: int = 1
    tp: int = 8
    pp: int = 1
    microbatches: int = 8

    @property
    def cards(self) -> int:
        return self.dp * self.tp * self.pp


@dataclass(frozen=True)
class TrainingResult:
    cards: int
    tokens_per_s_per_card: float
    tokens_per_s: float
    flops_per_token: float
    mfu: float
    mfu_tier: str
    exposed_comm_fraction: float
    pipeline_bubble_fraction: float


def training_flops_per_token(model: ModelSpec, seq_tokens: int) -> float:
    a = model.architecture
    # every parameter a token uses is a matmul except the input embedding lookup (tied or not,
    # the LM head matmul remains)
    matmul_active = active_params(a) - a.vocab_size * a.hidden_size
    if a.attention == "mla":
        assert a.mla is not None
        d_attn = a.num_attention_heads * (a.mla.qk_nope_head_dim + a.mla.qk_rope_head_dim
                                          + a.mla.v_head_dim) / 2
    else:
        d_attn = a.num_attention_heads * a.head_dim
    return 6.0 * matmul_active + 6.0 * a.num_layers * seq_tokens * d_attn


def training_throughput(model: ModelSpec, hw: Hardware, layout: TrainingLayout,
                        seq_tokens: int = 8192, global_batch_tokens: float = 16e6) -> TrainingResult:
    check_layout(model, Layout(tp=layout.tp, pp=layout.pp))
    mfu_f = hw.factors["training_mfu"]
    peak = hw.peak_flops("bf16")
    fpt = training_flops_per_token(model, seq_tokens)
    compute_s = global_batch_tokens * fpt / (layout.cards * peak * mfu_f.value)
    exposed = 0.0
    if layout.tp > hw.card.scale_up.domain_size:
        # 4 all-reduces per layer per microbatch pass (2 forward, 2 backward) of the local
        # activations, on the slower path
        a = model.architecture
        tokens_per_replica = global_batch_tokens / layout.dp
        msg = tokens_per_replica * a.hidden_size * 2.0
        n_ar = 4 * a.num_layers / layout.pp
        exposed = n_ar * hw.allreduce_s(msg, layout.tp)
    step_s = compute_s + exposed
    tps = global_batch_tokens / step_s
    bubble = (layout.pp - 1) / (layout.microbatches + layout.pp - 1)
    return TrainingResult(layout.cards, tps / layout.cards, tps, fpt,
                          mfu_f.value, mfu_f.tier, exposed / step_s, bubble)


def days_to_train(model: ModelSpec, hw: Hardware, tokens: float, cards: int, tp: int = 8,
                  pp: int = 1, seq_tokens: int = 8192) -> float:
    dp = max(cards // (tp * pp), 1)
    res = training_throughput(model, hw, TrainingLayout(dp=dp, tp=tp, pp=pp), seq_tokens)
    return tokens / res.tokens_per_s / SECONDS_PER_DAY
