"""fleetsim as a drop-in for vLLM's serving benchmark (`benchmark_serving.py` / `vllm bench serve`).

`random_requests` builds the load of `--dataset random --random-input-len L --random-output-len O
--num-prompts N --request-rate R --burstiness B --seed S` (fixed lengths; inter-arrival gaps
Gamma with shape B and mean 1/R, as vLLM draws them; R = inf sends every request at once), and
`result_json` writes the simulated run with the keys of vLLM's result JSON (the key list of
`benchmarks/data/serving_runs/vllm_result_example.json`, read from benchmark_serving.py), so a
real run and fleetsim's can be diffed (`fleetsim calibrate check REAL.json --against SIM.json`).

Per-token gaps are not kept by the simulator: `mean_itl_ms` is exact (Σ(e2e - ttft) / Σ(out - 1)
over requests, which is vLLM's mean over all gaps) but the ITL median, std and percentiles are
written as null.
"""

from __future__ import annotations

import math
import time

import numpy as np

PERCENTILES = (99.0,)
METRIC_KEYS = ("ttft", "tpot", "itl", "e2el")


def random_requests(num_prompts: int, input_len: int, output_len: int,
                    request_rate: float = math.inf, burstiness: float = 1.0, seed: int = 0):
    """One RequestChunk of the benchmark's random dataset."""
    from sim.serving.traffic import RequestChunk

    for name, v in (("num_prompts", num_prompts), ("random_input_len", input_len),
                    ("random_output_len", output_len)):
        if v < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (got {v})")
    if not request_rate > 0 or not burstiness > 0:
        raise ValueError(f"--request-rate and --burstiness must be > 0 (got {request_rate}, "
                         f"{burstiness})")
    if math.isinf(request_rate):
        arr = np.zeros(num_prompts)
    else:
        rng = np.random.default_rng(seed)
        gaps = rng.gamma(burstiness, 1.0 / (request_rate * burstiness), size=num_prompts)
        arr = np.cumsum(gaps)
    return RequestChunk(arr, np.full(num_prompts, input_len), np.full(num_prompts, output_len))


def _stats(name: str, x_s: np.ndarray, out: dict) -> None:
    x = np.asarray(x_s, dtype=float) * 1e3
    ok = x.size > 0
    out[f"mean_{name}_ms"] = float(x.mean()) if ok else None
    out[f"median_{name}_ms"] = float(np.median(x)) if ok else None
    out[f"std_{name}_ms"] = float(x.std()) if ok else None
    for p in PERCENTILES:
        out[f"p{p:g}_{name}_ms"] = float(np.percentile(x, p)) if ok else None


def result_json(res, model_id: str, num_prompts: int, request_rate: float, burstiness: float,
                max_concurrency: int | None) -> dict:
    """vLLM's result keys, from a ServeResult (per-request arrays kept in memory)."""
    arr, first, fin = res.arrival_s, res.first_token_s, res.finish_s
    out_tok = res.output_tokens.astype(float)
    start = float(arr.min()) if arr.size else 0.0
    duration = float(fin.max() - start) if arr.size else 0.0
    ttft, e2e = first - arr, fin - arr
    multi = out_tok > 1
    tpot = (e2e[multi] - ttft[multi]) / (out_tok[multi] - 1)
    d = {"date": time.strftime("%Y%m%d-%H%M%S"), "backend": "fleetsim", "model_id": model_id,
         "tokenizer_id": model_id, "num_prompts": num_prompts,
         "request_rate": "inf" if math.isinf(request_rate) else request_rate,
         "burstiness": burstiness, "max_concurrency": max_concurrency, "duration": duration,
         "completed": int(arr.size), "total_input_tokens": int(res.input_tokens.sum()),
         "total_output_tokens": int(out_tok.sum()),
         "request_throughput": arr.size / duration if duration else None,
         "request_goodput:": None,
         "output_throughput": out_tok.sum() / duration if duration else None,
         "total_token_throughput": (out_tok.sum() + res.input_tokens.sum()) / duration
         if duration else None}
    _stats("ttft", ttft, d)
    _stats("tpot", tpot, d)
    gaps = (out_tok[multi] - 1).sum()
    d["mean_itl_ms"] = float((e2e[multi] - ttft[multi]).sum() / gaps * 1e3) if gaps else None
    d["median_itl_ms"] = d["std_itl_ms"] = None
    for p in PERCENTILES:
        d[f"p{p:g}_itl_ms"] = None
    _stats("e2el", e2e, d)
    d["input_lens"] = res.input_tokens.astype(int).tolist()
    d["output_lens"] = res.output_tokens.astype(int).tolist()
    return d


DIFF_KEYS = ("completed", "duration", "request_throughput", "output_throughput",
             "total_token_throughput") + tuple(
    f"{s}_{m}_ms" for m in METRIC_KEYS for s in ("mean", "median", "p99"))


def diff(measured: dict, predicted: dict) -> list[dict]:
    """Key by key: both values and predicted/measured - 1, where both are numbers."""
    rows = []
    for k in DIFF_KEYS:
        a, b = measured.get(k), predicted.get(k)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            rows.append({"key": k, "measured": float(a), "predicted": float(b),
                         "error": b / a - 1 if a else None})
    return rows
