"""The public vLLM serving runs (`benchmarks/data/serving_runs/`) replayed through the simulator.

Each usable row becomes a `ServeSetup` and one chunk of requests as the benchmark sent them;
`predict` returns mean TTFT, TPOT and E2E in ms. `fit_overheads` fits the serving overheads
(`sim.serving.overheads`) by least squares on the log errors of the `calibrate` rows only.

Mapping choices (stated, not measured):
- lengths: every request gets the run's mean input and output length (total tokens / completed;
  ShareGPT's per-request lengths are not printed, nor are the output lengths of runs without
  `--ignore-eos`);
- precision: the checkpoint as served: native BF16 -> bf16; FP8 checkpoints -> fp8 where the card
  has FP8 compute, else weight-only fp8 (bf16 activations); AWQ -> 4-bit weight-only (fp4 weight
  bytes, bf16 activations); gpt-oss-120b's native MXFP4 -> weight-only fp4 except on cards with
  FP4 compute; DeepSeek's native FP8 -> fp8 with bf16 KV;
- scheduler knobs left null (`server_defaults: true`): vLLM's V1 API-server defaults as the data
  README reads them in arg_utils.py: 8192 batched tokens and 1024 sequences on GPUs of at least
  70 GiB (the memory the driver exposes) that are not A100, 2048 and 256 otherwise;
- KV cache size: the engine that ran, vLLM, on every card (not the card's newest library engine,
  TensorRT-LLM on CUDA cards): weights, activations and KV fill the run's
  `gpu_memory_utilization` of the memory the driver exposes (`VLLM_GPU_MEMORY_UTILIZATION`
  where the run does not set it);
- measured mean E2E: printed (`mean_e2el_ms`), or derived as mean TTFT + mean TPOT x (output - 1)
  when every request has the same output length (total output = prompts x output_len).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.config.loader import read_yaml

RUNS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "serving_runs"
METRICS = ("e2e_ms", "ttft_ms", "tpot_ms")
MOE_MODELS = ("gpt-oss-120b", "deepseek-v3", "mixtral-8x7b", "qwen3-30b-a3b")
VLLM_GPU_MEMORY_UTILIZATION = 0.9
"""vLLM's default `gpu_memory_utilization` in the 0.10-0.11 releases the runs used
(vllm/config/cache.py, vllm-project/vllm commit c1d86421: `CacheConfig.gpu_memory_utilization:
float = Field(default=0.9, gt=0, le=1)`). vLLM V1 sizes its KV cache as that fraction of the
device's total memory (`torch.cuda.mem_get_info`) less the memory that is not KV cache
(vllm/v1/worker/gpu_worker.py, commit 35d5cda1: `requested_memory = init_snapshot.total_memory *
gpu_memory_utilization`; `available_kv_cache_memory_bytes = requested_memory -
profile_result.non_kv_cache_memory`: weights, the profile run's activation peak and non-torch
memory): the `total` memory rule of `sim.perf.memory.plan_memory`."""


@dataclass(frozen=True)
class Run:
    id: str
    split: str
    card: str
    model: str
    tp: int
    quantization: str | None
    kv_cache_dtype: str | None
    num_prompts: int
    input_tokens: int
    output_tokens: int
    request_rate: float
    burstiness: float
    max_concurrency: int | None
    max_num_seqs: int | None
    max_num_batched_tokens: int | None
    measured: dict[str, float]
    gpu_memory_utilization: float | None = None
    """As the run set it (`--gpu-memory-utilization`); None: vLLM's default."""
    prefix_caching: bool | None = None
    """As the run set it; None: vLLM V1's default, on for generative models that are not
    hybrid (data README: arg_utils.py, 'V1 enables prefix caching by default')."""

    @property
    def family(self) -> str:
        return "moe" if self.model in MOE_MODELS else "dense"

    @property
    def load(self) -> str:
        """`burst` (all at once, no cap) or `capped` (concurrency limit)."""
        return "capped" if self.max_concurrency else "burst"


def load_runs(split: str | None = None, runs_dir: Path = RUNS_DIR) -> list[Run]:
    """Usable rows with a library model, in file order; `split` filters."""
    out = []
    for p in sorted(runs_dir.glob("*.yaml")):
        for r in read_yaml(p, str(p))["runs"]:
            if not r["usable"] or r["model"] is None or (split and r["split"] != split):
                continue
            out.append(_run(r))
    return out


