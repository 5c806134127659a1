"""Serving engines as dated library records, and the published tables that calibrate them.

An engine (`hardware_specs/engines/<id>.yaml`) is one release of one serving stack: TensorRT-LLM
0.14, vLLM 0.6 on ROCm, the Intel Gaudi software 1.19 ... It says when it was released, which
cards it runs on, and the scheduling rules that change throughput (how KV cache is admitted,
chunked prefill, static shapes and padding, the batch cap). What the engine achieves on a card
beyond the card's microbenchmarks (`EngineFactors`) is fitted by least squares to the vendor's
own published tables for that release (`hardware_specs/engine_tables/<id>.yaml`, calibration
data; MLPerf results are never among them) and stored in `hardware_specs/engine_fits/<id>.yaml`
by `fleetsim calibrate engines`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from sim.config.base import (
    DateStr,
    FleetsimModel,
    Source,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    Tier,
    WithSources,
)

Stack = Literal["cuda", "rocm", "synapseai"]


class StaticShapes(FleetsimModel):
    """Engines that compile one graph per shape (the Gaudi stack) pad every prompt up to a
    multiple of `seq_bucket_tokens` and every batch up to a multiple of `batch_bucket`; the
    padded tokens cost compute and KV like real ones."""

    seq_bucket_tokens: PositiveInt
    batch_bucket: PositiveInt = 1


class EngineRules(FleetsimModel):
    """Scheduling rules of a release that change throughput, each from its documentation.

    kv_admission: `paged` admits a sequence when blocks for its prompt are free and grows it a
    block at a time (vLLM); `reserve` admits it only when its prompt plus its maximum output fit
    (TensorRT-LLM's GUARANTEED_NO_EVICT), so fewer sequences run at once when outputs are long."""

    kv_admission: Literal["paged", "reserve"]
    chunked_prefill: bool
    max_batch: PositiveInt
    max_num_tokens: PositiveInt
    memory_utilization: Annotated[float, Field(gt=0, le=1)] = 0.9
    memory_rule: Literal["total", "free"] = "total"
    """How the engine sizes its KV cache: `total`, weights + activations + KV fill
    `memory_utilization` of device memory (vLLM's gpu_memory_utilization, 0.9); `free`, the KV
    cache takes `memory_utilization` of the memory left after weights and activations
    (TensorRT-LLM's kv_cache_free_gpu_mem_fraction, 0.95 in trtllm-bench)."""
    static_shapes: StaticShapes | None = None
    graphs: bool = True
    custom_allreduce: bool = True
    custom_allreduce_max_mib: PositiveFloat | None = None
    """Largest message the engine's own all-reduce takes; above it the collective library's
    (NCCL/RCCL) curve applies (vLLM CustomAllreduce max_size 8 MiB; TensorRT-LLM's all-reduce
    workspace 64 MiB). None: no limit stated."""
    source: str


class EngineSpec(WithSources):
    """One release of a serving engine."""

    name: str
    version: str
    release_date: DateStr
    stack: Stack
    runs_on: tuple[str, ...] = Field(min_length=1)
    source: str
    rules: EngineRules
    factors_from: str | None = None
    """Another engine whose fitted factors this one uses when it has no table of its own (the
    reason goes in `notes`)."""
    notes: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _unique_cards(self) -> "EngineSpec":
        if len(set(self.runs_on)) != len(self.runs_on):
            raise ValueError("runs_on: a card is listed twice")
        return self


# ---- published tables (calibration data) -----------------------------------------------------

class TableSource(Source):
    """A published table's source; tables under an open licence name it."""

    license: str | None = None


class TablePoint(FleetsimModel):
    """One published measurement: a model on `tp`·`pp` cards at fixed input/output lengths."""

    card: str | None
    card_name: str | None = None
    model: str | None
    model_name: str | None = None
    precision: str
    tp: PositiveInt | None = None
    pp: PositiveInt = 1
    isl: PositiveInt
    osl: PositiveInt
    concurrency: PositiveInt | None = None
    num_prompts: PositiveInt | None = None
    batch: PositiveInt | None = None
    tokens_per_s: PositiveFloat | None = None
    latency_s: PositiveFloat | None = None
    framework: str | None = None
    kv_precision: str | None = None
    gpus: PositiveInt | None = None
    parallelism: str | None = None
    """The table's own label where it is not plain TP (e.g. `DEP8`: attention data parallel
    with expert parallel over 8 cards, recorded as tp 8)."""
    note: str | None = None


class EngineTable(FleetsimModel):
    """A vendor's published throughput table for one engine release.

    `token_definition` says what tokens/s counts (output tokens, or input + output) and
    `throughput_per` what one number is per (one GPU, one tensor-parallel group, the whole
    system of the row): both are required, since the tables differ and a factor of TP or of
    (ISL + OSL) / OSL hides in each."""

    id: str
    engine: str
    engine_version: str
    source: TableSource
    token_definition: Literal["output", "total"]
    throughput_per: Literal["gpu", "tp_group", "system"]
    benchmark_tool: str = ""
    conditions: str = ""
    notes: tuple[str, ...] = ()
    num_prompts_by_lengths: dict[str, PositiveInt] = {}
    """Requests per run by "ISL/OSL" where the table states them for all rows at once: a
    run cannot hold more sequences than it has requests."""
    points: tuple[TablePoint, ...] = Field(min_length=1)


# ---- fitted factors (written by `fleetsim calibrate engines`) -------------------------------

class EngineFactors(FleetsimModel):
    """What an engine achieves on a card beyond the card's microbenchmarks.

    compute: multiplies the calibrated GEMM and attention efficiency (the engine's kernels,
    fusions and quantisation overheads against MAMF-class microbenchmarks).
    bandwidth: multiplies the achieved (STREAM) bandwidth of weight and KV reads.
    step_overhead_ms: host and launch time per engine step.
    seq_overhead_us: time per running sequence per step (sampling, scheduling, block tables)."""

    compute: Annotated[float, Field(gt=0, le=1.5)]
    bandwidth: Annotated[float, Field(gt=0, le=1.5)]
    step_overhead_ms: NonNegativeFloat
    seq_overhead_us: NonNegativeFloat


class CardFit(FleetsimModel):
    factors: EngineFactors
    tier: Tier
    tables: tuple[str, ...]
    points: int
    residual_median_abs: NonNegativeFloat | None = None
    loo_median_abs: NonNegativeFloat | None = None
    log_sigma: NonNegativeFloat | None = None
    note: str | None = None


class EngineFit(FleetsimModel):
    engine: str
    generated_by: str
    cards: dict[str, CardFit]
    pooled: CardFit | None = None
    """Fit over every card of the engine's tables: used for a card the engine runs on that has no
    table of its own (tier `assumed`, with a note)."""


# ---- software trends (written by `fleetsim calibrate engines`) ------------------------------

class ReleaseLevel(FleetsimModel):
    """One release's throughput level on the configurations it shares with the stack's other
    releases: log of its speed-up over the stack's first release (two-way fixed effects)."""

    engine: str
    release_date: DateStr
    log_level: float
    points: PositiveInt


class TrendCheck(FleetsimModel):
    """Leave-last-release-out: the newest level predicted by the line through the others."""

    engine: str
    predicted_log_level: float
    measured_log_level: float
    interval_log: NonNegativeFloat
    """Half-width of the 95% prediction interval (log scale)."""
    within: bool


class SoftwareTrend(FleetsimModel):
    """How fast a stack made the same card faster, per year, fitted to its dated tables
    (`sim/calibrate/software_trend.py`; tier `derived` from vendor tables)."""

    stack: Stack
    log_rate_per_year: float
    log_rate_se: NonNegativeFloat
    improvement_per_year: float
    """exp(log_rate_per_year) - 1: the fractional throughput gain per year."""
    releases: tuple[ReleaseLevel, ...] = Field(min_length=2)
    last_release: str
    leave_last_out: TrendCheck | None = None
    tables: tuple[str, ...] = Field(min_length=1)
    """The published tables (`hardware_specs/engine_tables/`) the levels come from: the rate's
    sources (it is `derived` from them)."""
    basis: Literal["own", "pooled"] = "own"
    """`own`: the stack's releases alone; `pooled`: too few releases, slope over all stacks."""
    generated_by: str
    method: str


# ---- training fits (written by `fleetsim calibrate training`) --------------------------------

class TrainingFactors(FleetsimModel):
    """What a training framework achieves on a card beyond its microbenchmarks: a compute factor
    on GEMM and attention efficiency, and the share of tensor-parallel communication it hides
    under compute (Transformer Engine's communication overlap); and, where the tables run the
    same configurations in BF16 and FP8, what the framework's FP8 recipe achieves on its FP8
    GEMMs beyond the FP8 microbenchmark (scaling, amax and layout work inside the GEMM calls;
    1.0 where the tables cannot tell it apart from the compute factor)."""

    compute: PositiveFloat
    tp_overlap: Annotated[float, Field(ge=0, le=1)]
    fp8_compute: PositiveFloat = 1.0


class TrainingFit(FleetsimModel):
    """Per card (or `pooled` over every card), fitted to published non-MLPerf training tables
    (`hardware_specs/training_tables/`); tier `published` for a card's own fit."""

    card: str
    factors: TrainingFactors
    points: PositiveInt
    residual_median_abs: NonNegativeFloat
    loo_median_abs: NonNegativeFloat | None = None
    log_sigma: NonNegativeFloat | None = None
    tables: tuple[str, ...] = Field(min_length=1)
    tier: Tier
    generated_by: str
    note: str = ""


# ---- collective curves (all-reduce bus bandwidth by message size) ---------------------------

class CollectiveSource(Source):
    """Some published sweeps carry no date (a repository's results page): it may be absent."""

    date: DateStr | None = None  # type: ignore[assignment]


class CollectivePoint(FleetsimModel):
    """One message size of an nccl-tests / rccl-tests style table (out-of-place columns; the
    in-place ones as `ip_*`)."""

    bytes: PositiveFloat | None = None
    busbw_gbps: NonNegativeFloat | None = None
    time_us: NonNegativeFloat | None = None
    algbw_gbps: NonNegativeFloat | None = None
    ip_time_us: NonNegativeFloat | None = None
    ip_algbw_gbps: NonNegativeFloat | None = None
    ip_busbw_gbps: NonNegativeFloat | None = None
    graph_time_us: NonNegativeFloat | None = None
    shared_eager_time_us: NonNegativeFloat | None = None
    shared_graph_time_us: NonNegativeFloat | None = None
    label: str | None = None


class CollectiveTable(FleetsimModel):
    """A published all-reduce sweep on `gpus` cards of one type (`hardware_specs/collectives`)."""

    id: str
    card: str
    card_name: str | None = None
    gpus: PositiveInt
    collective: Literal["all_reduce"]
    library: str
    source: CollectiveSource
    notes: tuple[str, ...] = ()
    points: tuple[CollectivePoint, ...] = Field(min_length=1)

    def curve(self) -> tuple[tuple[float, float], ...]:
        """(bytes, busbw B/s) pairs with both known, by size (nccl-tests tables only: torch
        benchmark scripts time differently)."""
        pts = sorted((p.bytes, p.busbw_gbps * 1e9) for p in self.points
                     if p.bytes and p.busbw_gbps)
        return tuple(pts)
