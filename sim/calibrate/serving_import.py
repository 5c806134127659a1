"""Users' own serving measurements: import benchmark results and check the simulator on them.

Reads the result JSON of vLLM's `benchmarks/benchmark_serving.py --save-result` (fields such as
`request_rate`, `burstiness`, `input_lens`, `output_lens`, `mean_ttft_ms`, `p99_tpot_ms`,
`output_throughput`) and GenAI-Perf / AIPerf profile exports (`time_to_first_token`,
`inter_token_latency`, `request_latency`, `output_token_throughput`, each with `unit`, `avg`,
`p50`, `p99`), normalises them to one record, and replays the same load through the serving
simulator for a given card, model and layout to compare metric by metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sim.config.loader import ConfigError

METRICS = ("ttft_ms", "tpot_ms", "e2e_ms")
STATS = ("mean", "p50", "p99")


@dataclass(frozen=True)
class ServingMeasurement:
    source_format: str
    model_id: str | None
    request_rate: float  # req/s; inf = all requests at once
    burstiness: float  # vLLM: Gamma shape; 1 = Poisson
    num_requests: int
    input_lens: tuple[int, ...]
    output_lens: tuple[int, ...]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    output_tokens_per_s: float | None = None
    max_concurrency: int | None = None


def _num(d: dict, key: str, where: str) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(float(v)):
        raise ConfigError(f"{where}: {key}: must be a finite number (got {v!r})")
    return float(v)


def read_result_json(path: Path) -> dict:
    """A benchmark result file as a JSON object, with one-line located errors."""
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: malformed JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a JSON object")
    return data


def load_measurement(path: Path) -> ServingMeasurement:
    where = str(path)
    data = read_result_json(path)
    if "mean_ttft_ms" in data:
        return _from_vllm(data, where)
    if "time_to_first_token" in data:
        return _from_genai_perf(data, where)
    raise ConfigError(f"{where}: not a vLLM benchmark_serving result (mean_ttft_ms) nor a "
                      "GenAI-Perf/AIPerf export (time_to_first_token)")


def _from_vllm(d: dict, where: str) -> ServingMeasurement:
    metrics = {}
    for m, key in (("ttft_ms", "ttft"), ("tpot_ms", "tpot"), ("e2e_ms", "e2el"),
                   ("itl_ms", "itl")):
        stats = {"mean": _num(d, f"mean_{key}_ms", where), "p50": _num(d, f"median_{key}_ms", where),
                 "p99": _num(d, f"p99_{key}_ms", where)}
        if any(v is not None for v in stats.values()):
            metrics[m] = {k: v for k, v in stats.items() if v is not None}
    n = int(_num(d, "completed", where) or _num(d, "num_prompts", where) or 0)
    ins, outs = d.get("input_lens"), d.get("output_lens")
    if not ins or not outs:
        if not n:
            raise ConfigError(f"{where}: completed: missing (needed without input_lens)")
        ti, to = _num(d, "total_input_tokens", where), _num(d, "total_output_tokens", where)
        if ti is None or to is None:
            raise ConfigError(f"{where}: input_lens: missing (and no total_input_tokens)")
        ins, outs = [round(ti / n)] * n, [round(to / n)] * n
    if len(ins) != len(outs):
        raise ConfigError(f"{where}: input_lens and output_lens differ in length "
                          f"({len(ins)} vs {len(outs)})")
    for name, arr in (("input_lens", ins), ("output_lens", outs)):
        bad = [x for x in arr if not isinstance(x, int) or x < 1]
        if bad:
            raise ConfigError(f"{where}: {name}: must be integers >= 1 (got {bad[0]!r})")
    rate = d.get("request_rate", "inf")
    rate = math.inf if rate in (None, "inf", "Infinity") else float(rate)
    mc = d.get("max_concurrency")
    return ServingMeasurement("vllm-benchmark-serving", d.get("model_id"), rate,
                              float(d.get("burstiness") or 1.0), len(ins), tuple(ins), tuple(outs),
                              metrics, _num(d, "output_throughput", where),
                              int(mc) if mc else None)


def _from_genai_perf(d: dict, where: str) -> ServingMeasurement:
    def stat(key: str) -> dict[str, float]:
        block = d.get(key) or {}
        scale = {"ms": 1.0, "ns": 1e-6, "us": 1e-3, "s": 1e3}.get(block.get("unit", "ms"))
        if scale is None:
            raise ConfigError(f"{where}: {key}.unit: unknown unit {block.get('unit')!r}")
        return {k: float(block[src]) * scale for k, src in (("mean", "avg"), ("p50", "p50"),
                                                            ("p99", "p99")) if src in block}

    metrics = {"ttft_ms": stat("time_to_first_token"), "tpot_ms": stat("inter_token_latency"),
               "e2e_ms": stat("request_latency")}
    cfg = d.get("input_config") or {}
    n = int(cfg.get("num_prompts") or d.get("request_count", {}).get("avg") or 0)
    isl = d.get("input_sequence_length", {}).get("avg")
    osl = d.get("output_sequence_length", {}).get("avg")
    if not n or not isl or not osl:
        raise ConfigError(f"{where}: request_count, input_sequence_length and "
                          "output_sequence_length (avg) are needed")
    rate = float(cfg.get("request_rate") or math.inf)
    tput = (d.get("output_token_throughput") or {}).get("avg")
    return ServingMeasurement("genai-perf", cfg.get("model"), rate, 1.0, n,
                              tuple([round(isl)] * n), tuple([round(osl)] * n), metrics,
                              float(tput) if tput else None, cfg.get("concurrency"))


def check_serving(meas: ServingMeasurement, setup, seed: int = 0) -> list[dict]:
    """Simulate the measured load on `setup` (a ServeSetup) and compare metric by metric."""
    from sim.serving.metrics import summarize
    from sim.serving.simulate import simulate
    from sim.serving.traffic import RequestChunk

    n = meas.num_requests
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
    if math.isinf(meas.request_rate):
        arrivals = np.zeros(n)
    else:  # vLLM: gamma inter-arrivals with shape = burstiness, mean 1/rate
        k = meas.burstiness
        arrivals = np.cumsum(rng.gamma(k, 1.0 / (meas.request_rate * k), size=n))
    chunk = RequestChunk(arrivals, np.array(meas.input_lens), np.array(meas.output_lens))
    res = simulate(setup, [chunk])
    s = summarize(res)
    rows = []
    for m in METRICS:
        for stat in STATS:
            measured = meas.metrics.get(m, {}).get(stat)
            predicted = (s.get(m) or {}).get(stat)
            if measured is None or predicted is None:
                continue
            rows.append({"metric": f"{m} {stat}", "measured": measured, "predicted": predicted,
                         "error": predicted / measured - 1 if measured else None})
    if meas.output_tokens_per_s:
        rows.append({"metric": "output tokens/s", "measured": meas.output_tokens_per_s,
                     "predicted": s["throughput_tokens_per_s"],
                     "error": s["throughput_tokens_per_s"] / meas.output_tokens_per_s - 1})
    return rows