def _run(r: dict) -> Run:
    res = r["results"]
    n = int(res["completed"])
    inp = max(1, round(res["total_input_tokens"] / n))
    out = max(1, round(res["total_output_tokens"] / n))
    meas = {"ttft_ms": res["mean_ttft_ms"], "tpot_ms": res["mean_tpot_ms"]}
    if res.get("mean_e2el_ms") is not None:
        meas["e2e_ms"] = res["mean_e2el_ms"]
    elif r.get("output_len") and res["total_output_tokens"] == r["num_prompts"] * r["output_len"]:
        meas["e2e_ms"] = res["mean_ttft_ms"] + res["mean_tpot_ms"] * (r["output_len"] - 1)
    rate = r["request_rate"]
    return Run(r["id"], r["split"], r["card"], r["model"], int(r["tp"]), r.get("quantization"),
               r.get("kv_cache_dtype"), n, inp, out,
               math.inf if rate in (None, "inf") else float(rate),
               float(r.get("burstiness") or 1.0), r.get("max_concurrency"),
               r.get("max_num_seqs"), r.get("max_num_batched_tokens"),
               {k: float(v) for k, v in meas.items() if v is not None},
               r.get("gpu_memory_utilization"), r.get("prefix_caching"))


def precision_for(run: Run, hw):
    from sim.perf.precision import Precision

    q = (run.quantization or "").lower()
    kv = "fp8" if (run.kv_cache_dtype or "").startswith("fp8") else "bf16"
    card = hw.card
    if run.model == "gpt-oss-120b" or q.startswith("mxfp4"):
        return Precision("fp4", "fp4" if card.supports("fp4") else "bf16", kv)
    if q.startswith("awq"):
        return Precision("fp4", "bf16", kv)
    if q.startswith("fp8") or run.model == "deepseek-v3":
        return Precision("fp8", "fp8" if card.supports("fp8") else "bf16", kv)
    return Precision("bf16", "bf16", kv)


def engine_for(run: Run, hw):
    from sim.serving.engine import engine_config

    big = hw.memory_bytes >= 70 * 2**30 and not run.card.startswith("a100")
    seqs = run.max_num_seqs or (1024 if big else 256)
    tokens = run.max_num_batched_tokens or (8192 if big else 2048)
    caching = run.prefix_caching if run.prefix_caching is not None else True
    return engine_config("vllm-v1", max_num_seqs=seqs, max_num_batched_tokens=tokens,
                         prefix_caching=caching)


def setup_for(run: Run, lib, overheads=None, hw_cache: dict | None = None):
    from sim.perf.hardware import Hardware
    from sim.perf.memory import Layout
    from sim.serving.simulate import ServeSetup

    cache = hw_cache if hw_cache is not None else {}
    hw = cache.get(run.card) or cache.setdefault(run.card, Hardware.load(run.card, lib))
    return ServeSetup(lib.model(run.model), hw, precision_for(run, hw), Layout(tp=run.tp),
                      1, engine_for(run, hw), overheads=overheads,
                      max_concurrency=run.max_concurrency,
                      gpu_memory_utilization=memory_utilization_for(run))


def memory_utilization_for(run: Run) -> float:
    """The share of device memory vLLM filled in the run: its own setting, else the default."""
    return run.gpu_memory_utilization or VLLM_GPU_MEMORY_UTILIZATION


def traffic_for(run: Run, num_prompts: int | None = None, seed: int = 0):
    """The benchmark's requests: all at time 0 for rate inf, else Gamma(burstiness) gaps."""
    from sim.serving.traffic import RequestChunk

    n = num_prompts or run.num_prompts
    if math.isinf(run.request_rate):
        arr = np.zeros(n)
    else:
        rng = np.random.default_rng(seed)
        k = run.burstiness
        arr = np.cumsum(rng.gamma(k, 1.0 / (run.request_rate * k), size=n))
    return RequestChunk(arr, np.full(n, run.input_tokens), np.full(n, run.output_tokens))


def predict(run: Run, lib, overheads=None, num_prompts: int | None = None,
            hw_cache: dict | None = None) -> dict[str, float]:
    """Mean e2e/ttft/tpot (ms) the simulator gives for the run."""
    from sim.serving.metrics import summarize
    from sim.serving.simulate import simulate

    s = summarize(simulate(setup_for(run, lib, overheads, hw_cache),
                           [traffic_for(run, num_prompts)]))
    return {m: float(s[m]["mean"]) for m in METRICS if s.get(m) and s[m]["mean"] is not None}


