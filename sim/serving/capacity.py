"""Capacity curves and the highest rate per replica that meets latency SLOs.

A capacity curve runs one replica at a range of offered rates with common random numbers (the
same arrival uniforms and lengths, scaled by the rate), so p99 TTFT is monotone in the rate and
bisection does not chase noise (modeling-notes.md). The max rate meeting the SLOs is found by
bisection on that curve and confirmed with an independent seed. A point must reach steady
state: a run whose arrivals span less than `STEADY_WINDOWS` times the mean in-service time of a
request (admission to last token) is run again with proportionally more requests (at most
`MAX_EXTENSION` times as many), since a short burst never fills the batch or builds the queue
that the same rate would build for good, and would overstate capacity. A point that cannot be
made long enough does not meet the SLOs. Results are cached on disk
under a hashlib key of every input, the code version and the calibration files' bytes, written
atomically; the fleet layer reads them without rerunning the simulator.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from sim.serving.metrics import Slo, summarize
from sim.serving.simulate import ServeSetup, simulate

TrafficAt = Callable[[float, int], object]
"""traffic_at(rate_rps, seed) -> a traffic source; the same seed must give the same requests
at every rate (common random numbers)."""


def meets(summary: dict, slo: Slo) -> bool:
    """p99 TTFT and p99 TPOT within the SLOs (MLPerf server-scenario style), nothing dropped."""
    if summary["unfinished"] or summary["finished"] == 0:
        return False
    if slo.ttft_ms is not None and summary["ttft_ms"]["p99"] > slo.ttft_ms:
        return False
    if slo.tpot_ms is not None and (summary["tpot_ms"]["p99"] or 0.0) > slo.tpot_ms:
        return False
    return True


STEADY_WINDOWS = 5.0
MAX_EXTENSION = 20


def _arrival_window_s(res) -> float:
    return float(res.arrival_s.max() - res.arrival_s.min()) if len(res.arrival_s) > 1 else 0.0


def _in_service_s(s: dict) -> float:
    e2e, queue = s["e2e_ms"]["mean"], s["queue_ms"]["mean"]
    return max((e2e or 0.0) - (queue or 0.0), 0.0) / 1e3


def run_point(setup: ServeSetup, traffic_at: TrafficAt, rate: float, seed: int,
              slo: Slo, lengthen_failing: bool = False) -> dict:
    """One offered rate, lengthened to steady state (module docstring). The search lengthens
    only runs that meet the SLOs (a longer run only loads the replica more); a curve lengthens
    every run, so its points compare with one another."""
    traffic = traffic_at(rate, seed)
    res = simulate(setup, traffic)
    s = summarize(res, slo, setup.hardware.card.power.tdp_w, setup.layout.cards)
    window_s = _arrival_window_s(res)
    need_s = STEADY_WINDOWS * _in_service_s(s)
    n = getattr(traffic, "num_requests", None)
    if (window_s < need_s and n and (lengthen_failing or meets(s, slo))
            and getattr(traffic, "duration_s", 1) is None and dataclasses.is_dataclass(traffic)):
        more = min(math.ceil(n * 1.1 * need_s / max(window_s, 1e-9)), n * MAX_EXTENSION)
        traffic = dataclasses.replace(traffic, num_requests=more)
        res = simulate(setup, traffic)
        s = summarize(res, slo, setup.hardware.card.power.tdp_w, setup.layout.cards)
        window_s = _arrival_window_s(res)
        need_s = STEADY_WINDOWS * _in_service_s(s)
    s["rate_rps"] = rate
    s["steady"] = window_s >= need_s
    s["requests_simulated"] = int(res.arrived)
    # a source that cannot be lengthened (a trace replay) is judged as it is
    s["meets_slo"] = meets(s, slo) and (s["steady"] or n is None)
    offered = s["requests"] / window_s if window_s > 0 else 0.0
    s["stable"] = bool(s["finished"] and s["duration_s"] > 0
                       and s["requests"] / s["duration_s"] >= 0.9 * offered)
    return s


def capacity_curve(setup: ServeSetup, traffic_at: TrafficAt, rates: list[float], slo: Slo,
                   seed: int = 0) -> pd.DataFrame:
    """One row per offered rate: latency percentiles, throughput, busy fraction, power."""
    rows = []
    for rate in sorted(rates):
        s = run_point(setup, traffic_at, rate, seed, slo, lengthen_failing=True)
        rows.append({
            "rate_rps": rate, "ttft_p50_ms": s["ttft_ms"]["p50"], "ttft_p99_ms": s["ttft_ms"]["p99"],
            "tpot_p50_ms": s["tpot_ms"]["p50"], "tpot_p99_ms": s["tpot_ms"]["p99"],
            "tokens_per_s": s["throughput_tokens_per_s"], "busy_fraction": s["busy_fraction"],
            "power_w": s.get("mean_power_w"), "slo_attainment": s["slo_attainment"],
            "meets_slo": s["meets_slo"], "stable": s["stable"]})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Capacity:
    max_rate_rps: float
    tokens_per_s: float
    tokens_per_s_per_card: float
    confirm_seed_meets: bool
    bracket: tuple[float, float]
    iterations: int
    summary: dict


def max_rate(setup: ServeSetup, traffic_at: TrafficAt, slo: Slo, lo: float = 0.0,
             hi: float | None = None, rel_tol: float = 0.02, seed: int = 0,
             confirm_seed: int = 1) -> Capacity:
    """Highest offered rate (req/s) per replica meeting `slo`, by bisection on the CRN curve."""
    if hi is None:  # grow an upper bracket until the SLO fails
        hi = 1.0
        while run_point(setup, traffic_at, hi, seed, slo)["meets_slo"]:
            lo, hi = hi, hi * 2
            if hi > 1e6:
                raise ValueError("SLO met at 1e6 req/s: the SLO does not constrain this setup")
    best = None
    it = 0
    while hi - lo > rel_tol * max(hi, 1e-9) and it < 40:
        mid = (lo + hi) / 2
        s = run_point(setup, traffic_at, mid, seed, slo)
        it += 1
        if s["meets_slo"]:
            lo, best = mid, s
        else:
            hi = mid
    if best is None:
        if lo <= 0:
            return Capacity(0.0, 0.0, 0.0, False, (lo, hi), it, {})
        best = run_point(setup, traffic_at, lo, seed, slo)
    # confidence check: an independent seed must also meet the SLO; back off in tolerance-
    # sized steps until both seeds agree (at most 10 steps, reported either way)
    conf = run_point(setup, traffic_at, lo, confirm_seed, slo)["meets_slo"]
    steps = 0
    while not conf and steps < 10 and lo > 0:
        lo *= 1 - rel_tol
        steps += 1
        best = run_point(setup, traffic_at, lo, seed, slo)
        conf = best["meets_slo"] and run_point(setup, traffic_at, lo, confirm_seed,
                                                slo)["meets_slo"]
    tps = best["throughput_tokens_per_s"]
    return Capacity(lo, tps, tps / setup.layout.cards, conf, (lo, hi), it + steps, best)


# ---- on-disk cache -----------------------------------------------------------------------------

def cache_dir() -> Path:
    return Path(os.environ.get("FLEETSIM_CACHE", Path.home() / ".cache" / "fleetsim"))


def cache_key(setup: ServeSetup, extra: dict, library_files: list[Path]) -> str:
    """sha256 over the setup (model, card, calibration factors, engine, layout), the traffic
    description, the package version, the source of the modules that compute a capacity and
    the bytes of the library files used."""
    from sim import __version__

    h = hashlib.sha256()
    desc = {
        "version": __version__, "code": _model_code_digest(),
        "model": setup.model.model_dump(mode="json"),
        "card": setup.hardware.card.model_dump(mode="json"),
        "factors": {k: dataclasses.asdict(v) for k, v in sorted(setup.hardware.factors.items())},
        "precision": dataclasses.asdict(setup.precision),
        "layout": dataclasses.asdict(setup.layout),
        "engine": dataclasses.asdict(setup.engine),
        "replicas": setup.replicas, "router": setup.router, "mode": setup.mode,
        "gpu_memory_utilization": setup.gpu_memory_utilization, "extra": extra,
    }
    h.update(json.dumps(desc, sort_keys=True, default=str).encode())
    for p in sorted(library_files):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _model_code_digest() -> str:
    """sha256 of the step model's and the serving simulator's source: a cached capacity from
    an older model is never reused after the code changes within one version number."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for p in sorted([*(root / "perf").glob("*.py"), *(root / "serving").glob("*.py")]):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cached(key: str, compute: Callable[[], dict]) -> dict:
    """Return the cached JSON for `key`, computing and writing it atomically if absent."""
    d = cache_dir()
    path = d / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    d.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(value, f, sort_keys=True, default=_json_default)
    os.replace(tmp, path)
    return value


def _json_default(o):
    if isinstance(o, float) and (math.isnan(o) or math.isinf(o)):
        return None
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
