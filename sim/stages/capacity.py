"""Stage 2, capacity: the max request rate per card meeting each workload's SLOs, per engine
release, from the serving simulator (cached on disk, keyed by everything it is computed from,
and in a `RunCache` passed in), with its perf facts; then each card's capacity over the
horizon under an engine plan (`software`) and the monthly trajectories the report draws.

`precision_for`, `calibration_files` and `engine_files` are shared with the CLI's `serve` and
`capacity` commands."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.paths import spec_overrides
from sim.fleet.timeline import HOURS_PER_YEAR
from sim.perf.estimate import estimate
from sim.perf.hardware import Hardware
from sim.perf.memory import TP_CHOICES, Layout
from sim.perf.offline import LengthMoments
from sim.perf.precision import Precision, PrecisionError
from sim.perf.software import (CardSoftware, card_capacity, history, in_force_at_start,
                               rate_quantiles, stack_of)
from sim.stages.inputs import power_cap_factor, resolve_path, software_rate
from sim.stages.resolve import Resolved

Progress = Callable[[str], None]


class RunCache:
    """In-process memo for pure, repeated sub-results (capacity rows, training plans): a Monte
    Carlo batch passes one cache to each of its runs, which then rerun only the fleet and the
    cost. Keys are JSON of plain values (sha256). The disk capacity cache lies beneath it."""

    MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._memo: dict[str, object] = {}

    def get(self, key: list, compute: Callable[[], object]):
        k = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        if k not in self._memo:
            if len(self._memo) > self.MAX_ENTRIES:
                self._memo.clear()
            self._memo[k] = compute()
        return self._memo[k]


@dataclass(frozen=True)
class Capacity:
    """The capacity stage's output."""

    by_engine: dict[tuple[str, str, str | None], dict]
    """Per (workload, card, engine release): the capacity row, efficiency applied."""
    frame: pd.DataFrame
    """Each (workload, card) on the release in force at the start (`Result.capacity`)."""


def precision_for(hw: Hardware, want: str) -> Precision:
    """The precision a card runs: `want`, else fp8, else bf16."""
    for name in (want, "fp8", "bf16"):
        p = Precision.preset(name)
        try:
            hw.check_precision(p)
            return p
        except PrecisionError:
            continue
    raise ConfigError(f"card '{hw.card_id}' runs none of {want}, fp8, bf16")


def capacity(rv: Resolved, cache: RunCache, say: Progress) -> Capacity:
    """Every needed capacity (searched side by side where the disk cache lacks them), each
    scaled by the card's efficiency and power-cap factor."""
    scn, lib = rv.scenario, rv.library
    prefetch(rv, say)
    by_engine = {x: capacity_row(rv, *x, cache, say) for x in rv.needed}
    for c in by_engine.values():
        c["efficiency"] = scn.efficiency.get(c["card"], 1.0) * power_cap_factor(
            scn, lib, c["card"], c["prefill_time_fraction"])
        c["rps_per_card"] = c["rps_per_card"] * c["efficiency"]
    frame = pd.DataFrame([by_engine[w, c, in_force_at_start(c, scn.engine, scn.start, lib)]
                          for w in scn.workloads for c in rv.serve_cards[w]])
    return Capacity(by_engine, frame)


def capacity_row(rv: Resolved, wname: str, card: str, engine: str | None, cache: RunCache,
                 say: Progress) -> dict:
    """One (workload, card, release) capacity row (cached on disk and in `cache`), a fresh dict
    each call."""
    scn, lib = rv.scenario, rv.library
    w = scn.workloads[wname]
    key = ["capacity", card, engine, w.model, w.precision, w.traffic.lengths, w.traffic.trace,
           w.slo.model_dump(mode="json"), scn.capacity_requests, scn.seed,
           [str(r) for r in lib.roots], str(rv.base), spec_overrides(scn)]
    row = cache.get(key, lambda: _disk_row(rv, wname, card, engine, say))
    # the row is shared by every workload with the same inputs (memo and disk cache): its
    # names are this call's
    return {**row, "workload": wname, "card": card}


def _disk_row(rv: Resolved, wname: str, card: str, engine: str | None, say: Progress) -> dict:
    """The capacity row from the disk cache, keyed by everything it is computed from (the card
    with its factors, the model, the precision, the files' bytes, the workload, the search's
    size and seed): a warm run reads it without rebuilding the estimates."""
    from sim.serving.capacity import cached

    key, hw, prec, files, trace = row_key(rv, wname, card, engine)
    return cached(key, lambda: _search(rv, wname, card, hw, prec, files, trace, say))


