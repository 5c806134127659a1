"""Per-tensor precision: weights, activations and KV cache each have their own number format.

FP8 weights with 16-bit activations is weight-only quantization (compute in 16 bit after
dequantizing); FP8 weights and activations run FP8 tensor-core GEMMs. The GEMM compute format is
the wider of weights and activations, and the card must support it natively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Dtype = Literal["bf16", "fp16", "fp8", "fp4", "int8"]

BYTES_PER_ELEMENT: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0,
                                       "fp4": 0.5}
# fp4 (NVFP4 / MXFP4): 4-bit values; block scales (1 byte per 16 or 32 values) add 3-6%, counted
# here as 0.53 bytes per element on weights (NVFP4: 8-bit scale per 16 values = 0.5 + 1/16).
WEIGHT_BYTES_PER_ELEMENT: dict[str, float] = {**BYTES_PER_ELEMENT, "fp4": 0.5 + 1 / 16}

PRESETS: dict[str, tuple[str, str, str]] = {
    # name: (weights, activations, kv cache)
    "bf16": ("bf16", "bf16", "bf16"),
    "fp16": ("bf16", "bf16", "bf16"),  # FP16 is an alias of BF16: same width and tensor rate
    "fp8": ("fp8", "fp8", "fp8"),  # W8A8 FP8 with FP8 KV, as MLPerf submissions on Hopper/MI300
    "fp4": ("fp4", "fp4", "fp8"),  # W4A4 NVFP4/MXFP4 with FP8 KV, as Blackwell MLPerf submissions
    "int8": ("int8", "int8", "bf16"),  # SmoothQuant-style W8A8, 16-bit KV
}


class PrecisionError(ValueError):
    """A precision the card cannot run, or an unknown format name."""


def _canon(name: str) -> str:
    n = name.lower()
    if n == "fp16":
        return "bf16"
    if n not in BYTES_PER_ELEMENT:
        raise PrecisionError(f"unknown precision '{name}' (known: bf16, fp16, fp8, fp4, int8)")
    return n


@dataclass(frozen=True)
class Precision:
    weights: str = "bf16"
    activations: str = "bf16"
    kv_cache: str = "bf16"

    def __post_init__(self) -> None:
        for f in ("weights", "activations", "kv_cache"):
            object.__setattr__(self, f, _canon(getattr(self, f)))

    @classmethod
    def preset(cls, name: str, weights: str | None = None, activations: str | None = None,
               kv_cache: str | None = None) -> "Precision":
        if name.lower() not in PRESETS:
            raise PrecisionError(f"unknown precision '{name}' (known: {', '.join(PRESETS)})")
        w, a, kv = PRESETS[name.lower()]
        return cls(weights or w, activations or a, kv_cache or kv)

    @property
    def compute(self) -> str:
        """GEMM compute format: the wider of weights and activations."""
        w, a = BYTES_PER_ELEMENT[self.weights], BYTES_PER_ELEMENT[self.activations]
        return self.activations if a >= w else self.weights

    @property
    def weight_bytes(self) -> float:
        return WEIGHT_BYTES_PER_ELEMENT[self.weights]

    @property
    def kv_bytes(self) -> float:
        return BYTES_PER_ELEMENT[self.kv_cache]

    @property
    def act_bytes(self) -> float:
        """Bytes of activations moved between kernels (quantized inputs are written in 16 bit and
        quantized inside the GEMM prologue by current engines, so count 16 bit)."""
        return 2.0

    @property
    def label(self) -> str:
        return f"w{self.weights}-a{self.activations}-kv{self.kv_cache}"
