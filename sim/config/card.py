"""Accelerator cards as sold: peak rates, memory, fabrics, power, prices (hardware_specs/cards)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sim.config.base import (
    MonthStr,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Sourced,
    WithSources,
    html_repr,
)

Precision = Literal["bf16", "fp16", "fp8", "fp4", "int8"]


class Compute(Sourced):
    """Peak dense (no 2:4 sparsity) tensor throughput per precision, TFLOPS (TOPS for int8).

    GeForce cards: the BF16 rate is the one with FP32 accumulate (what PyTorch matmul gets).
    A precision the card cannot run natively is left out (null)."""

    bf16_tflops: PositiveFloat
    fp8_tflops: PositiveFloat | None = None
    fp4_tflops: PositiveFloat | None = None
    int8_tops: PositiveFloat | None = None
    accumulate_note: str | None = None

    def peak_tflops(self, precision: str) -> float | None:
        key = {"bf16": "bf16_tflops", "fp16": "bf16_tflops", "fp8": "fp8_tflops",
               "fp4": "fp4_tflops", "int8": "int8_tops"}[precision]
        return getattr(self, key)


GIB = 2**30

VisibleReading = Literal["torch_total_memory", "cuda_device_query", "nvidia_smi_total",
                         "nvml_total", "derived"]


class VisibleMemory(Sourced):
    """Device memory the driver exposes, as a framework reads it: what a serving engine's memory
    fraction multiplies (vLLM: the CUDA/HIP total of `torch.cuda.mem_get_info` times
    gpu_memory_utilization). Datasheet capacities are binary units, less what the driver
    reserves: our H100 SXM reads 85,017,493,504 B for "80 GB".

    `reading` says what was read: `torch_total_memory` (torch.cuda.get_device_properties) and
    `cuda_device_query` (cudaDeviceProp.totalGlobalMem, in bytes) are the CUDA-visible total;
    `nvidia_smi_total` (MiB) and `nvml_total` (bytes) include memory the driver keeps for itself,
    so they overstate the CUDA-visible total by a few hundred MiB (H100 80GB HBM3: nvidia-smi
    81,559 MiB vs 81,079 MiB to CUDA; A100-SXM4-40GB: 40,960 MiB vs 40,339 MiB); `derived`:
    no reading found, `nominal_gib_ratio` x `capacity_gb` GiB, the ratio and its derivation in
    the source. Exactly one of `bytes`, `mib` (as read) or `nominal_gib_ratio` (derived)."""

    reading: VisibleReading
    bytes: PositiveInt | None = None
    mib: PositiveFloat | None = None
    nominal_gib_ratio: Annotated[float, Field(gt=0, le=1)] | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _one_value(self) -> "VisibleMemory":
        given = [k for k in ("bytes", "mib", "nominal_gib_ratio") if getattr(self, k) is not None]
        want = ["nominal_gib_ratio"] if self.reading == "derived" else ["bytes", "mib"]
        if len(given) != 1 or given[0] not in want:
            raise ValueError(f"reading '{self.reading}' needs exactly one of {' or '.join(want)} "
                             f"(got {', '.join(given) or 'none'})")
        return self


class Memory(Sourced):
    capacity_gb: PositiveFloat
    bandwidth_tbps: PositiveFloat
    kind: str
    l2_mb: PositiveFloat | None = None
    last_level_cache_mb: PositiveFloat | None = None
    """The largest on-package cache a GEMM's operands are reused from, MiB, where it is not the
    L2 (AMD's Infinity Cache); a GEMM whose operands exceed it runs at the calibration's
    `gemm.fp8_beyond_cache` rate. Absent: the L2, and no such rate."""
    visible: VisibleMemory
    """Memory the driver exposes, with its own source (`VisibleMemory`)."""

    def visible_bytes(self) -> float:
        """Bytes the driver exposes: the reading, or `capacity_gb` GiB x the derived ratio."""
        v = self.visible
        if v.bytes is not None:
            return float(v.bytes)
        if v.mib is not None:
            return v.mib * 2**20
        assert v.nominal_gib_ratio is not None
        return self.capacity_gb * GIB * v.nominal_gib_ratio


class ScaleUp(Sourced):
    """Scale-up fabric per GPU. `per_direction_gbytes_per_s` is the GPU's aggregate scale-up
    bandwidth in one direction (vendors quote both directions summed: halve them).

    Topology `switch`: every GPU reaches every other at the full rate (NVSwitch). `mesh`: a full
    mesh of `mesh_links` point-to-point links (MI300X: 7 links in a mesh of 8), so a group of n
    GPUs uses only n-1 of them. `pair`: a bridge between two cards. `none`: PCIe only."""

    fabric: str
    topology: Literal["switch", "mesh", "pair", "none"]
    per_direction_gbytes_per_s: NonNegativeFloat
    domain_size: PositiveInt
    mesh_links: PositiveInt | None = None

    @model_validator(mode="after")
    def _mesh_needs_links(self) -> "ScaleUp":
        if self.topology == "mesh" and self.mesh_links is None:
            raise ValueError("topology 'mesh' needs mesh_links (links per GPU in the mesh)")
        return self


class ScaleOut(Sourced):
    """Scale-out network per GPU in a typical server."""

    nic_gbit_per_s: NonNegativeFloat
    kind: Literal["infiniband", "ethernet", "roce", "none"]


class HostBus(Sourced):
    kind: str
    gbytes_per_s: PositiveFloat | None = None


class Power(Sourced):
    tdp_w: PositiveFloat
    configurable_min_w: PositiveFloat | None = None
    cooling: Literal["air", "liquid"] | None = None
    """`liquid`: the part needs liquid cooling (a site without it cannot host it)."""
    note: str | None = None


class Price(Sourced):
    """A purchase price observation. `basis`: `gpu` (the card alone) or `system_per_gpu` (a whole
    server divided by its GPUs, carrying CPU/NIC/chassis)."""

    low_usd: PositiveFloat
    high_usd: PositiveFloat
    date: MonthStr
    basis: Literal["gpu", "system_per_gpu"]
    note: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> "Price":
        if self.high_usd < self.low_usd:
            raise ValueError(f"high_usd {self.high_usd} is below low_usd {self.low_usd}")
        return self


class Rental(Sourced):
    provider: str
    usd_per_hour: PositiveFloat
    term: Literal["on_demand", "1y", "3y", "spot", "contract"]
    date: MonthStr


class CardSpec(WithSources):
    """One accelerator as sold. Measured efficiencies live in hardware_specs/calibration/."""

    name: str
    vendor: Literal["nvidia", "amd", "intel", "huawei", "groq"]
    stack: str = Field(description="software stack id used to find calibration, e.g. cuda, rocm")
    form_factor: str
    launch: MonthStr
    confidence: Literal["high", "medium", "low"] = "high"
    compute: Compute
    memory: Memory
    scale_up: ScaleUp
    scale_out: ScaleOut
    host_bus: HostBus
    power: Power
    prices: tuple[Price, ...] = ()
    rentals: tuple[Rental, ...] = ()
    notes: tuple[str, ...] = ()

    def supports(self, precision: str) -> bool:
        return self.compute.peak_tflops(precision) is not None

    def _repr_html_(self) -> str:
        return html_repr("card", self)