def row_key(rv: Resolved, wname: str, card: str, engine: str | None) -> tuple:
    """(disk-cache key of a capacity row, hardware, precision, library files, trace path)."""
    from sim.serving import traffic
    from sim.serving.capacity import cache_key
    from sim.serving.simulate import ServeSetup

    scn, lib = rv.scenario, rv.library
    w = scn.workloads[wname]
    hw = Hardware.load(card, lib, engine=engine, as_of=scn.start)
    prec = precision_for(hw, w.precision)
    files = [lib.path("card", card), lib.path("model", w.model), *engine_files(lib, hw)]
    trace = (resolve_path(rv.base, lib, w.traffic.trace, allow_outside=True)
             if w.traffic.trace else None)
    src = [trace] if trace else [lib.path("workload", w.traffic.lengths)]
    key = cache_key(ServeSetup(lib.model(w.model), hw, prec), {
        "row": 1, "workload": w.model_dump(mode="json", include={"model", "precision", "slo"}),
        "n": scn.capacity_requests, "seed": scn.seed,
        "max_trace_rows": traffic.DEFAULT_MAX_TRACE_ROWS},
        [*files, *src, *calibration_files(lib, card)])
    return key, hw, prec, files, trace


def calibration_files(lib: Library, card: str) -> list[Path]:
    """A card's calibration files: their bytes belong in a capacity's cache key."""
    return [lib.path("calibration", i) for i in lib.ids("calibration")
            if i == card or i.startswith(card + "@")]


def engine_files(lib: Library, hw: Hardware) -> list[Path]:
    """The engine record a card runs and its fit: their bytes belong in a cache key."""
    if hw.engine_id is None:
        return []
    files = [lib.path("engine", hw.engine_id)]
    if hw.engine_id in lib.ids("engine_fit"):
        files.append(lib.path("engine_fit", hw.engine_id))
    return files


def _search_one(args: tuple) -> None:
    """One capacity search on a worker process (it writes the disk cache)."""
    rv, wname, card, engine = args
    capacity_row(rv, wname, card, engine, RunCache(), lambda msg: None)


def prefetch(rv: Resolved, say: Progress) -> None:
    """Run the capacity searches the disk cache lacks side by side on worker processes (forked,
    so a script without a `__main__` guard is not re-run by its workers; where fork is missing
    the searches run in process), up to `FLEETSIM_WORKERS` or the CPU count; the run then reads
    them back in order, so the results do not depend on who computed what. A worker that dies
    leaves its search to the run itself."""
    from sim.serving.capacity import cache_dir

    workers = int(os.environ.get("FLEETSIM_WORKERS", os.cpu_count() or 1))
    misses = [x for x in rv.needed
              if not (cache_dir() / f"{row_key(rv, *x)[0]}.json").is_file()]
    import multiprocessing as mp

    if workers < 2 or len(misses) < 2 or "fork" not in mp.get_all_start_methods():
        return
    import concurrent.futures as cf

    n = min(workers, len(misses))
    say(f"capacity searches: {len(misses)} on {n} processes")
    try:
        with cf.ProcessPoolExecutor(n, mp_context=mp.get_context("fork")) as ex:
            futures = {ex.submit(_search_one, (rv, *x)): x for x in misses}
            for f in cf.as_completed(futures):
                f.result()  # a search's error surfaces here, as it would in process
                w, c, e = futures[f]
                say(f"capacity {w} on {c}{', ' + e if e else ''}: done")
    except cf.process.BrokenProcessPool:
        say("capacity searches: a worker process died; the rest run in this process")


def _moments(rv: Resolved, wname: str, trace: Path | None, files: list[Path]) -> tuple:
    """(request lengths to draw from, their moments) of a workload: its trace's, else its
    length mix's; a trace is added to `files`."""
    from sim.serving.traffic import EmpiricalLengths, LognormalLengths

    w = rv.scenario.workloads[wname]
    if trace is not None:
        lengths = EmpiricalLengths.from_trace(trace)
        files.append(trace)
        return lengths, LengthMoments(float(lengths.input_tokens.mean()),
                                      float(lengths.output_tokens.mean()),
                                      float((lengths.input_tokens.astype(float) ** 2).mean()))
    mix = rv.library.lengths(w.traffic.lengths)
    lo = mix.lengths.output_tokens
    return LognormalLengths.from_mix(mix), LengthMoments(
        mix.lengths.input_tokens.mean, lo.mean, mix.lengths.input_tokens.second_moment,
        lo.second_moment, float(lo.max))


