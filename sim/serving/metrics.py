"""Serving metrics as vLLM's benchmark (`benchmark_serving`) defines them, and result frames.

    TTFT = first token time - arrival
    TPOT = (e2e - TTFT) / (output tokens - 1)      (requests with one output token have none)
    e2e  = finish - arrival
SLO attainment is the share of arrived requests that finished and met every SLO given;
goodput is the rate of such requests over the run (first arrival to last finish).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.serving.simulate import ServeResult

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Slo:
    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def __post_init__(self) -> None:
        for f in ("ttft_ms", "tpot_ms"):
            v = getattr(self, f)
            if v is not None and not v > 0:
                raise ValueError(f"SLO {f} must be > 0 (got {v})")


def per_request(res: ServeResult) -> pd.DataFrame:
    """One row per finished request, ordered by request id."""
    df = pd.DataFrame({
        "request_id": res.rid, "replica": res.replica, "arrival_s": res.arrival_s,
        "first_token_s": res.first_token_s, "finish_s": res.finish_s,
        "input_tokens": res.input_tokens, "output_tokens": res.output_tokens,
        "preemptions": res.preemptions,
    }).sort_values("request_id", kind="stable").reset_index(drop=True)
    df["queue_s"] = res.first_scheduled_s[np.argsort(res.rid, kind="stable")] - df["arrival_s"]
    df["ttft_s"] = df["first_token_s"] - df["arrival_s"]
    df["e2e_s"] = df["finish_s"] - df["arrival_s"]
    out = df["output_tokens"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        df["tpot_s"] = np.where(out > 1, (df["e2e_s"] - df["ttft_s"]) / (out - 1), np.nan)
    return df


def per_replica_timeline(res: ServeResult) -> pd.DataFrame:
    """Replica state over time: one row per simulated event (step or decode span)."""
    df = pd.DataFrame(res.timeline)
    if len(df):
        df["kv_occupancy"] = df["kv_blocks_used"] / max(res.replica_total_blocks, 1)
    return df


def _queue_grows(df: pd.DataFrame) -> bool:
    """Overload shows as queueing that grows through the run: the median wait before first
    being scheduled in the last quarter of arrivals exceeds 4x that of the first quarter plus
    one second. (A finite run always drains, so "never finished" cannot be the test.)"""
    if len(df) < 8:
        return False
    q = df.sort_values("arrival_s")["queue_s"].to_numpy()
    n = len(q) // 4
    return bool(np.median(q[-n:]) > 4 * np.median(q[:n]) + 1.0)


def _dist_ms(x: np.ndarray) -> dict[str, float | None]:
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
    out = {"mean": float(np.mean(x) * 1e3)}
    for p, v in zip(PERCENTILES, np.percentile(x, PERCENTILES)):
        out[f"p{p}"] = float(v * 1e3)
    return out


def _stream_summary(res: ServeResult, slo: Slo) -> dict:
    """The per-request part of `summarize` for a streamed run: the Parquet file read back in
    batches; percentiles from mergeable quantile sketches (one per batch, merged), counts,
    sums and extremes exact."""
    import pyarrow.parquet as pq

    from sim.serving.sketch import QuantileSketch

    names = ("ttft", "tpot", "e2e", "queue")
    total = {k: QuantileSketch() for k in (*names, "queue_first", "queue_last")}
    n = ok_count = out_tokens = in_tokens = preempt = 0
    start, end = np.inf, -np.inf
    q1, q3 = res.arrived / 4, 3 * res.arrived / 4  # request ids count arrivals in order
    cols = ["request_id", "arrival_s", "finish_s", "input_tokens", "output_tokens",
            "preemptions", "queue_s", "ttft_s", "e2e_s", "tpot_s"]
    f = pq.ParquetFile(res.per_request_path)
    for g in range(f.num_row_groups):  # one row group at a time (iter_batches pre-buffers all)
        batch = f.read_row_group(g, columns=cols)
        b = {c: batch.column(c).to_numpy() for c in cols}
        part = {k: QuantileSketch() for k in total}
        for k in names:
            part[k].add_many(b[f"{k}_s"])
        part["queue_first"].add_many(b["queue_s"][b["request_id"] < q1])
        part["queue_last"].add_many(b["queue_s"][b["request_id"] >= q3])
        for k in total:
            total[k].merge(part[k])
        ok = np.ones(len(b["ttft_s"]), dtype=bool)
        if slo.ttft_ms is not None:
            ok &= b["ttft_s"] * 1e3 <= slo.ttft_ms
        if slo.tpot_ms is not None:
            ok &= np.nan_to_num(b["tpot_s"], nan=0.0) * 1e3 <= slo.tpot_ms
        ok_count += int(ok.sum())
        n += len(ok)
        out_tokens += int(b["output_tokens"].sum())
        in_tokens += int(b["input_tokens"].sum())
        preempt += int(b["preemptions"].sum())
        if len(ok):
            start = min(start, float(b["arrival_s"].min()))
            end = max(end, float(b["finish_s"].max()))

    def dist(sk) -> dict[str, float | None]:
        if sk.count == 0:
            return {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
        return {"mean": sk.mean * 1e3, **{f"p{p}": sk.quantile(p / 100) * 1e3
                                           for p in PERCENTILES}}

    qf, ql = total["queue_first"].quantile(0.5), total["queue_last"].quantile(0.5)
    grows = n >= 8 and qf is not None and ql is not None and ql > 4 * qf + 1.0
    return {"n": n, "ok": ok_count, "start": start if n else 0.0, "end": end if n else 0.0,
            "output_tokens": out_tokens, "input_tokens": in_tokens, "preemptions": preempt,
            "grows": grows, **{f"{k}_ms": dist(total[k]) for k in names},
            "sketch_relative_accuracy": total["ttft"].alpha}


def summarize(res: ServeResult, slo: Slo = Slo(), card_tdp_w: float | None = None,
              cards_per_replica: int = 1) -> dict:
    """Summary dict: latency distributions, SLO attainment, goodput, throughput, busy, power.

    A streamed run (`res.per_request_path`) is summarised from its Parquet file in bounded
    memory: percentiles then come from quantile sketches (relative accuracy
    `sketch_relative_accuracy`, reported), everything else is exact."""
    if res.per_request_path:
        st = _stream_summary(res, slo)
        span = max(st["end"] - st["start"], 1e-9)
        busy = [min(b / span, 1.0) for b in res.replica_busy_s]
        out = {
            "requests": int(res.arrived), "finished": st["n"],
            "unfinished": int(res.unfinished), "rejected": int(res.rejected),
            "clipped": int(res.clipped),
            **{k: st[k] for k in ("ttft_ms", "tpot_ms", "e2e_ms", "queue_ms")},
            "slo_attainment": float(st["ok"] / res.arrived) if res.arrived else None,
            "goodput_rps": float(st["ok"] / span),
            "throughput_tokens_per_s": float(st["output_tokens"] / span),
            "input_tokens_per_s": float(st["input_tokens"] / span),
            "duration_s": span,
            "busy_fraction": float(np.mean(busy)) if busy else 0.0,
            "preemptions": st["preemptions"],
            "peak_kv_block_fraction": float(max(res.replica_peak_blocks)
                                            / res.replica_total_blocks)
            if res.replica_total_blocks else None,
            "unstable": st["grows"] or bool(res.unfinished),
            "mode": res.mode, "events": int(res.events), "sim_wall_s": float(res.sim_wall_s),
            "per_request_path": res.per_request_path,
            "sketch_relative_accuracy": st["sketch_relative_accuracy"],
        }
        if card_tdp_w:
            out.update(power_summary(res, span, card_tdp_w, cards_per_replica,
                                     output_tokens=st["output_tokens"]))
        return out
    df = per_request(res)
    ttft, tpot = df["ttft_s"].to_numpy(), df["tpot_s"].to_numpy()
    ok = np.ones(len(df), dtype=bool)
    if slo.ttft_ms is not None:
        ok &= ttft * 1e3 <= slo.ttft_ms
    if slo.tpot_ms is not None:
        ok &= np.nan_to_num(tpot, nan=0.0) * 1e3 <= slo.tpot_ms
    start = float(df["arrival_s"].min()) if len(df) else 0.0
    end = float(df["finish_s"].max()) if len(df) else 0.0
    span = max(end - start, 1e-9)
    busy = [min(b / span, 1.0) for b in res.replica_busy_s]
    out = {
        "requests": int(res.arrived),
        "finished": int(len(df)),
        "unfinished": int(res.unfinished),
        "rejected": int(res.rejected),
        "clipped": int(res.clipped),
        "ttft_ms": _dist_ms(ttft),
        "tpot_ms": _dist_ms(tpot),
        "e2e_ms": _dist_ms(df["e2e_s"].to_numpy()),
        "queue_ms": _dist_ms(df["queue_s"].to_numpy()),
        "slo_attainment": float(ok.sum() / res.arrived) if res.arrived else None,
        "goodput_rps": float(ok.sum() / span),
        "throughput_tokens_per_s": float(df["output_tokens"].sum() / span),
        "input_tokens_per_s": float(df["input_tokens"].sum() / span),
        "duration_s": span,
        "busy_fraction": float(np.mean(busy)) if busy else 0.0,
        "preemptions": int(df["preemptions"].sum()),
        "peak_kv_block_fraction": float(max(res.replica_peak_blocks) / res.replica_total_blocks)
        if res.replica_total_blocks else None,
        "unstable": _queue_grows(df) or bool(res.unfinished),
        "mode": res.mode,
        "events": int(res.events),
        "sim_wall_s": float(res.sim_wall_s),
    }
    if card_tdp_w:
        out.update(power_summary(res, span, card_tdp_w, cards_per_replica))
    return out


# Power model (reference-data C5, InferenceX power experiment): average board power during
# decode ≈ 45-60% of TDP, prefill bursts approach TDP, idle ≈ 10-15% of TDP.
IDLE_TDP_FRACTION = 0.125
DECODE_TDP_FRACTION = 0.55
PREFILL_TDP_FRACTION = 0.95


def power_summary(res: ServeResult, span_s: float, tdp_w: float, cards: int,
                  output_tokens: float | None = None) -> dict:
    """Mean power and energy of the accelerators (not the host) over the run."""
    energy_j = 0.0
    for busy, pre in zip(res.replica_busy_s, res.replica_prefill_busy_s):
        dec = max(busy - pre, 0.0)
        idle = max(span_s - busy, 0.0)
        energy_j += cards * tdp_w * (PREFILL_TDP_FRACTION * pre + DECODE_TDP_FRACTION * dec
                                     + IDLE_TDP_FRACTION * idle)
    tokens = float(res.output_tokens.sum()) if output_tokens is None else float(output_tokens)
    return {"mean_power_w": energy_j / span_s, "energy_j": energy_j,
            "joules_per_output_token": energy_j / tokens if tokens else None}
