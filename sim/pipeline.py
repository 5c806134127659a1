"""`sim.run(scenario)` (this module's `run`): a scenario through every layer, to tidy results.

    scenario ─► perf (TP, prefill share, training speed) ─► serving (capacity per card at the
    SLOs, cached) ─► fleet (hourly timeline per option) ─► cost (cash flows, NPV, $/M tokens)
    ─► Result (frames, summary, winner)

Conventions: hour 0 is the scenario's `start`; dates in the file (`at`, `start`) are converted
to hours from it. Server power per card is the card's TDP scaled as a DGX H100 is (10.2 kW per
8 x 700 W GPUs, reference-data E4: x1.82). Peak demand is the diurnal peak: the mean rate is
peak / (1 + diurnal amplitude). An option meets its SLOs when at least `SLO_TOLERANCE` of the
demand is served by owned or rented cards within their SLO capacity; the winner is the cheapest
option by NPV among those that do (unserved demand priced as configured), or none.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config.library import Library
from sim.config.loader import ConfigError
from sim.config.paths import scenario_library, spec_overrides
from sim.config.scenario import (SERVER_KW_PER_CARD_KW, Scenario, card_power_w,
                                 hours_after_start, load_scenario)
from sim.cost.finance import FinanceAssumptions, ResidualCurve, SoftwareCost
from sim.cost.fleet_cost import price_timeline
from sim.fleet.timeline import (HOURS_PER_YEAR, Campaign, Demand, FleetOption, Lease, LeadTime,
                                FleetError, Purchase, Reliability, Reserved, Workload,
                                simulate_fleet)
from sim.perf.estimate import estimate
from sim.perf.hardware import Hardware
from sim.perf.memory import TP_CHOICES, Layout
from sim.perf.offline import LengthMoments
from sim.perf.precision import Precision, PrecisionError
from sim.perf.software import (CardSoftware, card_capacity, default_rate, history,
                               in_force_at_start, rate_quantiles, schedule, stack_of)
from sim.report import json_safe, md_text

SERVER_POWER_PER_TDP = SERVER_KW_PER_CARD_KW  # DGX H100: 10.2 kW for 8 x 700 W GPUs (E4)
SLO_TOLERANCE = 0.99


@dataclass
class Result:
    scenario: Scenario
    per_year: pd.DataFrame
    per_hour: pd.DataFrame
    summary: dict
    capacity: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    analyses: dict = field(default_factory=dict)
    """Experiments run on this scenario (`sim.experiments.suite.run_analyses`): Monte Carlo,
    tornado, flip points, sweep; written to results/ and shown in the report."""
    software: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per (option, workload, card): the engine releases it runs and from when, the projection
    past the last one (rate, roofline ceiling) and its capacity at the start and the end."""
    trajectory: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per (workload, card) under the scenario's engine plan, monthly: capacity per card, its
    5-95% band from the stack's rate, and the roofline ceiling (requests/s per card)."""
    software_history: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The stacks' dated releases as each card's capacity (history points, with sources)."""

    @property
    def plot(self):
        """Figures of this result: `res.plot.cost_per_year()`, `.capacity_vs_demand()`, ...
        (`sim.report.plots.ResultPlots`; matplotlib Figures, shown inline in Jupyter)."""
        from sim.report.plots import ResultPlots
        return ResultPlots(self)

    def _repr_html_(self) -> str:
        from sim.report.repr import result_html
        return result_html(self)

    def to_dir(self, out: Path, force: bool = False) -> Path:
        """Write results atomically: a temporary folder renamed at the end."""
        out = Path(out)
        if out.exists() and not force:
            raise ConfigError(f"{out}: already exists (use --force to replace it)")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            (tmp / "results").mkdir()
            self.per_year.to_parquet(tmp / "results" / "per_year.parquet", index=False)
            self.per_hour.to_parquet(tmp / "results" / "per_hour.parquet", index=False)
            self.capacity.to_parquet(tmp / "results" / "capacity.parquet", index=False)
            if len(self.software):
                self.software.to_parquet(tmp / "results" / "software.parquet", index=False)
            from sim.report.analysis import verdict

            summary = {**self.summary, **verdict(self)}
            (tmp / "summary.json").write_text(json.dumps(json_safe(summary), indent=2,
                                                         sort_keys=True) + "\n")
            (tmp / "scenario.resolved.yaml").write_text(resolved_yaml(self.scenario))
            if self.analyses:
                from sim.report.analysis import write_results
                write_results(self.analyses, tmp / "results", "analysis")
            (tmp / "report.md").write_text(render_markdown(self))
            from sim.report.html import render_html
            (tmp / "report.html").write_text(render_html(self), encoding="utf-8")
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; results are for sharing
            if out.exists():
                shutil.rmtree(out)
            os.replace(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return out


DEFAULT_SOURCES = {
    "finance.discount_rate": "assumed 8% nominal (sim/cost/finance.py)",
    "reliability.failures_per_card_year": "reference-data D1: 0.17 per GPU-year (Llama 3, H100)",
    "reliability.infant_mortality": "reference-data D2: 5% within 30 days (3-10%)",
    "reliability.repair_hours": "assumed 72 h (no public MTTR, reference-data D2)",
    "finance.maintenance_fraction_per_year": "assumed 3% of capex per year (sim/cost/finance.py)",
    "finance.server_multiplier": "reference-data E4: whole server / GPU price x1.64-1.66 (Epoch)",
    "finance.network_share": "reference-data E4/F: 15% of cluster capex (10-20%)",
    "finance.depreciation_years": "reference-data E5/F: 5 years (4-6)",
    "finance.tax_rate": "assumed 21% US federal statutory rate (after-tax NPV only)",
    "finance.price_decline_per_year": "reference-data A3: HGX H100 price roughly flat 2023-25",
    "finance.residual": "reference-data E6 lender view (H100): 62.5/42.5/30% after 1/2/3 "
                        "years, extrapolated to a 10% floor at 6 years",
    "options.*.spare_fraction": "reference-data D2/F: 5% hot spares (NCSA, BLOOM)",
    "options.*.software.usd_per_engineer_year": "assumed $300k (reference-data E8: no public figure)",
    "capacity_requests": "fleetsim default: requests per capacity-search point",
}


def resolved_yaml(scn: Scenario) -> str:
    """The scenario with every default filled in, the site preset expanded, and the source of
    each default that is not in the file."""
    import yaml

    doc = json_safe(scn.model_dump(mode="json"))
    site = scn.site.resolved()
    doc["site"].update({k: v for k, v in site.items() if k != "source"})
    sources = {"site": site.get("source", "given in the file")}
    given = scn.model_fields_set
    for path, src in DEFAULT_SOURCES.items():
        top = path.split(".")[0]
        if top not in given or path.startswith("options."):
            sources[path] = src
    for cid, ov in scn.cards.items():
        sources[f"cards.{cid}"] = f"override: {ov.source}"
    for mid, ov in scn.models.items():
        sources[f"models.{mid}"] = f"override: {ov.source}"
    doc["sources"] = sources
    return ("# Written by fleetsim run: the scenario as run, every default filled in.\n"
            + yaml.safe_dump(doc, sort_keys=True, allow_unicode=True, width=100))


def _hours_from(start: str, date: str | None) -> float:
    return 0.0 if date is None else max(hours_after_start(start, date), 0.0)


def power_cap_factor(scn: Scenario, lib: Library, card: str, compute_share: float) -> float:
    """Throughput kept by a power-capped card: the compute-bound share of its time slows with
    the clock, f ~ (P / TDP)^(1/3) (dynamic power ~ f V^2 with V ~ f); the memory-bound rest is
    taken as unchanged. `compute_share`: prefill's share of serving time, 1 for training.
    Assumed physics, not a measurement (reference-data G7 gives the B200's 700 W set point
    but no throughput at it)."""
    tdp = lib.card(card).power.tdp_w
    ov = scn.cards.get(card)
    tdp = float(((ov.model_extra or {}).get("tdp_w") if ov is not None else None) or tdp)
    p = card_power_w(scn, tdp, card)
    if p >= tdp:
        return 1.0
    share = min(max(compute_share or 0.0, 0.0), 1.0)
    return 1.0 / ((1.0 - share) + share / (p / tdp) ** (1.0 / 3.0))


def _card_value(scn: Scenario, card: str, key: str, default):
    """A card override of the scenario (`cards.<card>.<key>`), else `default`."""
    ov = scn.cards.get(card)
    v = (ov.model_extra or {}).get(key) if ov is not None else None
    return default if v is None else v


_MEMO: dict[str, object] = {}


def _memo(key: list, compute: Callable[[], object]):
    """In-process memo for pure, repeated sub-results (capacity, training speed): a Monte
    Carlo draw reruns only the fleet and the cost. Keys are JSON of plain values (hashlib)."""
    k = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    if k not in _MEMO:
        if len(_MEMO) > 4096:
            _MEMO.clear()
        _MEMO[k] = compute()
    return _MEMO[k]


CAMPAIGN_SEQ_TOKENS = 8192
CAMPAIGN_BATCH_TOKENS = 16 * 2**20
"""A scenario's campaign trains Llama-3-style: 8K sequences, 16M-token batches (reference-data
B4: the Llama 3 405B run), BF16, on the fastest layout that fits its cards."""


def _training_plan(lib: Library, card: str, model_id: str, n_cards: int,
                   failures_per_card_year: float, overrides: dict | None = None) -> dict:
    """Tokens/s per card of a campaign's fastest layout, its layout and MFU, and its goodput
    under interruptions (sim.perf.training)."""
    from sim.perf.training import TrainingLayoutError, TrainJob, plan_training

    def compute() -> dict:
        target = CAMPAIGN_BATCH_TOKENS // CAMPAIGN_SEQ_TOKENS
        # the target batch, else the nearest multiple of the cards above it (a card count
        # whose data-parallel degrees do not divide the target, e.g. 12)
        for gbs in dict.fromkeys((target, -(-target // n_cards) * n_cards)):
            job = TrainJob(lib.model(model_id), CAMPAIGN_SEQ_TOKENS, gbs)
            try:
                p = plan_training(job, card, n_cards, lib, tokens=1.0,
                                  failures_per_card_year=failures_per_card_year)
                break
            except TrainingLayoutError as exc:
                err = exc
        else:
            raise ConfigError(str(err)) from None
        return {"tokens_per_s_per_card": p.step.tokens_per_s_per_card,
                "goodput": p.interruptions.goodput, "layout": p.step.layout.label(),
                "mfu": p.step.mfu, "calibration": p.calibration}
    return dict(_memo(["training", card, model_id, n_cards, failures_per_card_year,
                       [str(r) for r in lib.roots], overrides or {}], compute))


def _card_price(scn: Scenario, lib: Library, card: str, given: float | None) -> float:
    if given is not None:
        return given
    ov = scn.cards.get(card)
    if ov is not None and (ov.model_extra or {}).get("price_usd") is not None:
        return float(ov.model_extra["price_usd"])
    spec = lib.card(card)
    gpu = [p for p in spec.prices if p.basis == "gpu"]
    if gpu:
        return (gpu[0].low_usd + gpu[0].high_usd) / 2
    raise ConfigError(f"no price for card '{card}': give `price_usd` in the purchase or "
                      f"`cards.{card}.price_usd` in the scenario")


def _precision_for(hw: Hardware, want: str) -> Precision:
    for name in (want, "fp8", "bf16"):
        p = Precision.preset(name)
        try:
            hw.check_precision(p)
            return p
        except PrecisionError:
            continue
    raise ConfigError(f"card '{hw.card_id}' runs none of {want}, fp8, bf16")


def _capacity(scn: Scenario, lib: Library, wname: str, card: str, engine: str | None,
              base: Path, progress: Callable[[str], None]) -> dict:
    """Max request rate per card meeting the workload's SLOs on one engine release (cached on
    disk and in process), and its perf facts (a fresh dict each call)."""
    w = scn.workloads[wname]
    key = ["capacity", card, engine, w.model, w.precision,
           w.traffic.lengths, w.traffic.trace,
           w.slo.model_dump(mode="json"),
           scn.capacity_requests, scn.seed, [str(r) for r in lib.roots], str(base),
           spec_overrides(scn)]
    row = _memo(key, lambda: _capacity_uncached(scn, lib, wname, card, engine, base, progress))
    # the row is shared by every workload with the same inputs (memo and disk cache): its
    # names are this call's
    return {**row, "workload": wname, "card": card}


def _capacity_uncached(scn: Scenario, lib: Library, wname: str, card: str, engine: str | None,
                       base: Path, progress: Callable[[str], None]) -> dict:
    """The capacity row from the disk cache, keyed by everything it is computed from (the card
    with its factors, the model, the precision, the files' bytes, the workload, the search's
    size and seed): a warm run reads it without rebuilding the estimates."""
    from sim.serving.capacity import cached

    key, hw, prec, files, trace = _row_key(scn, lib, wname, card, engine, base)
    return cached(key, lambda: _capacity_row(scn, lib, wname, card, hw, prec, files, trace,
                                             progress))


def _row_key(scn: Scenario, lib: Library, wname: str, card: str, engine: str | None,
             base: Path) -> tuple:
    """(disk-cache key of a capacity row, hardware, precision, library files, trace path)."""
    from sim.serving import traffic
    from sim.serving.capacity import cache_key
    from sim.serving.simulate import ServeSetup

    w = scn.workloads[wname]
    hw = Hardware.load(card, lib, engine=engine, as_of=scn.start)
    prec = _precision_for(hw, w.precision)
    files = [lib.path("card", card), lib.path("model", w.model)]
    if hw.engine_id is not None:  # the engine record and its fit belong in the cache key
        files.append(lib.path("engine", hw.engine_id))
        if hw.engine_id in lib.ids("engine_fit"):
            files.append(lib.path("engine_fit", hw.engine_id))
    trace = _resolve(base, lib, w.traffic.trace, allow_outside=True) if w.traffic.trace else None
    src = [trace] if trace else [lib.path("workload", w.traffic.lengths)]
    cals = [lib.path("calibration", i) for i in lib.ids("calibration")
            if i == card or i.startswith(card + "@")]
    key = cache_key(ServeSetup(lib.model(w.model), hw, prec), {
        "row": 1, "workload": w.model_dump(mode="json", include={"model", "precision", "slo"}),
        "n": scn.capacity_requests, "seed": scn.seed,
        "max_trace_rows": traffic.DEFAULT_MAX_TRACE_ROWS}, [*files, *src, *cals])
    return key, hw, prec, files, trace


def _search_one(args: tuple) -> None:
    """One capacity search on a worker process (it writes the disk cache)."""
    scn, lib, wname, card, engine, base = args
    _capacity(scn, lib, wname, card, engine, base, lambda msg: None)


def _prefetch(scn: Scenario, lib: Library, needed: list[tuple[str, str, str | None]],
              base: Path, say: Callable[[str], None]) -> None:
    """Run the capacity searches the disk cache lacks side by side on worker processes (forked,
    so a script without a `__main__` guard is not re-run by its workers; where fork is missing
    the searches run in process), up to `FLEETSIM_WORKERS` or the CPU count; the run then reads
    them back in order, so the results do not depend on who computed what. A worker that dies
    leaves its search to the run itself."""
    from sim.serving.capacity import cache_dir

    workers = int(os.environ.get("FLEETSIM_WORKERS", os.cpu_count() or 1))
    misses = [x for x in needed
              if not (cache_dir() / f"{_row_key(scn, lib, *x, base)[0]}.json").is_file()]
    import multiprocessing as mp

    if workers < 2 or len(misses) < 2 or "fork" not in mp.get_all_start_methods():
        return
    import concurrent.futures as cf

    n = min(workers, len(misses))
    say(f"capacity searches: {len(misses)} on {n} processes")
    try:
        with cf.ProcessPoolExecutor(n, mp_context=mp.get_context("fork")) as ex:
            futures = {ex.submit(_search_one, (scn, lib, *x, base)): x for x in misses}
            for f in cf.as_completed(futures):
                f.result()  # a search's error surfaces here, as it would in process
                w, c, e = futures[f]
                say(f"capacity {w} on {c}{', ' + e if e else ''}: done")
    except cf.process.BrokenProcessPool:
        say("capacity searches: a worker process died; the rest run in this process")


def _capacity_row(scn: Scenario, lib: Library, wname: str, card: str, hw: Hardware,
                  prec: Precision, files: list[Path], trace: Path | None,
                  progress: Callable[[str], None]) -> dict:
    from sim.serving.capacity import cache_key, cached, max_rate
    from sim.serving.engine import EngineConfig
    from sim.serving.metrics import Slo
    from sim.serving.simulate import ServeSetup
    from sim.serving.traffic import EmpiricalLengths, LognormalLengths, PoissonTraffic

    w = scn.workloads[wname]
    files = list(files)
    if trace is not None:
        lengths = EmpiricalLengths.from_trace(trace)
        moments = LengthMoments(float(lengths.input_tokens.mean()),
                                float(lengths.output_tokens.mean()),
                                float((lengths.input_tokens.astype(float) ** 2).mean()))
        files.append(trace)
    else:
        mix = lib.lengths(w.traffic.lengths)
        lengths = LognormalLengths.from_mix(mix)
        lo = mix.lengths.output_tokens
        moments = LengthMoments(mix.lengths.input_tokens.mean, lo.mean,
                                mix.lengths.input_tokens.second_moment, lo.second_moment,
                                float(lo.max))
    best_est = estimate(card, w.model, prec, moments, library=lib, hardware=hw)
    if not best_est.fits:
        raise ConfigError(f"workloads.{wname}: {w.model} does not fit on {card} "
                          f"({best_est.reason})")
    # under latency SLOs a wider replica can serve more per card than the offline optimum
    # (shorter steps leave room for larger batches within the TPOT limit): search the offline
    # best TP and twice it, keep the better
    wide = 2 * best_est.tp
    ests = [best_est]
    if (wide in TP_CHOICES and lib.model(w.model).architecture.num_attention_heads % wide == 0
            and wide <= max(8, hw.card.scale_up.domain_size)):
        e = estimate(card, w.model, prec, moments, library=lib, hardware=hw, tp=wide)
        if e.fits:
            ests.append(e)
    slo = Slo(w.slo.ttft_p99_ms, w.slo.tpot_p99_ms)
    n = scn.capacity_requests
    files += [lib.path("calibration", i) for i in lib.ids("calibration")
              if i == card or i.startswith(card + "@")]

    def setup_for(est) -> ServeSetup:
        engine = EngineConfig(max_num_seqs=max(min(est.batch_size, 1024), 1))
        return ServeSetup(lib.model(w.model), hw, prec, Layout(tp=est.tp), 1, engine)

    key = cache_key(setup_for(best_est), {
        "lengths": w.traffic.lengths or str(w.traffic.trace), "n": n, "seed": scn.seed,
        "slo": [slo.ttft_ms, slo.tpot_ms], "tps": [e.tp for e in ests], "run": 4}, files)
    progress(f"capacity {wname} on {card} (TP{'/'.join(str(e.tp) for e in ests)}"
             f"{', ' + hw.engine_id if hw.engine_id else ''})")

    def compute() -> dict:
        if slo.ttft_ms is None and slo.tpot_ms is None:  # throughput only: the offline optimum
            return {"max_rate_rps_per_replica": best_est.offline_tokens_per_s_per_card
                    * best_est.tp / moments.osl, "tp": best_est.tp}
        best = None
        for est in ests:
            try:
                cap = max_rate(setup_for(est),
                               lambda r, s: PoissonTraffic(r, n, lengths, scn.seed + s), slo)
            except ValueError as exc:  # e.g. a burst of n requests fits the SLO at any rate
                raise ConfigError(f"workloads.{wname}: on {card}: {exc} with capacity_requests "
                                  f"{n}; raise capacity_requests") from None
            if best is None or cap.max_rate_rps / est.tp > best[0] / best[1]:
                best = (cap.max_rate_rps, est.tp)
        assert best is not None
        return {"max_rate_rps_per_replica": best[0], "tp": best[1]}

    out = cached(key, compute)
    est = next(e for e in ests if e.tp == out["tp"])
    ideal = estimate(card, w.model, prec, moments, library=lib, hardware=hw.roofline(),
                     tp=est.tp)
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


def _resolve(base: Path, lib: Library, rel: str, allow_outside: bool = False) -> Path:
    """A path named in a scenario (a trace): relative to the scenario's folder, then to each
    library folder. The file it reaches (symbolic links followed) must lie inside the scenario's
    folder or a library folder; absolute paths and `..` that escape them are refused unless
    `allow_outside` (`fleetsim run --allow-outside-paths`)."""
    p = Path(rel)
    roots = [Path(r).resolve() for r in (base, *lib.roots)]
    hint = "; pass --allow-outside-paths (allow_outside_paths=True) to allow it"
    if p.is_absolute() and not allow_outside:
        raise ConfigError(f"'{rel}' is an absolute path: give it relative to the scenario's "
                          f"folder{hint}")
    outside = None
    for root in ([Path("/")] if p.is_absolute() else roots):
        cand = (root / p).resolve()
        if not cand.is_file():
            continue
        if allow_outside or any(cand.is_relative_to(r) for r in roots):
            return cand
        outside = outside or cand
    if outside is not None:
        raise ConfigError(f"'{rel}' leads outside the scenario's folder and the library "
                          f"folders (to {outside}){hint}")
    raise ConfigError(f"'{rel}': not found next to the scenario or in the library folders")


def finance_assumptions(scn: Scenario) -> FinanceAssumptions:
    """The cost layer's assumptions from the scenario's finance section and site."""
    site = scn.site.resolved()
    return FinanceAssumptions(
        discount_rate=scn.finance.discount_rate, depreciation_years=scn.finance.depreciation_years,
        electricity_usd_per_kwh=site["electricity_usd_per_kwh"], pue=site["pue"],
        colo_usd_per_kw_month=site["colo_usd_per_kw_month"],
        server_multiplier=scn.finance.server_multiplier, network_share=scn.finance.network_share,
        maintenance_fraction_per_year=scn.finance.maintenance_fraction_per_year,
        unserved_penalty_usd_per_card_hour=scn.finance.unserved_penalty_usd_per_card_hour,
        tax_rate=scn.finance.tax_rate, price_decline_per_year=scn.finance.price_decline_per_year,
        **({"residual_curve": ResidualCurve(r.age_years, r.fraction, r.source)}
           if (r := scn.finance.residual) else {}))


def card_price_usd(scn: Scenario, lib: Library, card: str) -> float:
    """The scenario's price for a card: an explicit purchase price in any option, else the
    card override, else the library's GPU price midpoint."""
    for o in scn.options.values():
        for b in o.buy:
            if b.card == card and b.price_usd is not None:
                return b.price_usd
    return _card_price(scn, lib, card, None)