def _estimates(rv: Resolved, wname: str, card: str, hw: Hardware, prec: Precision,
               moments: LengthMoments) -> list:
    """The offline best layout's estimate and, under latency SLOs, twice its TP: a wider
    replica can serve more per card than the offline optimum (shorter steps leave room for
    larger batches within the TPOT limit)."""
    lib, w = rv.library, rv.scenario.workloads[wname]
    best = estimate(card, w.model, prec, moments, library=lib, hardware=hw)
    if not best.fits:
        raise ConfigError(f"workloads.{wname}: {w.model} does not fit on {card} "
                          f"({best.reason})")
    wide = 2 * best.tp
    ests = [best]
    if (wide in TP_CHOICES and lib.model(w.model).architecture.num_attention_heads % wide == 0
            and wide <= max(8, hw.card.scale_up.domain_size)):
        e = estimate(card, w.model, prec, moments, library=lib, hardware=hw, tp=wide)
        if e.fits:
            ests.append(e)
    return ests


def search_rate(setups: list, traffic_for: Callable, slo, where: str, n: int) -> dict:
    """The best max rate per card over replica setups (one per TP): `{max_rate_rps_per_replica,
    tp}`. `where` locates the error of a search that cannot certify any rate."""
    from sim.serving.capacity import max_rate

    best = None
    for setup in setups:
        try:
            cap = max_rate(setup, traffic_for, slo)
        except ValueError as exc:  # e.g. a burst of n requests fits the SLO at any rate
            raise ConfigError(f"{where}: {exc} with capacity_requests {n}; raise "
                              "capacity_requests") from None
        tp = setup.layout.tp
        if best is None or cap.max_rate_rps / tp > best[0] / best[1]:
            best = (cap.max_rate_rps, tp)
    assert best is not None
    return {"max_rate_rps_per_replica": best[0], "tp": best[1]}


def _search(rv: Resolved, wname: str, card: str, hw: Hardware, prec: Precision,
            files: list[Path], trace: Path | None, say: Progress) -> dict:
    """Search the max rate per card at the workload's SLOs (its own disk-cache entry) and
    describe the row: TP, precision, prefill share, calibration, engine, roofline ratio."""
    from sim.serving.capacity import cache_key, cached
    from sim.serving.engine import EngineConfig
    from sim.serving.metrics import Slo
    from sim.serving.simulate import ServeSetup
    from sim.serving.traffic import PoissonTraffic

    scn, lib = rv.scenario, rv.library
    w = scn.workloads[wname]
    files = list(files)
    lengths, moments = _moments(rv, wname, trace, files)
    ests = _estimates(rv, wname, card, hw, prec, moments)
    slo, n = Slo(w.slo.ttft_p99_ms, w.slo.tpot_p99_ms), scn.capacity_requests
    files += calibration_files(lib, card)

    def setup_for(est) -> ServeSetup:
        engine = EngineConfig(max_num_seqs=max(min(est.batch_size, 1024), 1))
        return ServeSetup(lib.model(w.model), hw, prec, Layout(tp=est.tp), 1, engine)

    key = cache_key(setup_for(ests[0]), {
        "lengths": w.traffic.lengths or str(w.traffic.trace), "n": n, "seed": scn.seed,
        "slo": [slo.ttft_ms, slo.tpot_ms], "tps": [e.tp for e in ests], "run": 4}, files)
    say(f"capacity {wname} on {card} (TP{'/'.join(str(e.tp) for e in ests)}"
        f"{', ' + hw.engine_id if hw.engine_id else ''})")

    def compute() -> dict:
        if slo.ttft_ms is None and slo.tpot_ms is None:  # throughput only: the offline optimum
            return {"max_rate_rps_per_replica": ests[0].offline_tokens_per_s_per_card
                    * ests[0].tp / moments.osl, "tp": ests[0].tp}
        return search_rate([setup_for(e) for e in ests],
                           lambda r, s: PoissonTraffic(r, n, lengths, scn.seed + s), slo,
                           f"workloads.{wname}: on {card}", n)

    out = cached(key, compute)
    return _describe(rv, wname, card, hw, prec, moments,
                     next(e for e in ests if e.tp == out["tp"]), out)


