"""Model architectures (workloads/models). Parameter counts are derived in `sim.perf.params`
and checked against the published totals stated here."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from sim.config.base import (FleetsimModel, PositiveFloat, PositiveInt, Sourced, WithSources,
                             html_repr)


class MlaSpec(FleetsimModel):
    """Multi-head latent attention (DeepSeek-V2/V3): the KV cache holds one latent of
    kv_lora_rank + qk_rope_head_dim values per token and layer."""

    q_lora_rank: PositiveInt | None = None
    kv_lora_rank: PositiveInt
    qk_nope_head_dim: PositiveInt
    qk_rope_head_dim: PositiveInt
    v_head_dim: PositiveInt


class MoeSpec(FleetsimModel):
    """Mixture of experts. The first `num_dense_layers` layers use a dense FFN of `dense_ffn_size`."""

    num_experts: PositiveInt
    experts_per_token: PositiveInt
    expert_ffn_size: PositiveInt
    num_shared_experts: int = 0
    num_dense_layers: int = 0
    dense_ffn_size: PositiveInt | None = None

    @model_validator(mode="after")
    def _check(self) -> "MoeSpec":
        if self.experts_per_token > self.num_experts:
            raise ValueError(
                f"experts_per_token {self.experts_per_token} exceeds num_experts {self.num_experts}"
            )
        if self.num_dense_layers > 0 and self.dense_ffn_size is None:
            raise ValueError("num_dense_layers > 0 needs dense_ffn_size")
        return self


class SlidingWindow(FleetsimModel):
    """Sliding-window attention on `num_layers` of the layers (their KV is capped at `window`)."""

    window_tokens: PositiveInt
    num_layers: PositiveInt


class Architecture(Sourced):
    num_layers: PositiveInt
    hidden_size: PositiveInt
    num_attention_heads: PositiveInt
    num_kv_heads: PositiveInt
    head_dim: PositiveInt
    ffn_size: PositiveInt
    vocab_size: PositiveInt
    attention: Literal["mha", "gqa", "mla"]
    ffn_kind: Literal["swiglu", "gelu"] = "swiglu"
    tied_embeddings: bool = False
    qkv_bias: bool = False
    max_context_tokens: PositiveInt
    mla: MlaSpec | None = None
    moe: MoeSpec | None = None
    sliding_window: SlidingWindow | None = None

    @model_validator(mode="after")
    def _check(self) -> "Architecture":
        if self.attention == "mla" and self.mla is None:
            raise ValueError("attention 'mla' needs an `mla` section")
        if self.attention != "mla" and self.mla is not None:
            raise ValueError(f"`mla` section given but attention is '{self.attention}'")
        if self.num_attention_heads % self.num_kv_heads:
            raise ValueError(
                f"num_kv_heads {self.num_kv_heads} does not divide "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.sliding_window and self.sliding_window.num_layers > self.num_layers:
            raise ValueError("sliding_window.num_layers exceeds num_layers")
        return self


class PublishedCount(Sourced):
    """A parameter count as its source states it, in billions."""

    total_b: PositiveFloat
    active_b: PositiveFloat | None = None
    note: str | None = None


class ModelSpec(WithSources):
    name: str
    family: str
    architecture: Architecture
    published_params: PublishedCount
    notes: tuple[str, ...] = ()

    @property
    def is_moe(self) -> bool:
        return self.architecture.moe is not None

    def _repr_html_(self) -> str:
        return html_repr("model", self)