def compare(runs: list[Run], lib, overheads=None, num_prompts: int | None = None) -> list[dict]:
    """One row per (run, metric) with a measurement: predicted, measured, error."""
    cache: dict = {}
    rows = []
    for run in runs:
        pred = predict(run, lib, overheads, num_prompts, cache)
        for m in METRICS:
            if m in run.measured and m in pred:
                rows.append({"run": run.id, "family": run.family, "load": run.load,
                             "card": run.card, "model": run.model, "metric": m,
                             "measured": run.measured[m], "predicted": pred[m],
                             "error": pred[m] / run.measured[m] - 1})
    return rows


FIT_PARAMS = ("api_request_s", "api_tokenize_s_per_input_token",
              "scheduler_s_per_running_request", "detokenize_s_per_output_token",
              "cuda_graph_layer_fixed_scale")
FIT_SCALE = (1e-3, 1e-6, 1e-5, 1e-5, 1.0)
"""Units the optimiser works in (ms, us/token, 10 us, 10 us, fraction) so steps are ~1."""


def overheads_from(x, graph_max_tokens: int, sampling_s: float = 0.0,
                   moe_grouped_gemm_efficiency: float | None = None):
    """The overheads at the optimiser's point `x`, with the values that are not fitted."""
    from sim.serving.overheads import Overheads

    kw = {k: float(v) * s for k, v, s in zip(FIT_PARAMS, x, FIT_SCALE)}
    return Overheads(cuda_graph_max_tokens=graph_max_tokens, sampling_s_per_sequence=sampling_s,
                     moe_grouped_gemm_efficiency=moe_grouped_gemm_efficiency, **kw)


_WORKER: dict = {}
"""Per-process state of the fit's workers: the library, the runs and the Hardware cache (loaded
once per process, reused by every evaluation)."""


def _init_worker(runs: list[Run], roots) -> None:
    from sim.config.library import Library

    _WORKER.update(lib=Library(tuple(roots)), runs=runs, cache={})


def _row_residuals(job) -> list[float]:
    i, ov, num_prompts = job
    run = _WORKER["runs"][i]
    pred = predict(run, _WORKER["lib"], ov, num_prompts, _WORKER["cache"])
    return [math.log(pred[m] / run.measured[m]) for m in METRICS
            if m in run.measured and m in pred]


def fit_overheads(runs: list[Run], lib, graph_max_tokens: int, x0=(1.0, 1.0, 1.0, 1.0, 0.5),
                  max_nfev: int = 200, num_prompts: int | None = None, workers: int | None = None,
                  tol: float = 1e-3, moe_grouped_gemm_efficiency: float | None = None):
    """Least squares on log(predicted / measured) of every metric of `runs` (calibrate rows),
    to convergence: stops when the cost, the step or the gradient changes by less than `tol`
    (relative), or after `max_nfev` evaluations; `moe_grouped_gemm_efficiency` is held fixed.
    The rows of one evaluation run in `workers`
    processes (default: every CPU), each keeping its own Hardware cache.
    Returns (scipy result, Overheads)."""
    import multiprocessing as mp
    import os

    from scipy.optimize import least_squares

    if any(r.split != "calibrate" for r in runs):
        raise ValueError("fit_overheads takes calibrate rows only")
    # the slowest rows first, so the pool's last jobs are short
    order = sorted(range(len(runs)), key=lambda i: -runs[i].input_tokens * runs[i].num_prompts)
    n_proc = max(1, min(workers or os.cpu_count() or 1, len(runs)))
    ctx = mp.get_context("fork")
    with ctx.Pool(n_proc, _init_worker, (runs, lib.roots)) as pool:
        def resid(x):
            ov = overheads_from(x, graph_max_tokens,
                                moe_grouped_gemm_efficiency=moe_grouped_gemm_efficiency)
            got = dict(zip(order, pool.map(_row_residuals, [(i, ov, num_prompts)
                                                            for i in order], chunksize=1)))
            return np.array([e for i in range(len(runs)) for e in got[i]])

        res = least_squares(resid, np.array(x0, dtype=float), bounds=(
            [0, 0, 0, 0, 0], [np.inf, np.inf, np.inf, np.inf, 1.0]), diff_step=0.05,
            max_nfev=max_nfev, x_scale=1.0, ftol=tol, xtol=tol, gtol=tol, verbose=2)
    return res, overheads_from(res.x, graph_max_tokens,
                               moe_grouped_gemm_efficiency=moe_grouped_gemm_efficiency)