def _describe(rv: Resolved, wname: str, card: str, hw: Hardware, prec: Precision,
              moments: LengthMoments, est, out: dict) -> dict:
    ideal = estimate(card, rv.scenario.workloads[wname].model, prec, moments,
                     library=rv.library, hardware=hw.roofline(), tp=est.tp)
    return {"card": card, "workload": wname, "tp": est.tp, "precision": prec.label,
            "rps_per_card": out["max_rate_rps_per_replica"] / est.tp,
            "prefill_time_fraction": est.prefill_time_fraction,
            "calibration_tiers": ", ".join(f"{k}: {v}" for k, v in
                                           sorted(est.calibration_tiers.items())),
            "assumed_factors": ", ".join(sorted(k for k, v in est.calibration_tiers.items()
                                                if v == "assumed")),
            "input_tokens": moments.isl, "output_tokens": moments.osl,
            "engine": hw.engine_id, "engine_version": est.engine_version,
            "engine_date": est.engine_date,
            "roofline_ratio": ideal.offline_tokens_per_s_per_card
            / est.offline_tokens_per_s_per_card}


def software(rv: Resolved, cap: Capacity, wname: str, card: str, plan,
             rate: float | None = None) -> CardSoftware:
    """A card's capacity hour by hour under an engine plan: the releases in force, then the
    stack's projection (`rate`, default the scenario's) under the roofline."""
    rows = {e: r for (w, c, e), r in cap.by_engine.items() if w == wname and c == card}
    return card_capacity(card, plan, rv.scenario.start, rv.hours, rv.library,
                         {e: r["rps_per_card"] for e, r in rows.items()},
                         {e: r["roofline_ratio"] for e, r in rows.items()},
                         software_rate(rv.scenario, rv.library, card) if rate is None else rate)


def trajectories(rv: Resolved, cap: Capacity) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Monthly capacity per (workload, card) under the scenario's plan with its band, and the
    history points (the report's software-over-time figure)."""
    if not len(cap.frame):
        return pd.DataFrame(), pd.DataFrame()
    scn, lib = rv.scenario, rv.library
    month = rv.hours[:: int(HOURS_PER_YEAR // 12)].astype(int)
    rows, hist = [], []
    for r in cap.frame.itertuples():
        lo_rate, hi_rate = rate_quantiles(stack_of(r.card, lib), lib)
        mid = software(rv, cap, r.workload, r.card, scn.engine)
        lo = software(rv, cap, r.workload, r.card, scn.engine, min(lo_rate, mid.rate_per_year))
        hi = software(rv, cap, r.workload, r.card, scn.engine, max(hi_rate, mid.rate_per_year))
        top = mid.release_end_rps * mid.ceiling
        for h in month:
            rows.append({"workload": r.workload, "card": r.card, "hour": int(h),
                         "capacity_rps": float(mid.capacity_rps[h]),
                         "low_rps": float(lo.capacity_rps[h]),
                         "high_rps": float(hi.capacity_rps[h]), "roofline_rps": float(top),
                         "stack": stack_of(r.card, lib) or "none"})
        hist += [{"workload": r.workload, **x} for x in
                 history(r.card, mid.in_force[0], float(mid.capacity_rps[0]), lib)]
    return pd.DataFrame(rows), pd.DataFrame(hist)


def mix_capacity(workloads: list, tl) -> dict[str, np.ndarray]:
    """Per card: requests/s one card serves at each hour's demand mix over the workloads,
    1 / sum_w(share_w / rate_w) (the rate itself for one workload)."""
    H = len(tl.hours)
    total = sum(tl.demand_rps[w.name] for w in workloads)
    cards = sorted({c for w in workloads for c in w.capacity_rps_per_card})
    out = {}
    for c in cards:
        per_req = np.zeros(H)
        for w in workloads:
            share = np.divide(tl.demand_rps[w.name], total, out=np.full(H, 1 / len(workloads)),
                              where=total > 0)
            rate = w.capacity(c, H)
            per_req += np.divide(share, rate, out=np.full(H, np.inf), where=rate > 0)
        out[c] = np.divide(1.0, per_req, out=np.zeros(H), where=np.isfinite(per_req))
    return out