def software_rate(scn: Scenario, lib: Library, card: str) -> float:
    """The improvement per year a card's stack projects past its last release: the
    scenario's `software_rate_per_year.<stack>`, else the library fit floored at 0."""
    stack = stack_of(card, lib)
    if stack is not None and stack in scn.software_rate_per_year:
        return scn.software_rate_per_year[stack]
    return default_rate(stack, lib)


def adoption_hour(scn: Scenario, lib: Library, oname: str) -> float:
    """When an option takes up its software (porting paid, ongoing engineers start): the first
    order of a card whose stack is not CUDA, else its first order of any card. The cards of
    that stack run the release in force at that date (the engine plan): the port's cost and the
    stack's maturity are both dated here, neither counted twice."""
    o = scn.options[oname]
    dated = [(_hours_from(scn.start, x.at), stack_of(x.card, lib))
             for x in (*o.buy, *o.lease, *o.reserve) if x.count]
    other = [h for h, st in dated if st not in (None, "cuda")]
    return max(min(other or [h for h, _ in dated] or [0.0]), 0.0)


def _trajectories(scn: Scenario, lib: Library, cap_df: pd.DataFrame, hours: np.ndarray,
                  software: Callable) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Monthly capacity per (workload, card) under the scenario's plan with its band, and the
    history points (the report's software-over-time figure)."""
    if not len(cap_df):
        return pd.DataFrame(), pd.DataFrame()
    month = hours[:: int(HOURS_PER_YEAR // 12)].astype(int)
    rows, hist = [], []
    for r in cap_df.itertuples():
        lo_rate, hi_rate = rate_quantiles(stack_of(r.card, lib), lib)
        mid = software(r.workload, r.card, scn.engine)
        lo = software(r.workload, r.card, scn.engine, min(lo_rate, mid.rate_per_year))
        hi = software(r.workload, r.card, scn.engine, max(hi_rate, mid.rate_per_year))
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


def _software_row(oname: str, wname: str, card: str, sw: CardSoftware, own: bool) -> dict:
    cap = sw.capacity_rps
    runs = [(st.from_hour, e) for st, e in zip(sw.steps, sw.in_force)]
    runs = [x for i, x in enumerate(runs) if i == 0 or x[1] != runs[i - 1][1]]
    return {"option": oname, "workload": wname, "card": card,
            "role": "own" if own else "rented",
            "engines": " -> ".join(f"{e} from hour {h:.0f}" for h, e in runs),
            "upgrade_hours": [float(h) for h, _ in runs[1:]],
            "upgrade_engines": [e or "" for _, e in runs[1:]],
            "engine_at_start": sw.in_force[0], "engine_at_end": sw.in_force[-1],
            "projected_from_hour": sw.projected_from_hour, "rate_per_year": sw.rate_per_year,
            "roofline_ceiling": sw.ceiling, "capacity_start_rps": float(cap[0]),
            "capacity_end_rps": float(cap[-1]), "capacity_mean_rps": float(cap.mean())}


def _mix_capacity(workloads: list[Workload], tl) -> dict[str, np.ndarray]:
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


def _software_gain(workloads: list[Workload], tl, serving: set[str]) -> float | None:
    """How much more an option's own serving cards could serve, on average over the hours they
    served, than on the releases in force at the start: sum(serving x cap / cap_0) / sum(serving)
    - 1, at each hour's demand mix. None when none of its cards served."""
    mix = _mix_capacity(workloads, tl)
    num = den = 0.0
    for c in sorted(serving):
        if c not in mix or c not in tl.per_card or mix[c][0] <= 0:
            continue
        busy = tl.per_card[c]["serving"]
        num += float((busy * mix[c] / mix[c][0]).sum())
        den += float(busy.sum())
    return num / den - 1.0 if den > 0 else None


def run(scenario: Scenario | str | Path, library: Library | None = None,
        progress: Callable[[str], None] | None = None, *, base: Path | None = None,
        fleet_seed: int | None = None, detail: bool = True,
        allow_outside_paths: bool = False) -> Result:
    """Run every layer. `base`: the folder relative paths in a `Scenario` object are resolved
    from (a path's own folder when given a path; else the working directory). `fleet_seed`:
    the seed of the fleet's random streams (failures, lead times; default the scenario's seed;
    Monte Carlo draws pass their own). `detail=False` skips the hourly frame and the report
    extras (experiments need only the summary and per-year frames). `allow_outside_paths`:
    accept trace paths that are absolute or lead outside the scenario's folder and the library
    folders (refused by default)."""
    lib = library or Library.default()
    say = progress or (lambda msg: None)
    if isinstance(scenario, (str, Path)):
        base = Path(scenario).resolve().parent
        scn = load_scenario(Path(scenario), lib)
    else:
        base = Path(base) if base is not None else Path.cwd()
        scn = scenario
    where = str(scenario) if isinstance(scenario, (str, Path)) else f"scenario '{scn.name}'"
    for wname, w in scn.workloads.items():  # path rules first: nothing outside is read
        if w.traffic.trace:
            try:
                _resolve(base, lib, w.traffic.trace, allow_outside_paths)
            except ConfigError as exc:
                raise ConfigError(f"{where}: workloads.{wname}.traffic.trace: {exc}") from None
    lib = scenario_library(scn, lib)  # the scenario's `cards:` / `models:` overrides applied
    fin = finance_assumptions(scn)

    # ---- serving capacity per (workload, card) -----------------------------------------------
    serve_cards: dict[str, set[str]] = {w: set() for w in scn.workloads}
    for o in scn.options.values():
        cards = set(o.serve_on) or {b.card for b in (*o.buy, *o.lease, *o.reserve)}
        for w in scn.workloads:
            serve_cards[w] |= cards
    for wname, w in scn.workloads.items():
        if w.rent:
            serve_cards[wname].add(w.rent.card)
    H = scn.horizon_years * HOURS_PER_YEAR
    hours = np.arange(int(round(H)), dtype=float)
    plans = {o: scn.options[o].engine or scn.engine for o in scn.options}
    plans[""] = scn.engine  # rented cards: the scenario's plan
    needed = list(dict.fromkeys(
        (wname, card, st.engine) for wname in scn.workloads
        for card in sorted(serve_cards[wname]) for plan in plans.values()
        for st in schedule(card, plan, scn.start, float(len(hours)), lib)))
    _prefetch(scn, lib, needed, base, say)
    by_engine = {x: _capacity(scn, lib, *x, base, say) for x in needed}
    for c in by_engine.values():
        c["efficiency"] = scn.efficiency.get(c["card"], 1.0) * power_cap_factor(
            scn, lib, c["card"], c["prefill_time_fraction"])
        c["rps_per_card"] = c["rps_per_card"] * c["efficiency"]
    # the capacity frame: each (workload, card) on the release in force at the start
    cap_df = pd.DataFrame([by_engine[w, c, in_force_at_start(c, scn.engine, scn.start, lib)]
                           for w in scn.workloads for c in sorted(serve_cards[w])])

    def software(wname: str, card: str, plan, rate: float | None = None) -> CardSoftware:
        rows = {e: r for (w, c, e), r in by_engine.items() if w == wname and c == card}
        return card_capacity(card, plan, scn.start, hours, lib,
                             {e: r["rps_per_card"] for e, r in rows.items()},
                             {e: r["roofline_ratio"] for e, r in rows.items()},
                             software_rate(scn, lib, card) if rate is None else rate)

    traj, hist = _trajectories(scn, lib, cap_df, hours, software)

    # ---- training campaigns --------------------------------------------------------------------
    camps: list[Campaign] = []
    training_info: dict[str, dict] = {}
    for tname, t in scn.training.items():
        try:
            tp_ = _training_plan(lib, t.card, t.model, t.cards or 64,
                                 scn.reliability.failures_per_card_year, spec_overrides(scn))
        except ConfigError as exc:
            raise ConfigError(f"{where}: training.{tname}: {exc}") from None
        tok_s = tp_["tokens_per_s_per_card"]
        n_train = t.cards or 64
        training_info[tname] = {
            "card": t.card, "cards": n_train, "model": t.model, "tokens": t.tokens,
            "layout": tp_["layout"], "mfu": tp_["mfu"], "tokens_per_s_per_card": tok_s,
            "goodput": tp_["goodput"],
            "ideal_days": t.tokens / (tok_s * n_train) / 86400.0,
            "time_to_train_days": t.tokens / (tok_s * n_train) / 86400.0 / tp_["goodput"],
            "calibration": tp_["calibration"]}
        card_hours = t.tokens / (tok_s * scn.efficiency.get(t.card, 1.0)
                                 * power_cap_factor(scn, lib, t.card, 1.0)) / 3600.0
        start = _hours_from(scn.start, t.start)
        step = (t.every_months or 0) * HOURS_PER_YEAR / 12
        k = 0
        while start + k * step < H and (k == 0 or step > 0):
            s0 = start + k * step
            camps.append(Campaign(f"{tname}#{k + 1}", t.card, t.cards, card_hours, s0,
                                  t.priority, ettr=tp_["goodput"],
                                  deadline_hour=None if t.deadline_days is None
                                  else s0 + t.deadline_days * 24))
            k += 1

    # ---- every option: timeline and cost --------------------------------------------------------
    per_year, per_hour, summary = [], [], {"options": {}}
    software_rows: list[dict] = []
    for oname, o in scn.options.items():
        say(f"fleet and cost: {oname}")
        cards_here = {b.card for b in (*o.buy, *o.lease, *o.reserve)}
        power = {c: card_power_w(scn, lib.card(c).power.tdp_w, c) / 1000
                 * SERVER_POWER_PER_TDP for c in cards_here}
        buys = []
        prices = {}
        for b in o.buy:
            # the most specific value wins: the purchase's own, else `cards.<id>`, else none
            lt = b.lead_time_weeks if "lead_time_weeks" in b.model_fields_set else \
                _card_value(scn, b.card, "lead_time_weeks", b.lead_time_weeks)
            lt = tuple(lt) if isinstance(lt, list) else lt
            lead = LeadTime(lt[0], lt[1]) if isinstance(lt, tuple) else None
            buys.append(Purchase(b.card, b.count, _hours_from(scn.start, b.at),
                                 0.0 if lead else float(lt) * 168, 72.0, b.life_years, lead))
            prices[b.card] = _card_price(scn, lib, b.card, b.price_usd)
        leases = tuple(Lease(x.card, x.count, _hours_from(scn.start, x.at), x.term_years,
                             x.usd_per_card_month) for x in o.lease)
        reserved = tuple(Reserved(x.card, x.count, _hours_from(scn.start, x.at), x.term_years,
                                  x.usd_per_card_hour) for x in o.reserve)
        training_cards = {t.card for t in scn.training.values()}
        serving = set(o.serve_on) or cards_here
        if o.policy == "elastic":
            serving |= training_cards & cards_here
        workloads = []
        for wname, w in scn.workloads.items():
            rows = cap_df[cap_df.workload == wname]
            cap: dict[str, float | np.ndarray] = {}
            for r in rows.itertuples():
                if r.card in serving or (w.rent and r.card == w.rent.card):
                    own = r.card in serving
                    sw_card = software(wname, r.card, plans[oname] if own else plans[""])
                    software_rows.append(_software_row(oname, wname, r.card, sw_card, own))
                    cap[r.card] = sw_card.capacity_rps
            for c in cards_here - set(cap):
                cap[c] = 0.0
            own = rows[rows.card.isin(serving)]
            pf = float(own.prefill_time_fraction.mean()) if len(own) else float(
                rows.prefill_time_fraction.mean())
            amp = w.traffic.diurnal_amplitude
            workloads.append(Workload(
                wname, Demand(w.traffic.peak_rps / (1 + amp), w.traffic.growth_per_year, amp,
                              weekend_factor=w.traffic.weekend_factor,
                              events=tuple((_hours_from(scn.start, ev.at), ev.days * 24.0,
                                            ev.multiplier)
                                           for _, ev in sorted(w.traffic.events.items())),
                              share_by_year=w.traffic.share_by_year,
                              growth_by_quarter=w.traffic.growth_by_quarter),
                float(rows.input_tokens.iloc[0]), float(rows.output_tokens.iloc[0]), cap,
                rent_usd_per_card_hour=_card_value(scn, w.rent.card, "rent_usd_per_hour",
                                                   w.rent.usd_per_hour) if w.rent else 0.0,
                rent_card=w.rent.card if w.rent else None,
                rent_cap_cards=(w.rent.max_cards if w.rent and w.rent.max_cards is not None
                                else math.inf),
                prefill_time_fraction=pf))
        rel = scn.reliability
        opt = FleetOption(oname, tuple(buys), Reliability(
            failures_per_card_year=rel.failures_per_card_year,
            infant_mortality=rel.infant_mortality, repair_hours=rel.repair_hours,
            spare_fraction=o.spare_fraction),
                          power, reserved, leases,
                          site_power_cap_kw=scn.site.power_cap_mw * 1000
                          if scn.site.power_cap_mw else None)
        opt_camps = [c for c in camps if c.card in cards_here]
        try:
            tl = simulate_fleet(opt, workloads, opt_camps, scn.horizon_years,
                                seed=scn.seed if fleet_seed is None else fleet_seed)
        except FleetError as exc:  # a user error found only now: located like the others
            raise ConfigError(f"{where}: {exc}") from None
        adopt_y = adoption_hour(scn, lib, oname) / HOURS_PER_YEAR
        sw = SoftwareCost(porting_engineer_years=o.software.porting_engineer_years,
                          ongoing_engineers=o.software.ongoing_engineers,
                          usd_per_engineer_year=o.software.usd_per_engineer_year,
                          porting_time_years=adopt_y, ongoing_start_years=adopt_y)
        try:
            cost = price_timeline(tl, opt, workloads, prices, fin, sw)
        except ValueError as exc:  # the cost layer's user errors (e.g. unpriced unserved demand)
            raise ConfigError(f"{where}: {str(exc).splitlines()[0]}") from None
        if not (math.isfinite(cost.npv_usd) and math.isfinite(cost.total_cost_usd)):
            raise ConfigError(f"{where}: options.{oname}: its cost overflows (not a finite "
                              "number): a price, rent or rate is too large")
        demand = sum(tl.demand_rps[w.name].sum() for w in workloads)
        served = sum((tl.served_rps[w.name] + tl.rented_rps[w.name]).sum() for w in workloads)
        owned_h = sum(d["owned"].sum() for d in tl.per_card.values())
        used_h = sum((d["serving"] + d["training"]).sum() for d in tl.per_card.values())
        energy_j = float(cost.per_year["energy_usd"].sum() / fin.electricity_usd_per_kwh
                         / fin.pue * 3.6e6)
        tokens = cost.tokens_in + cost.tokens_out
        py = cost.per_year.copy()
        years = py["year"].to_numpy().astype(int)
        year_of_hour = (tl.hours // HOURS_PER_YEAR).astype(int)
        n_years = max(int(years.max()) + 1 if len(years) else 0, int(year_of_hour.max()) + 1)

        def by_year(x: np.ndarray) -> np.ndarray:
            return np.bincount(year_of_hour, weights=x, minlength=n_years)[years]

        d_y = by_year(sum(tl.demand_rps[w.name] for w in workloads))
        s_y = by_year(sum(tl.served_rps[w.name] + tl.rented_rps[w.name] for w in workloads))
        toks = by_year(sum((tl.served_rps[w.name] + tl.rented_rps[w.name]) * 3600
                           * w.output_tokens for w in workloads))
        att = np.divide(s_y, d_y, out=np.ones_like(s_y), where=d_y > 0)
        oh = by_year(sum(d["owned"] for d in tl.per_card.values()))
        uh = by_year(sum(d["serving"] + d["training"] for d in tl.per_card.values()))
        util = np.divide(uh, oh, out=np.zeros_like(uh), where=oh > 0)
        py["output_tokens_served"] = toks
        py["input_tokens_served"] = by_year(sum((tl.served_rps[w.name] + tl.rented_rps[w.name])
                                                * 3600 * w.input_tokens for w in workloads))
        py["slo_attainment"] = att
        py["utilization"] = util
        counts = by_year(np.ones(len(tl.hours)))
        for c, rate in sorted(_mix_capacity(workloads, tl).items()):
            py[f"capacity_req_per_s_per_card.{c}"] = by_year(rate) / counts
        per_year.append(py)
        if detail:
            ph = tl.per_hour()
            H_ = len(tl.hours)
            ph = pd.concat([ph, pd.DataFrame({
                f"{w.name}.{c}.capacity_rps_per_card": w.capacity(c, H_)
                for w in workloads for c in sorted(w.capacity_rps_per_card)})], axis=1)
            per_hour.append(ph)
        lev = cost.levelized
        attainment = served / demand if demand else 1.0
        summary["options"][oname] = {
            "npv_usd": cost.npv_usd, "total_cost_usd": cost.total_cost_usd,
            "after_tax_npv_usd": cost.after_tax.after_tax_npv_usd,
            "usd_per_m_tokens": lev.usd_per_m_tokens,
            "usd_per_m_input_tokens": lev.usd_per_m_input_tokens,
            "usd_per_m_output_tokens": lev.usd_per_m_output_tokens,
            "joules_per_token": energy_j / tokens if tokens else None,
            "slo_attainment": attainment, "utilization": used_h / owned_h if owned_h else 0.0,
            "usd_per_card_hour": cost.usd_per_card_hour,
            "campaigns": tl.campaigns,
            "software_gain": _software_gain(workloads, tl, serving),
        }
    meets = {k: v for k, v in summary["options"].items()
             if v["slo_attainment"] >= SLO_TOLERANCE}
    summary["winner"] = min(meets, key=lambda k: meets[k]["npv_usd"]) if meets else None
    summary["winner_rule"] = (f"cheapest NPV among options serving >= {SLO_TOLERANCE:.0%} of "
                              "demand within the SLOs (owned or rented)")
    summary["slo_tolerance"] = SLO_TOLERANCE
    summary["scenario"] = scn.name
    summary["training"] = training_info
    return Result(scn, pd.concat(per_year, ignore_index=True),
                  pd.concat(per_hour, ignore_index=True) if per_hour else pd.DataFrame(),
                  summary, cap_df, software=pd.DataFrame(software_rows), trajectory=traj,
                  software_history=hist)


def render_markdown(res: Result) -> str:
    s = res.summary
    winner = md_text(s["winner"]) if s["winner"] else "none: no option meets the SLOs"
    lines = [f"# {md_text(res.scenario.name)}", "",
             f"Winner: **{winner}** ({s['winner_rule']}).",
             "", "| option | NPV $M | total $M | $/M tokens | SLO attainment | utilisation |",
             "|---|---|---|---|---|---|"]
    for k, v in s["options"].items():
        usd = v["usd_per_m_tokens"]
        lines.append(f"| {md_text(k)} | {v['npv_usd'] / 1e6:,.3f} | "
                     f"{v['total_cost_usd'] / 1e6:,.3f} | "
                     f"{'-' if usd is None else f'{usd:,.3f}'} | {v['slo_attainment']:.2%} | "
                     f"{v['utilization']:.1%} |")
    lines += ["", "Capacity per card at the SLOs (from the serving simulator):", "",
              "| workload | card | TP | precision | req/s per card |", "|---|---|---|---|---|"]
    for r in res.capacity.itertuples():
        lines.append(f"| {md_text(r.workload)} | {r.card} | {r.tp} | {r.precision} | "
                     f"{r.rps_per_card:.3f} |")
    if res.analyses:
        from sim.report.analysis import markdown
        lines += ["", markdown(res.analyses).rstrip()]
    return "\n".join(lines) + "\n"
