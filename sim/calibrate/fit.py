"""Turn raw microbenchmark points (`python -m sim.calibrate.run`) into `measured` calibration.

    memory.bandwidth_fraction       median of the large copy and triad rates / spec bandwidth
    gemm.<dtype>, m_half_tokens,    least-squares fit (in log time) of the perf model's GEMM
    kernel_latency_us               form to the LLM-shaped points:
                                    t = t0 + max(bytes / bw_measured,
                                                 flops / (peak · e · M/(M+m_half)))
    attention.decode_bandwidth_efficiency
                                    median KV read rate of decode attention (batch >= 32,
                                    context >= 1024) / measured copy bandwidth

    layer_fixed_us                  median, over compiled-layer decode points with batch <= 64,
                                    of (CUDA-graph replay time - the model's layer time without
                                    this term): the non-GEMM kernels' fixed cost per layer

Not fitted, on purpose: prefill attention (torch SDPA runs FlashAttention-2 kernels on Hopper,
while serving engines run FA3 / TensorRT-LLM FMHA, so the measurement is of another kernel),
per-step engine overhead (an engine property, not a kernel one) and all-reduce on one GPU.
FP8 uses the fast-accumulation points: the CUTLASS FP8 kernels of vLLM and TensorRT-LLM on
Hopper use FastAccum schedules.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import least_squares

from sim.config.card import CardSpec

PROVENANCE_KEYS = ("device_name", "date_utc", "command_line", "torch_version")

DTYPE_KEYS = {"bf16": ("bf16", None), "fp8": ("fp8_e4m3", True)}


def _gemm_points(raw: dict, dtype: str) -> list[dict]:
    name, fast = DTYPE_KEYS[dtype]
    pts = raw["sections"].get("gemm", {}).get("points", [])
    return [p for p in pts if p.get("dtype") == name and p.get("model")
            and (fast is None or p.get("fast_accum") == fast) and p.get("median_s")]


def fit_gemm(points: list[dict], peak_flops: float,
             bw_bps: float) -> tuple[float, float, float, float]:
    """(efficiency at large M, m_half tokens, kernel latency s, rms log error)."""
    M = np.array([p["M"] for p in points], float)
    flops = np.array([2.0 * p["M"] * p["N"] * p["K"] for p in points])
    byts = np.array([p.get("bytes") or 0.0 for p in points], float)
    t = np.array([p["median_s"] for p in points])

    def resid(x):
        e, mh, t0_us = x
        pred = t0_us * 1e-6 + np.maximum(byts / bw_bps, flops / (peak_flops * e * M / (M + mh)))
        return np.log(pred) - np.log(t)

    sol = least_squares(resid, x0=[0.75, 48.0, 5.0], bounds=([0.05, 0.0, 0.0],
                                                             [1.2, 4096.0, 1000.0]))
    rms = float(np.sqrt(np.mean(sol.fun**2)))
    return float(sol.x[0]), float(sol.x[1]), float(sol.x[2]) * 1e-6, rms


def _sustained_fraction(raw: dict) -> tuple[float, str] | None:
    """Sustained (10 s, power-limited) over burst TFLOPS on the same square shape, averaged
    over the dtypes measured."""
    pts = raw["sections"].get("gemm", {}).get("points", [])
    ratios, parts = [], []
    for p in pts:
        if p.get("shape") != "sustained" or not p.get("tflops_median"):
            continue
        burst = [q for q in pts if q.get("shape") == "square" and q.get("M") == p.get("M")
                 and q.get("dtype") == p.get("dtype") and q.get("fast_accum") == p.get(
                     "fast_accum") and q.get("tflops")]
        if burst:
            r = p["tflops_median"] / burst[0]["tflops"]
            ratios.append(r)
            clk = (p.get("telemetry") or {}).get("sm_clock_mhz_median")
            parts.append(f"{p['dtype']} {p['tflops_median']:.0f}/{burst[0]['tflops']:.0f} TFLOPS"
                         + (f" at {clk:.0f} MHz" if clk else ""))
    if not ratios:
        return None
    return statistics.mean(ratios), "sustained/burst at M=N=K=8192: " + "; ".join(parts)


def fit(raw: dict, card_id: str, card: CardSpec, raw_path: str) -> dict[str, Any]:
    """A calibration record (plain data, ready for YAML) with tier `measured` values."""
    prov = raw.get("provenance", {})
    src_id = "measured"
    note_prov = (f"{prov.get('device_name')}, driver {prov.get('driver_version')}, CUDA "
                 f"{prov.get('cuda_version')}, torch {prov.get('torch_version')}, "
                 f"{prov.get('date_utc', '')[:10]}, `{prov.get('command_line')}`")
    out: dict[str, Any] = {
        "card": card_id,
        "stack": card.stack,
        "stack_version": f"torch {prov.get('torch_version')} / CUDA {prov.get('cuda_version')}",
        "sources": {src_id: {
            "citation": f"fleetsim calibration run, raw points in {raw_path} ({note_prov})",
            "date": str(prov.get("date_utc", ""))[:10] or "2026",
            "tag": "independent",
        }},
    }
    spec_bw = card.memory.bandwidth_tbps * 1e12
    summary = raw["sections"].get("memory_bandwidth", {}).get("summary", {})
    rates = [summary[k] for k in ("copy", "triad") if k in summary]
    if not rates:
        raise ValueError("measurement has no memory_bandwidth copy/triad summary")
    bw = statistics.median(rates)
    out["memory"] = {"bandwidth_fraction": {
        "value": round(bw / spec_bw, 4), "tier": "measured", "source": src_id,
        "note": f"copy {summary.get('copy', 0) / 1e12:.3f} / triad "
                f"{summary.get('triad', 0) / 1e12:.3f} TB/s of {card.memory.bandwidth_tbps} TB/s"}}
    gemm: dict[str, Any] = {}
    for dtype in ("bf16", "fp8"):
        pts = _gemm_points(raw, dtype)
        peak = card.compute.peak_tflops(dtype)
        if not pts or peak is None:
            continue
        e, mh, t0, rms = fit_gemm(pts, peak * 1e12, bw)
        gemm[dtype] = {"value": round(e, 4), "tier": "measured", "source": src_id,
                       "note": f"fit to {len(pts)} LLM-shaped GEMMs (m_half {mh:.1f}, t0 "
                               f"{t0 * 1e6:.2f} us), rms log error {rms:.3f}"}
        if dtype == "bf16":
            gemm["m_half_tokens"] = {"value": round(mh, 1), "tier": "measured", "source": src_id,
                                     "note": f"BF16 fit, rms log error {rms:.3f}"}
            gemm["kernel_latency_us"] = {"value": round(t0 * 1e6, 2), "tier": "measured",
                                         "source": src_id, "note": "BF16 fit"}
    sus = _sustained_fraction(raw)
    if sus is not None:
        gemm["sustained_fraction"] = {"value": round(sus[0], 4), "tier": "measured",
                                      "source": src_id, "note": sus[1]}
    out["gemm"] = gemm
    dec = [p for p in raw["sections"].get("attention_decode", {}).get("points", [])
           if p.get("batch", 0) >= 32 and p.get("context", 0) >= 1024 and p.get("kv_bytes_per_s")]
    if dec:
        eff = statistics.median(p["kv_bytes_per_s"] for p in dec) / bw
        out["attention"] = {"decode_bandwidth_efficiency": {
            "value": round(min(eff, 1.2), 4), "tier": "measured", "source": src_id,
            "note": f"torch SDPA decode over {len(dec)} points (batch >= 32, context >= 1024)"}}
    return out


def layer_fixed_us(raw: dict, card_id: str, library) -> tuple[float, str] | None:
    """Fixed non-GEMM time per layer from compiled-layer decode points replayed as CUDA graphs."""
    from sim.calibrate.check import RAW_MODEL_IDS, check
    from sim.perf.hardware import Factor

    pts = [p for p in raw.get("sections", {}).get("layer_compiled", {}).get("points", [])
           if p.get("phase") == "decode" and p.get("graph_median_s") and p.get("batch", 0) <= 64]
    if not pts:
        return None
    zero = {"layer_fixed_us": Factor(0.0, "measured", "fit")}
    rows = check({"sections": {"layer_compiled": {"points": pts}}}, card_id, library, zero)
    gaps = []
    for p, r in zip(pts, rows):
        assert r.model == RAW_MODEL_IDS[p["model"]] and r.batch == p["batch"]
        gaps.append((p["graph_median_s"] - r.predicted_s) * 1e6)
    return statistics.median(gaps), (
        f"median over {len(gaps)} compiled decode layers (batch <= 64, CUDA-graph replay) of "
        f"measured minus roofline time: {', '.join(f'{g:.1f}' for g in gaps)} us")


def fit_file(raw_path: Path | list[Path], card_id: str, out_path: Path,
             library=None) -> dict[str, Any]:
    """Fit one or more raw measurement files of the same card (later files add sections)."""
    from sim.config.calibration import Calibration
    from sim.config.library import Library
    from sim.config.loader import read_yaml, validate

    from sim.config.loader import ConfigError

    lib = library or Library.default()
    paths = raw_path if isinstance(raw_path, list) else [raw_path]
    raws = [read_yaml(p) for p in paths]
    for p, r in zip(paths, raws):
        if not isinstance(r, dict) or not isinstance(r.get("sections"), dict):
            raise ConfigError(f"{p}: sections: missing (not a `python -m sim.calibrate.run` file)")
        prov = r.get("provenance")
        missing = [k for k in PROVENANCE_KEYS if not (isinstance(prov, dict) and prov.get(k))]
        if missing:
            raise ConfigError(f"{p}: provenance: missing {', '.join(missing)}; a measurement "
                              "without provenance cannot become calibration")
    raw = {"provenance": raws[0].get("provenance", {}), "sections": {}}
    for r in raws:
        for name, sec in r.get("sections", {}).items():
            if sec.get("status") == "ok" and name not in raw["sections"]:
                raw["sections"][name] = sec
    rec = fit(raw, card_id, lib.card(card_id), ", ".join(p.as_posix() for p in paths))
    lf = layer_fixed_us(raw, card_id, lib)
    if lf is not None:
        rec["layer_fixed_us"] = {"value": round(lf[0], 2), "tier": "measured",
                                 "source": "measured", "note": lf[1]}
    validate(Calibration, rec, str(out_path))  # what we write must load
    text = ("# Written by `fleetsim calibrate fit`; measured tier, preferred over published.\n"
            + yaml.safe_dump(rec, sort_keys=False, width=100))
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(out_path)
    return rec
