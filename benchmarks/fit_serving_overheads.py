"""Fit the vLLM V1 serving overheads on the `calibrate` half of the public runs (never the
`validate` half) and write `hardware_specs/serving_overheads/vllm-v1.yaml`.

    .venv/bin/python benchmarks/fit_serving_overheads.py
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sim.calibrate.serving_runs import FIT_PARAMS, FIT_SCALE, fit_overheads, load_runs  # noqa: E402
from sim.config.library import Library  # noqa: E402
from sim.serving import overheads as ov_mod  # noqa: E402

OUT = REPO / "hardware_specs" / "serving_overheads" / "vllm-v1.yaml"
GRAPH_CAP_TOKENS = 512
"""vLLM V1 `_set_cudagraph_sizes`: max capture size min(max_num_seqs x 2, 512), then capped
by max_num_batched_tokens; larger batches run without a graph (source `vllm-config`)."""

SOURCES = {
    "fit": {"citation": "fleetsim benchmarks/fit_serving_overheads.py: least squares (scipy "
                        "least_squares) on log(predicted/measured) mean TTFT, TPOT and E2E of "
                        "the calibrate rows of benchmarks/data/serving_runs (vLLM 0.10.2-0.11.0 "
                        "runs by GPUStack and the vLLM recipes)",
            "date": None, "tag": "derived"},
    "vllm-config": {"citation": "vLLM vllm/config/vllm.py VllmConfig._set_cudagraph_sizes "
                                "(stored index copy, id 18201737): max_cudagraph_capture_size = "
                                "min(max_num_seqs * decode_query_len * 2, 512), then min with "
                                "max_num_batched_tokens; 'If batch size > largest "
                                "cudagraph_capture_sizes, cudagraph will not be used'",
                    "date": None, "tag": "vendor"},
    "none": {"citation": "not separated from the card's engine_seq_overhead_us (engine fits), "
                         "which already charges per sequence per step",
             "date": None, "tag": "assumed"},
}


def start_point(lib) -> list[float]:
    """The previous fit's values (fitted on the calibrate rows too) in the optimiser's units,
    else the default start."""
    from sim.config.loader import ConfigError

    try:
        old = ov_mod.load("vllm-v1", lib.roots)
    except ConfigError:
        return [1.0, 1.0, 1.0, 1.0, 0.5]
    return [max(getattr(old, k) / s, 1e-3) if k != "cuda_graph_layer_fixed_scale"
            else min(max(getattr(old, k), 1e-3), 0.999) for k, s in zip(FIT_PARAMS, FIT_SCALE)]


def main() -> None:
    lib = Library.default()
    runs = load_runs("calibrate")
    t0 = time.perf_counter()
    res, ov = fit_overheads(runs, lib, GRAPH_CAP_TOKENS, x0=start_point(lib))
    wall = time.perf_counter() - t0
    r = res.fun
    rec = {"engine": "vllm-v1", "sources": {k: {**v, "date": v["date"] or time.strftime("%Y-%m")}
                                            for k, v in SOURCES.items()}}
    for k in FIT_PARAMS:
        rec[k] = {"value": float(getattr(ov, k)), "tier": "published", "source": "fit",
                  "note": "fitted on the calibrate rows; decode steps under CUDA graphs"
                  if k == "cuda_graph_layer_fixed_scale" else "fitted on the calibrate rows"}
    rec["sampling_s_per_sequence"] = {"value": 0.0, "tier": "assumed", "source": "none",
                                      "note": "sampling is inside the card's per-sequence "
                                              "overhead; no separate term fitted"}
    rec["cuda_graph_max_tokens"] = {"value": GRAPH_CAP_TOKENS, "tier": "published",
                                    "source": "vllm-config"}
    rec["fit"] = {"rows": len(runs), "residuals": int(len(r)),
                  "rms_log_error": float(math.sqrt((r ** 2).mean())),
                  "nfev": int(res.nfev), "status": int(res.status),
                  "converged": bool(res.status > 0), "message": str(res.message),
                  "wall_s": round(wall, 1)}
    rec["notes"] = [
        "api_request_s and api_tokenize_s_per_input_token are spent FIFO by one API-server "
        "process; the step terms add to every engine step (sim/serving/overheads.py).",
        "cuda_graph_layer_fixed_scale multiplies the card's layer_fixed_us (from eager PyTorch "
        "layer microbenchmarks) in steps of at most cuda_graph_max_tokens tokens (CUDA graph "
        "replay); larger steps keep the eager value.",
        "Fitted values absorb whatever else the simulator misses on these runs (mean lengths "
        "instead of per-request ShareGPT lengths, card and precision mapping): read them as "
        "effective overheads, not as microbenchmarks."]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("# Written by benchmarks/fit_serving_overheads.py; do not edit by hand.\n"
                   + yaml.safe_dump(rec, sort_keys=False), encoding="utf-8")
    print(f"wrote {OUT.relative_to(REPO)}: " + ", ".join(
        f"{k}={getattr(ov, k):.3g}" for k in FIT_PARAMS) + f" ({rec['fit']})")


if __name__ == "__main__":
    main()
