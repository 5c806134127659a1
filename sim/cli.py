"""`fleetsim` command line: library tables, performance estimates, JSON Schema.

User errors (bad YAML, unknown ids, impossible precision or layout) print one line to stderr and
exit with code 2; `--debug` (anywhere on the command line) shows the traceback instead, after the
full list of what a file got wrong where the one line says "(and N more)".
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from sim.report import json_safe

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fleetsim: accelerator fleet TCO simulator.")
console = Console()
err_console = Console(stderr=True)

_STATE = {"debug": False, "library": []}

LibraryOpt = Annotated[Optional[list[Path]], typer.Option(
    "--library", help="extra library folder searched before the packaged one (repeatable)")]

EngineOpt = Annotated[Optional[str], typer.Option(
    "--engine", help="serving engine release from hardware_specs/engines (default: the newest "
    "for the card by --as-of; `fleetsim engines` lists them)")]
AsOfOpt = Annotated[Optional[str], typer.Option(
    "--as-of", help="YYYY-MM: use the newest engine release of each card's stack by this date "
    "(default: today)")]

ScaleOutTpOpt = Annotated[bool, typer.Option(
    "--allow-scale-out-tp", help="allow a tensor-parallel degree beyond the card's scale-up "
    "domain (or one 8-card server over PCIe): its all-reduces cross servers; flagged in the "
    "output")]

OutsidePathsOpt = Annotated[bool, typer.Option(
    "--allow-outside-paths", help="accept trace paths that are absolute or lead outside "
    "the scenario's folder and the library folders")]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    _STATE["debug"] = debug


def _lib(library: list[Path] | None):
    from sim.config.library import Library

    return Library.default(library or [])


def _user_errors() -> tuple[type[BaseException], ...]:
    from sim.config.loader import ConfigError
    from sim.perf.memory import LayoutError
    from sim.perf.precision import PrecisionError
    from sim.serving.simulate import ServingError

    from sim.perf.training import TrainingLayoutError

    return (ConfigError, LayoutError, PrecisionError, ServingError, TrainingLayoutError)


def _print_table(t: Table, ids: tuple[str, ...] = ("id",)) -> None:
    """Print `t` without cutting what a user types: the `ids` columns never wrap or shrink, and
    no column is narrower than its longest word (cells wrap at spaces). Where the terminal is too
    narrow for that, other columns are left out from the right and named in a note."""
    from rich.cells import cell_len

    def texts(col) -> list[str]:
        return [str(col.header), *(str(c) for c in col.cells)]

    def least(col) -> int:
        if col.header in ids:
            return max(cell_len(x) for x in texts(col))
        return max((cell_len(w) for x in texts(col) for w in x.split()), default=1)

    def most(col) -> int:
        return max(cell_len(line) for x in texts(col) for line in x.splitlines() or [""])

    def room() -> int:
        pad = t.padding[1] + t.padding[3]
        borders = (len(t.columns) + 1 if t.show_edge else len(t.columns) - 1) if t.box else 0
        return console.width - borders - pad * len(t.columns)

    left_out: list[str] = []
    while sum(least(c) for c in t.columns) > room():
        others = [i for i, c in enumerate(t.columns) if c.header not in ids]
        if len(others) <= 1:
            break
        left_out.insert(0, str(t.columns.pop(others[-1]).header))
    widths = [least(c) for c in t.columns]
    wants = [most(c) for c in t.columns]
    if sum(wants) > room():  # rich would shrink columns below their words: give widths
        spare = room() - sum(widths)
        while spare > 0:
            k = max(range(len(widths)), key=lambda n: wants[n] - widths[n])
            if wants[k] <= widths[k]:
                break
            widths[k] += 1
            spare -= 1
        for col, w in zip(t.columns, widths):
            col.width = w
    for col in t.columns:
        col.no_wrap = col.header in ids
        col.overflow = "fold"
    console.print(t)
    if left_out:
        n = len(left_out)
        console.print(f"({n} column{'s' if n > 1 else ''} left out at {console.width} columns: "
                      f"{', '.join(left_out)}; widen the terminal or set COLUMNS=200)")


class _PlainProgress:
    """Progress for output that is not a terminal (a log, CI, a pipe): plain timed lines on
    stderr. Counted work (`count(done, total)`, in `unit`) prints the first and last call and
    one line per tenth of the work or per 10 s, with an ETA. Stages (`stage(msg)`) print as they
    start, except within the first `quiet_s` seconds: a run that ends (or fails on its input)
    that soon prints nothing but its result or its one-line error; a stage still running then is
    printed at `quiet_s`, and the current stage again after each `HEARTBEAT_S` of silence."""

    HEARTBEAT_S = 30.0

    def __init__(self, label: str, unit: str = "points", quiet_s: float = 0.0) -> None:
        import threading

        self.label, self.unit, self.quiet_s = label, unit, quiet_s
        self.t0 = time.perf_counter()
        self.last_s = -math.inf
        self.last_tenth = -1
        self.first_done: int | None = None
        self.first_s = 0.0
        self.current: str | None = None
        self.printed = True
        self.said_s = self.t0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if quiet_s > 0:
            threading.Thread(target=self._watch, daemon=True).start()

    def _say(self, msg: str) -> None:
        with self._lock:
            self.said_s = time.perf_counter()
            print(f"[{self.said_s - self.t0:7.1f} s] {msg}", file=sys.stderr, flush=True)

    def _watch(self) -> None:
        if self._stop.wait(self.quiet_s):
            return
        if not self.printed and self.current is not None:
            self.printed = True
            self._say(self.current)
        while not self._stop.wait(1.0):
            if self.current and time.perf_counter() - self.said_s >= self.HEARTBEAT_S:
                self._say(f"{self.current} (still running)")

    def close(self) -> None:
        self._stop.set()

    def stage(self, msg: str) -> None:
        self.current = msg
        self.printed = time.perf_counter() - self.t0 >= self.quiet_s
        if self.printed:
            self._say(msg)

    def count(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self.first_done is None:  # a resumed run starts with finished work: not in the rate
            self.first_done, self.first_s = done, now
        tenth = 10 * done // max(total, 1)
        if done < total and tenth == self.last_tenth and now - self.last_s < 10.0:
            return
        self.last_s, self.last_tenth = now, tenth
        fresh = done - self.first_done
        if done >= total:
            eta = ""
        elif fresh > 0:
            eta = f", ETA {(now - self.first_s) / fresh * (total - done):.0f} s"
        else:
            eta = ", ETA -"
        self._say(f"{self.label}: {done}/{total} {self.unit} done{eta}")


def _refuse_misfit(est) -> None:
    """A layout that does not fit is a user error (exit 2), named in one line."""
    from sim.perf.memory import LayoutError

    if not est.fits:
        raise LayoutError(f"{est.model} on {est.card} ({est.precision}): {est.reason}")


def _warn(line: str | None) -> None:
    if line:
        print(line, file=sys.stderr, flush=True)


def _engine_fields(hw) -> dict:
    """`engine`, `engine_version`, `engine_date` of the engine a card runs, for --json."""
    e = hw.engine
    return {"engine": hw.engine_id, "engine_version": f"{e.name} {e.version}" if e else None,
            "engine_date": e.release_date if e else None}


def _engine_files(lib, hw) -> list[Path]:
    """The engine record and its fit: their bytes belong in a cache key."""
    if hw.engine_id is None:
        return []
    files = [lib.path("engine", hw.engine_id)]
    if hw.engine_id in lib.ids("engine_fit"):
        files.append(lib.path("engine_fit", hw.engine_id))
    return files


@app.command()
def engines(library: LibraryOpt = None) -> None:
    """Table of the serving-engine releases in the library (what `--engine` takes)."""
    lib = _lib(library)
    t = Table(title="Engines")
    for col in ("id", "name", "version", "released", "stack", "KV admission", "fitted cards",
                "runs on"):
        t.add_column(col, no_wrap=col == "id")
    for eid in lib.ids("engine"):
        e = lib.engine(eid)
        fit = lib.engine_fit(eid)
        fitted = ", ".join(sorted(fit.cards)) if fit else (
            f"from {e.factors_from}" if e.factors_from else "-")
        t.add_row(eid, e.name, e.version, e.release_date, e.stack, e.rules.kv_admission,
                  fitted or "pooled only", ", ".join(e.runs_on))
    _print_table(t)


@app.command()
def cards(library: LibraryOpt = None) -> None:
    """Table of the cards in the library."""
    lib = _lib(library)
    t = Table(title="Cards")
    for col in ("id", "name", "BF16 TF", "FP8 TF", "FP4 TF", "mem GB", "TB/s", "scale-up",
                "TDP W", "launch"):
        t.add_column(col)
    for cid in lib.ids("card"):
        c = lib.card(cid)
        su = c.scale_up
        t.add_row(cid, c.name, f"{c.compute.bf16_tflops:g}", _opt(c.compute.fp8_tflops),
                  _opt(c.compute.fp4_tflops), f"{c.memory.capacity_gb:g}",
                  f"{c.memory.bandwidth_tbps:g}",
                  f"{su.topology} {su.domain_size}x {su.per_direction_gbytes_per_s:g} GB/s",
                  f"{c.power.tdp_w:g}", c.launch)
    _print_table(t)


@app.command()
def models(library: LibraryOpt = None) -> None:
    """Table of the models in the library, with derived parameter counts."""
    from sim.perf.params import active_params, total_params

    lib = _lib(library)
    t = Table(title="Models")
    for col in ("id", "name", "layers", "hidden", "heads/kv", "attention", "experts",
                "params B (derived)", "active B", "published B"):
        t.add_column(col)
    for mid in lib.ids("model"):
        m = lib.model(mid)
        a = m.architecture
        ex = f"{a.moe.experts_per_token}/{a.moe.num_experts}" if a.moe else "-"
        t.add_row(mid, m.name, str(a.num_layers), str(a.hidden_size),
                  f"{a.num_attention_heads}/{a.num_kv_heads}", a.attention, ex,
                  f"{total_params(a) / 1e9:.1f}", f"{active_params(a) / 1e9:.1f}",
                  f"{m.published_params.total_b:g}")
    _print_table(t)


@app.command()
def perf(
    card: Annotated[Optional[str], typer.Option(help="card id, e.g. h100-sxm")] = None,
    model: Annotated[str, typer.Option(help="model id, e.g. llama-2-70b")] = "llama-2-70b",
    precision: Annotated[str, typer.Option(help="bf16, fp16, fp8, fp4 or int8 preset")] = "bf16",
    weights: Annotated[Optional[str], typer.Option(help="override weight precision")] = None,
    activations: Annotated[Optional[str], typer.Option(help="override activation precision")] = None,
    kv: Annotated[Optional[str], typer.Option(help="override KV-cache precision")] = None,
    tp: Annotated[Optional[int], typer.Option(help="tensor parallel (default: best that fits)")] = None,
    isl: Annotated[Optional[float], typer.Option(help="mean input tokens")] = None,
    osl: Annotated[Optional[float], typer.Option(help="mean output tokens")] = None,
    workload: Annotated[Optional[str], typer.Option(help="named length mix in workloads/lengths")] = None,
    ep: Annotated[bool, typer.Option(help="expert parallelism for MoE (experts whole per rank)")] = False,
    compare: Annotated[bool, typer.Option(help="compare every card in the library")] = False,
    engine: EngineOpt = None,
    as_of: AsOfOpt = None,
    allow_scale_out_tp: ScaleOutTpOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    library: LibraryOpt = None,
) -> None:
    """Memory fit, step times and offline throughput of a model on a card. A layout that does not
    fit, or a TP beyond the card's scale-up domain without --allow-scale-out-tp, is refused
    (exit 2)."""
    from sim.perf.estimate import check_serving_tp, estimate, lengths_for
    from sim.perf.hardware import Hardware
    from sim.perf.precision import Precision

    lib = _lib(library)
    lengths = lengths_for(lib, workload, isl, osl)
    if compare:
        _compare(lib, model, precision, lengths, as_json, weights, activations, kv, as_of,
                 allow_scale_out_tp)
        return
    if card is None:
        raise typer.BadParameter("give --card ID (or --compare)")
    prec = Precision.preset(precision, weights, activations, kv)
    lib.model(model)  # unknown model -> clear error before anything else
    hw = Hardware.load(card, lib, engine=engine, as_of=as_of)
    est = estimate(card, model, prec, lengths, tp=tp, library=lib, ep=ep, hardware=hw,
                   allow_scale_out_tp=allow_scale_out_tp)
    warning = check_serving_tp(card, hw, est.tp, allow_scale_out_tp)
    _refuse_misfit(est)
    _warn(warning)
    if as_json:
        print(json.dumps(json_safe(est.to_dict()), sort_keys=True))
        return
    t = Table(title=f"{model} on {card} ({prec.label})", show_header=False)
    rows = [
        ("fits", f"{est.fits}" + ("" if est.fits else f" - {est.reason}")),
        ("smallest TP that fits", str(est.min_tp)),
        ("TP used", str(est.tp) + (f" (beyond the {est.tp_limit}-card limit: across servers)"
                                   if est.scale_out_tp else "")),
        ("batch (sequences)", str(est.batch_size)),
        ("offline tokens/s per card", f"{est.offline_tokens_per_s_per_card:,.0f}"),
        ("prefill tokens/s per card", f"{est.prefill_tokens_per_s_per_card:,.0f}"),
        ("decode step", f"{est.decode_step_s * 1e3:.2f} ms"),
        ("weights per card", f"{est.weights_gb_per_card:.1f} GB"),
        ("KV tokens capacity", f"{est.kv_tokens_capacity:,}"),
        ("lengths (in/out)", f"{est.isl:.0f} / {est.osl:.0f}"),
        ("engine", f"{est.engine_version} ({est.engine}, released {est.engine_date})"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    tiers = Table(title="Calibration used")
    tiers.add_column("factor")
    tiers.add_column("tier")
    tiers.add_column("source")
    for k, v in est.calibration_tiers.items():
        tiers.add_row(k, v, est.calibration_sources.get(k, ""))
    console.print(tiers)


def _compare(lib, model, precision, lengths, as_json, weights, activations, kv,
             as_of=None, allow_scale_out_tp=False) -> None:
    from sim.perf.estimate import estimate
    from sim.perf.hardware import Hardware
    from sim.perf.precision import Precision, PrecisionError

    rows = []
    for cid in lib.ids("card"):
        hw = Hardware.load(cid, lib, as_of=as_of)
        # use the requested preset where the card has it, else fall back to what it runs
        chosen = None
        for name in (precision, "fp8", "bf16"):
            p = Precision.preset(name, weights, activations, kv)
            try:
                hw.check_precision(p)
            except PrecisionError:
                continue
            chosen = p
            break
        if chosen is None:
            continue
        rows.append(estimate(cid, model, chosen, lengths, library=lib, hardware=hw,
                             allow_scale_out_tp=allow_scale_out_tp))
    if as_json:
        print(json.dumps([json_safe(r.to_dict()) for r in rows], sort_keys=True))
        return
    t = Table(title=f"{model}: offline throughput per card (in {lengths.isl:.0f} / "
                    f"out {lengths.osl:.0f} tokens)")
    for col in ("card", "precision", "fits", "TP", "batch", "tok/s/card", "prefill tok/s/card",
                "decode step ms", "GEMM tier", "engine"):
        t.add_column(col, no_wrap=col in ("card", "engine"))
    for r in sorted(rows, key=lambda r: -r.offline_tokens_per_s_per_card):
        gemm_tier = next((v for k, v in r.calibration_tiers.items() if k.startswith("gemm_")
                          and k != "gemm_m_half_tokens"), "-")
        t.add_row(r.card, r.precision, "yes" if r.fits else "no",
                  f"{r.tp}{' (across servers)' if r.scale_out_tp else ''}", str(r.batch_size),
                  f"{r.offline_tokens_per_s_per_card:,.0f}" if r.fits else "-",
                  f"{r.prefill_tokens_per_s_per_card:,.0f}",
                  f"{r.decode_step_s * 1e3:.1f}" if r.fits else "-", gemm_tier, r.engine or "-")
    _print_table(t, ids=("card", "engine"))


@app.command()
def serve(
    card: Annotated[str, typer.Option(help="card id, e.g. h100-sxm")],
    model: Annotated[str, typer.Option(help="model id, e.g. llama-2-70b")] = "llama-2-70b",
    precision: Annotated[str, typer.Option(help="bf16, fp16, fp8, fp4 or int8 preset")] = "bf16",
    tp: Annotated[Optional[int], typer.Option(help="tensor parallel (default: smallest that fits)")] = None,
    replicas: Annotated[int, typer.Option(help="number of replicas")] = 1,
    prefill_replicas: Annotated[Optional[int], typer.Option("--prefill-replicas", help="disaggregated serving: prefill-only replicas (with --decode-replicas; --replicas is then ignored)")] = None,
    decode_replicas: Annotated[Optional[int], typer.Option("--decode-replicas", help="disaggregated serving: decode replicas (with --prefill-replicas)")] = None,
    trace: Annotated[Optional[Path], typer.Option(help="CSV trace (Azure format or arrival_s,input_tokens,output_tokens)")] = None,
    time_scale: Annotated[float, typer.Option(help="replay the trace at this multiple of its rate")] = 1.0,
    traffic: Annotated[str, typer.Option(help="poisson or gamma (when no --trace)")] = "poisson",
    rate: Annotated[Optional[float], typer.Option(help="requests/s for synthetic traffic")] = None,
    cv: Annotated[float, typer.Option(help="inter-arrival CV for gamma traffic")] = 2.0,
    requests: Annotated[int, typer.Option(help="number of synthetic requests (or trace cap)")] = 2000,
    workload: Annotated[str, typer.Option(help="length mix for synthetic traffic")] = "mlperf-llama2-70b",
    slo_ttft_ms: Annotated[Optional[float], typer.Option(help="p99-style TTFT SLO per request (ms)")] = None,
    slo_tpot_ms: Annotated[Optional[float], typer.Option(help="TPOT SLO per request (ms)")] = None,
    mode: Annotated[str, typer.Option(help="fast (exact constant-batch spans) or token")] = "fast",
    engine_name: Annotated[str, typer.Option("--scheduler", help="scheduler preset: vllm-v1 (0.15 line) or vllm-v0")] = "vllm-v1",
    engine: EngineOpt = None,
    as_of: AsOfOpt = None,
    router: Annotated[str, typer.Option(help="round_robin, least_outstanding, power_of_two")] = "least_outstanding",
    max_num_seqs: Annotated[Optional[int], typer.Option("--max-num-seqs", help="default: the engine's (vLLM: 256)")] = None,
    max_num_batched_tokens: Annotated[Optional[int], typer.Option("--max-num-batched-tokens", help="default: the engine's (vLLM V1: 8192)")] = None,
    gpu_memory_utilization: Annotated[Optional[float], typer.Option("--gpu-memory-utilization", help="default: the engine's own rule (vLLM: 0.9 of memory; TensorRT-LLM: KV takes 0.95 of what weights leave)")] = None,
    block_size: Annotated[Optional[int], typer.Option("--block-size", help="default 16")] = None,
    no_chunked_prefill: Annotated[bool, typer.Option("--no-chunked-prefill")] = False,
    prefix_hit_fraction: Annotated[float, typer.Option(help="share of each prompt found in the prefix cache")] = 0.0,
    scheduling_policy: Annotated[Optional[str], typer.Option(help="decode_first (vLLM V1) or prefill_first; default: the engine's")] = None,
    num_speculative_tokens: Annotated[int, typer.Option("--num-speculative-tokens")] = 0,
    spec_acceptance_rate: Annotated[float, typer.Option(help="per-token draft acceptance rate")] = 0.0,
    long_prompt_policy: Annotated[str, typer.Option(help="clip or reject prompts beyond the context window")] = "clip",
    seed: Annotated[int, typer.Option(help="seed for synthetic traffic and routing")] = 0,
    allow_scale_out_tp: ScaleOutTpOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    dataset: Annotated[Optional[str], typer.Option("--dataset", "--dataset-name", help="vLLM benchmark mode: 'random' (with --random-input-len/--random-output-len)")] = None,
    random_input_len: Annotated[int, typer.Option("--random-input-len")] = 1024,
    random_output_len: Annotated[int, typer.Option("--random-output-len")] = 128,
    num_prompts: Annotated[int, typer.Option("--num-prompts")] = 1000,
    request_rate: Annotated[float, typer.Option("--request-rate", help="req/s (default inf: all at once)")] = float("inf"),
    burstiness: Annotated[float, typer.Option("--burstiness", help="Gamma shape of inter-arrival gaps (1 = Poisson)")] = 1.0,
    max_concurrency: Annotated[Optional[int], typer.Option("--max-concurrency", help="client-side cap on requests in flight")] = None,
    result_json: Annotated[Optional[Path], typer.Option("--result-json", help="write vLLM benchmark_serving's result JSON keys to FILE")] = None,
    overheads: Annotated[Optional[str], typer.Option("--overheads", help="serving-overheads record id or 'none' (default: vllm-v1 with --dataset, none otherwise)")] = None,
    library: LibraryOpt = None,
) -> None:
    """Replay traffic through replicas of a model on a card (vLLM V1 scheduler, 0.15 line).

    With --dataset random it takes vLLM benchmark_serving's load flags and --result-json
    writes its result keys (mean_ttft_ms, p99_tpot_ms, output_throughput, ...)."""
    from sim.perf.estimate import check_serving_tp, serving_tp_limit, tp_limit_words
    from sim.perf.hardware import Hardware
    from sim.perf.memory import TP_CHOICES, Layout, min_tp, plan_memory
    from sim.perf.precision import Precision
    from sim.serving.engine import engine_config
    from sim.serving.metrics import Slo, summarize
    from sim.serving.simulate import ServeSetup, ServingError, simulate
    from sim.serving.traffic import GammaTraffic, LognormalLengths, PoissonTraffic, TraceTraffic

    lib = _lib(library)
    spec = lib.model(model)
    hw = Hardware.load(card, lib, engine=engine, as_of=as_of)
    prec = Precision.preset(precision)
    hw.check_precision(prec)
    try:
        slo = Slo(slo_ttft_ms, slo_tpot_ms)
        given = {"max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
                 "block_size": block_size, "scheduling_policy": scheduling_policy,
                 "enable_chunked_prefill": False if no_chunked_prefill else None}
        engine = engine_config(engine_name, long_prompt_policy=long_prompt_policy,
                               prefix_hit_fraction=prefix_hit_fraction,
                               num_speculative_tokens=num_speculative_tokens,
                               spec_acceptance_rate=spec_acceptance_rate,
                               **{k: v for k, v in given.items() if v is not None})
        if gpu_memory_utilization is not None and not 0 < gpu_memory_utilization <= 1:
            raise ValueError(f"--gpu-memory-utilization must be in (0, 1] (got "
                             f"{gpu_memory_utilization})")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError(f"--max-concurrency must be >= 1 (got {max_concurrency})")
        if dataset is not None:
            from sim.serving.vllm_bench import random_requests

            if dataset != "random":
                raise ValueError(f"--dataset: only 'random' is simulated (got {dataset!r})")
            source = [random_requests(num_prompts, random_input_len, random_output_len,
                                      request_rate, burstiness, seed)]
        elif trace is not None:
            if not trace.is_file():
                raise ServingError(f"{trace}: cannot read (No such file or directory)")
            source = TraceTraffic(trace, time_scale=time_scale, max_requests=None)
        else:
            if rate is None:
                raise ValueError("give --trace FILE, or --rate for synthetic traffic")
            lengths = LognormalLengths.from_mix(lib.lengths(workload))
            if traffic == "poisson":
                source = PoissonTraffic(rate, requests, lengths, seed)
            elif traffic == "gamma":
                source = GammaTraffic(rate, cv, requests, lengths, seed)
            else:
                raise ValueError(f"--traffic must be poisson or gamma (got {traffic!r})")
    except ServingError:
        raise
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    smallest = min_tp(spec, hw, prec)
    use_tp = tp or smallest
    if use_tp is None:
        raise ServingError(f"{model} ({prec.label}) does not fit on {card} at any TP up to 64")
    if tp is not None and smallest is not None and tp < smallest:
        mem = plan_memory(spec, hw, Layout(tp=tp), prec)
        raise ServingError(f"{model} on {card} ({prec.label}): does not fit at TP {tp} "
                           f"({mem.reason}); the smallest TP that fits is {smallest}")
    if tp is None and use_tp > serving_tp_limit(hw) and not allow_scale_out_tp:
        widest = max(t for t in TP_CHOICES if t <= serving_tp_limit(hw)
                     and spec.architecture.num_attention_heads % t == 0)
        mem = plan_memory(spec, hw, Layout(tp=widest), prec)
        raise ServingError(f"{model} on {card} ({prec.label}): does not fit within "
                           f"{tp_limit_words(hw)} at TP {widest} ({mem.reason}); the smallest "
                           f"TP that fits is {use_tp}, across servers (--allow-scale-out-tp)")
    warning = check_serving_tp(card, hw, use_tp, allow_scale_out_tp)
    setup = ServeSetup(spec, hw, prec, Layout(tp=use_tp), replicas, engine, router, mode, seed,
                       gpu_memory_utilization, _serve_overheads(overheads, dataset, library),
                       max_concurrency)
    if prefill_replicas is not None or decode_replicas is not None:
        if prefill_replicas is None or decode_replicas is None:
            raise ServingError("give both --prefill-replicas and --decode-replicas")
        from sim.serving.disagg import simulate_disaggregated

        res = simulate_disaggregated(setup, source, prefill_replicas, decode_replicas)
        replicas = prefill_replicas + decode_replicas
    else:
        res = simulate(setup, source)
    out = summarize(res, slo, hw.card.power.tdp_w, use_tp)
    out.update(card=card, model=model, precision=prec.label, tp=use_tp, replicas=replicas,
               scheduler=f"{engine.name} {engine.version}", router=router, **_engine_fields(hw),
               tp_limit=serving_tp_limit(hw), scale_out_tp=warning is not None)
    _warn(warning)
    if dataset is not None or result_json is not None:
        from sim.serving.vllm_bench import result_json as vllm_result

        bench = vllm_result(res, model, num_prompts if dataset else out["requests"],
                            request_rate, burstiness, max_concurrency)
        if result_json is not None:
            result_json.write_text(json.dumps(json_safe(bench), indent=2) + "\n", encoding="utf-8")
        out["vllm_benchmark"] = {k: v for k, v in bench.items() if not k.endswith("_lens")}
    if as_json:
        print(json.dumps(json_safe(out), sort_keys=True))
        return
    t = Table(title=f"{model} on {replicas}x {card} TP{use_tp} ({prec.label}, {engine.name})",
              show_header=False)
    for k in ("requests", "finished", "rejected", "clipped", "unstable", "slo_attainment",
              "goodput_rps",
              "throughput_tokens_per_s", "busy_fraction", "preemptions", "sim_wall_s"):
        v = out[k]
        t.add_row(k, f"{v:,.3f}" if isinstance(v, float) else str(v))
    for k in ("ttft_ms", "tpot_ms", "e2e_ms"):
        d = out[k]
        t.add_row(k, " ".join(f"{q}={d[q]:,.1f}" for q in ("mean", "p50", "p90", "p99")
                              if d[q] is not None))
    console.print(t)
    if "vllm_benchmark" in out:
        b = out["vllm_benchmark"]
        console.print(" ".join(f"{k}={b[k]:,.2f}" for k in (
            "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "mean_itl_ms",
            "mean_e2el_ms", "request_throughput", "output_throughput") if b.get(k) is not None))


def _serve_overheads(ident: str | None, dataset: str | None, library):
    """The serving overheads for `serve`: a record id, 'none', or the default (vllm-v1 in
    vLLM-benchmark mode, none otherwise, as before the overheads existed)."""
    from sim.serving import overheads as ov

    ident = ident or ("vllm-v1" if dataset is not None else "none")
    if ident == "none":
        return None
    roots = _lib(library).roots
    return ov.load(ident, roots)


@app.command()
def capacity(
    card: Annotated[str, typer.Option(help="card id, e.g. h100-sxm")],
    model: Annotated[str, typer.Option(help="model id")] = "llama-2-70b",
    precision: Annotated[str, typer.Option(help="bf16, fp16, fp8, fp4 or int8 preset")] = "bf16",
    tp: Annotated[Optional[int], typer.Option(help="tensor parallel (default: best offline)")] = None,
    traffic: Annotated[str, typer.Option(help="poisson, gamma or trace")] = "poisson",
    trace: Annotated[Optional[Path], typer.Option(help="trace whose lengths (and, for --traffic trace, arrival pattern) are used")] = None,
    cv: Annotated[float, typer.Option(help="inter-arrival CV for gamma traffic")] = 2.0,
    workload: Annotated[str, typer.Option(help="length mix when no trace is given")] = "mlperf-llama2-70b",
    requests: Annotated[int, typer.Option(help="requests per simulated point")] = 3000,
    slo_ttft_ms: Annotated[Optional[float], typer.Option(help="p99 TTFT SLO (ms)")] = 2000.0,
    slo_tpot_ms: Annotated[Optional[float], typer.Option(help="p99 TPOT SLO (ms)")] = 200.0,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens")] = 8192,
    seed: Annotated[int, typer.Option(help="seed of the common random numbers")] = 0,
    engine: EngineOpt = None,
    as_of: AsOfOpt = None,
    allow_scale_out_tp: ScaleOutTpOpt = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    library: LibraryOpt = None,
) -> None:
    """Highest request rate per replica that meets p99 TTFT and TPOT SLOs (cached on disk)."""
    from sim.perf.estimate import check_serving_tp, estimate, lengths_for
    from sim.perf.hardware import Hardware
    from sim.perf.memory import Layout
    from sim.perf.precision import Precision
    from sim.serving.capacity import cache_key, cached, max_rate
    from sim.serving.engine import EngineConfig
    from sim.serving.metrics import Slo
    from sim.serving.simulate import ServeSetup, ServingError
    from sim.serving.traffic import (EmpiricalLengths, GammaTraffic, LognormalLengths,
                                     PoissonTraffic, TraceTraffic, collect)

    lib = _lib(library)
    spec = lib.model(model)
    hw = Hardware.load(card, lib, engine=engine, as_of=as_of)
    prec = Precision.preset(precision)
    hw.check_precision(prec)
    try:
        slo = Slo(slo_ttft_ms, slo_tpot_ms)
        engine = EngineConfig(max_num_seqs=max_num_seqs,
                              max_num_batched_tokens=max_num_batched_tokens)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if traffic not in ("poisson", "gamma", "trace"):
        raise typer.BadParameter(f"--traffic must be poisson, gamma or trace (got {traffic!r})")
    if traffic == "trace" and trace is None:
        raise typer.BadParameter("--traffic trace needs --trace FILE")
    if trace is not None and not trace.is_file():
        raise ServingError(f"{trace}: cannot read (No such file or directory)")
    if trace is not None:
        lengths = EmpiricalLengths.from_trace(trace)
        moments = None
    else:
        mix = lib.lengths(workload)
        lengths = LognormalLengths.from_mix(mix)
        moments = lengths_for(lib, workload, None, None)
    from sim.perf.offline import LengthMoments

    m = moments or LengthMoments(float(lengths.input_tokens.mean()),
                                 float(lengths.output_tokens.mean()))
    est = estimate(card, model, prec, m, tp=tp, library=lib, hardware=hw,
                   allow_scale_out_tp=allow_scale_out_tp)
    tp = est.tp
    warning = check_serving_tp(card, hw, tp, allow_scale_out_tp)
    _refuse_misfit(est)
    setup = ServeSetup(spec, hw, prec, Layout(tp=tp), 1, engine)
    if traffic == "trace":
        base = collect(TraceTraffic(trace, max_requests=requests))
        span = float(base.arrival_s[-1] - base.arrival_s[0]) or 1.0
        base_rate = len(base) / span

        def traffic_at(rate, s, _b=base, _r=base_rate):  # the trace's own burstiness, rescaled
            from sim.serving.traffic import RequestChunk

            return [RequestChunk((_b.arrival_s - _b.arrival_s[0]) * _r / rate, _b.input_tokens,
                                 _b.output_tokens)]
    elif traffic == "gamma":
        def traffic_at(rate, s):
            return GammaTraffic(rate, cv, requests, lengths, seed + s)
    else:
        def traffic_at(rate, s):
            return PoissonTraffic(rate, requests, lengths, seed + s)

    files = [lib.path("card", card), lib.path("model", model)] + [
        lib.path("calibration", i) for i in lib.ids("calibration")
        if i == card or i.startswith(card + "@")] + _engine_files(lib, hw)
    if trace is not None:
        files.append(trace)
    key = cache_key(setup, {"traffic": traffic, "cv": cv, "workload": workload,
                            "requests": requests, "seed": seed, "slo": [slo_ttft_ms, slo_tpot_ms],
                            "command": "capacity"}, files)

    def compute() -> dict:
        cap = max_rate(setup, traffic_at, slo)
        return {"max_rate_rps_per_replica": cap.max_rate_rps, "tokens_per_s": cap.tokens_per_s,
                "tokens_per_s_per_card": cap.tokens_per_s_per_card,
                "confirmed_with_second_seed": cap.confirm_seed_meets,
                "bracket_rps": list(cap.bracket), "iterations": cap.iterations,
                "ttft_p99_ms": cap.summary.get("ttft_ms", {}).get("p99"),
                "tpot_p99_ms": cap.summary.get("tpot_ms", {}).get("p99")}

    out = cached(key, compute)
    out.update(card=card, model=model, precision=prec.label, tp=tp, traffic=traffic,
               slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, cache_key=key,
               **_engine_fields(hw), tp_limit=est.tp_limit, scale_out_tp=est.scale_out_tp)
    _warn(warning)
    if as_json:
        print(json.dumps(json_safe(out), sort_keys=True))
        return
    console.print(f"{model} on {card} TP{tp} ({prec.label}), {traffic} traffic: max "
                  f"{out['max_rate_rps_per_replica']:.3f} req/s per replica meets p99 TTFT <= "
                  f"{slo_ttft_ms} ms and p99 TPOT <= {slo_tpot_ms} ms "
                  f"({out['tokens_per_s_per_card']:,.0f} output tokens/s per card)")


calibrate_app = typer.Typer(help="Calibration: fit measured microbenchmarks into calibration.")
app.add_typer(calibrate_app, name="calibrate")


@calibrate_app.command("engines")
def calibrate_engines(
    out: Annotated[Optional[Path], typer.Option(help="folder for the fits (default: the "
                                                "packaged hardware_specs/engine_fits)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write the Markdown report here")] = None,
    engine: Annotated[Optional[list[str]], typer.Option(help="fit only this engine (repeatable)")] = None,
    loo: Annotated[bool, typer.Option(help="leave-one-out residuals (slower)")] = True,
    library: LibraryOpt = None,
) -> None:
    """Fit each engine release's factors to its vendor's published tables, and each stack's
    improvement rate to its dated releases (hardware_specs/software_trends/)."""
    from sim.calibrate.engines import fit_all, fit_engine, render_markdown, write_fits
    from sim.config.library import packaged_root

    lib = _lib(library)
    if engine:
        for e in engine:
            lib.engine(e)  # an unknown id is a one-line error before any fitting
        reports = [r for r in (fit_engine(e, lib, loo) for e in engine) if r is not None]
    else:
        reports = fit_all(lib, loo)
    from sim.calibrate.software_trend import fit_trends, write_trends

    paths = write_fits(reports, out or packaged_root() / "hardware_specs" / "engine_fits")
    if not engine:  # the stacks' improvement rates need every release: only on a full refit
        paths += write_trends(fit_trends(lib), (out.parent / "software_trends") if out else
                              packaged_root() / "hardware_specs" / "software_trends")
    md = render_markdown(reports)
    if report is not None:
        report.write_text(md)
    for p in paths:
        console.print(f"wrote {p}")
    console.print(md.split("\n## ")[0])


@calibrate_app.command("fit")
def calibrate_fit(
    raw: Annotated[list[Path], typer.Argument(
        help="raw YAML file(s) written by `python -m sim.calibrate.run` for one card")],
    card: Annotated[str, typer.Option(help="card id the measurement belongs to")],
    out: Annotated[Optional[Path], typer.Option(help="calibration file to write")] = None,
    library: LibraryOpt = None,
) -> None:
    """Fit measured points into `<card>@measured.yaml` (tier `measured`)."""
    from sim.calibrate.fit import fit_file

    lib = _lib(library)
    lib.card(card)
    target = out or Path("hardware_specs") / "calibration" / f"{card}@measured.yaml"
    rec = fit_file(raw, card, target, lib)
    flat = []
    for k, v in rec.items():
        if not isinstance(v, dict) or k == "sources":
            continue
        if "value" in v:
            flat.append(f"{k}={v['value']}")
        else:
            flat += [f"{k}.{kk}={vv['value']}" for kk, vv in v.items()]
    console.print(f"wrote {target}: " + ", ".join(flat))


@calibrate_app.command("import")
def calibrate_import(
    result: Annotated[Path, typer.Argument(help="vLLM benchmark_serving result JSON or a GenAI-Perf/AIPerf export")],
    as_json: Annotated[bool, typer.Option("--json", help="print the normalised record")] = False,
) -> None:
    """Read a serving benchmark result from your own deployment into fleetsim's form."""
    import dataclasses

    from sim.calibrate.serving_import import load_measurement

    meas = load_measurement(result)
    rec = dataclasses.asdict(meas)
    rec["input_tokens_mean"] = float(sum(meas.input_lens) / meas.num_requests)
    rec["output_tokens_mean"] = float(sum(meas.output_lens) / meas.num_requests)
    rec.pop("input_lens")
    rec.pop("output_lens")
    if as_json:
        print(json.dumps(json_safe(rec), sort_keys=True))
        return
    console.print(rec)


@calibrate_app.command("check")
def calibrate_check(
    measurement: Annotated[Path, typer.Argument(
        help="raw layer YAML from `python -m sim.calibrate.run`, or a serving result JSON")],
    card: Annotated[Optional[str], typer.Option(help="card id the measurement belongs to (not with --against)")] = None,
    against: Annotated[Optional[Path], typer.Option("--against", help="a second vLLM-format result JSON (e.g. `fleetsim serve --result-json`): diff the two files key by key")] = None,
    model: Annotated[Optional[str], typer.Option(help="model id (serving results)")] = None,
    precision: Annotated[str, typer.Option(help="precision preset (serving results)")] = "bf16",
    tp: Annotated[int, typer.Option(help="tensor parallel (serving results)")] = 1,
    replicas: Annotated[int, typer.Option(help="replicas behind the endpoint")] = 1,
    max_num_seqs: Annotated[int, typer.Option("--max-num-seqs")] = 256,
    max_num_batched_tokens: Annotated[int, typer.Option("--max-num-batched-tokens")] = 8192,
    library: LibraryOpt = None,
) -> None:
    """Model vs measurement: transformer-layer times, or a whole serving benchmark."""
    import statistics

    if against is not None:
        _diff_results(measurement, against)
        return
    if card is None:
        raise typer.BadParameter("--card is needed (or --against FILE to diff two results)")
    lib = _lib(library)
    if measurement.suffix.lower() == ".json":
        from sim.calibrate.serving_import import check_serving, load_measurement
        from sim.perf.hardware import Hardware
        from sim.perf.memory import Layout
        from sim.perf.precision import Precision
        from sim.serving.engine import EngineConfig
        from sim.serving.simulate import ServeSetup

        if model is None:
            raise typer.BadParameter("a serving result needs --model (the JSON names a "
                                     "checkpoint, not a library id)")
        meas = load_measurement(measurement)
        setup = ServeSetup(lib.model(model), Hardware.load(card, lib), Precision.preset(precision),
                           Layout(tp=tp), replicas, EngineConfig(
                               max_num_seqs=max_num_seqs,
                               max_num_batched_tokens=max_num_batched_tokens),
                           max_concurrency=meas.max_concurrency)
        rows = check_serving(meas, setup)
        t = Table(title=f"serving check: {measurement.name} vs {model} on {replicas}x {card} "
                        f"TP{tp}")
        for col in ("metric", "measured", "predicted", "error"):
            t.add_column(col)
        for r in rows:
            t.add_row(r["metric"], f"{r['measured']:,.2f}", f"{r['predicted']:,.2f}",
                      "-" if r["error"] is None else f"{r['error']:+.1%}")
        console.print(t)
        return

    from sim.calibrate.check import check
    from sim.config.loader import read_yaml

    rows = check(read_yaml(measurement), card, lib)
    t = Table(title=f"layer check on {card}: model vs {measurement.name}")
    for col in ("section", "model", "TP", "phase", "batch", "len", "measured us", "predicted us",
                "error"):
        t.add_column(col)
    for r in rows:
        t.add_row(r.section, r.model, str(r.tp), r.phase, str(r.batch), str(r.length),
                  f"{r.measured_s * 1e6:,.0f}", f"{r.predicted_s * 1e6:,.0f}", f"{r.error:+.1%}")
    console.print(t)
    for sec in sorted({r.section for r in rows}):
        errs = [abs(r.error) for r in rows if r.section == sec]
        console.print(f"{sec}: median |error| {statistics.median(errs):.1%}, worst "
                      f"{max(errs):.1%} over {len(errs)} points")


def _diff_results(measured: Path, predicted: Path) -> None:
    """Two vLLM-format result JSONs side by side: measured (a real run) vs predicted."""
    from sim.calibrate.serving_import import read_result_json
    from sim.serving.vllm_bench import diff

    rows = diff(read_result_json(measured), read_result_json(predicted))
    if not rows:
        raise typer.BadParameter(f"{measured.name} and {predicted.name} share no result keys")
    t = Table(title=f"serving results: {measured.name} (measured) vs {predicted.name}")
    for col in ("key", "measured", "predicted", "error"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["key"], f"{r['measured']:,.2f}", f"{r['predicted']:,.2f}",
                  "-" if r["error"] is None else f"{r['error']:+.1%}")
    console.print(t)


@app.command("run")
def run_cmd(
    scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
    out: Annotated[Path, typer.Option(help="output folder (written atomically)")] = Path("out"),
    force: Annotated[bool, typer.Option(help="replace an existing output folder")] = False,
    library: LibraryOpt = None,
    workers: Annotated[int, typer.Option(help="processes for the scenario's analyses")] = 1,
    dask: Annotated[Optional[str], typer.Option(
        "--dask", help="run the analyses on Dask: 'local' or tcp://host:port")] = None,
    skip_analysis: Annotated[bool, typer.Option(
        "--skip-analysis", help="ignore the scenario's analysis: section")] = False,
    allow_outside_paths: OutsidePathsOpt = False,
) -> None:
    """Run a scenario through every layer and write results, summary and report (and the
    analyses its `analysis:` section asks for: Monte Carlo, tornado, flip points, sweep)."""
    from sim.config.loader import ConfigError
    from sim.stages import run

    lib = _lib(library)
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists (use --force to replace it)")
    with _stages() as say:
        say("loading scenario")
        res = run(scenario, lib, progress=say, allow_outside_paths=allow_outside_paths)
        if not skip_analysis and res.scenario.analysis != type(res.scenario.analysis)():
            from sim.experiments.executors import make_executor
            from sim.experiments.suite import run_analyses

            with make_executor(dask, workers) as ex:
                res = res.with_analyses(run_analyses(
                    res.scenario, base=scenario.resolve().parent, library=lib, executor=ex,
                    say=say, allow_outside_paths=allow_outside_paths))
        say("writing results")
        res.to_dir(out, force=force)
    w = res.decision.winner
    console.print(f"winner: [bold]{w or 'none (no option meets the SLOs)'}[/bold]; results, "
                  f"summary.json and report.md in {out}")
    console.print(f"report: {out / 'report.html'}", soft_wrap=True, markup=False,
                  highlight=False)


@app.command()
def schema(out: Annotated[Path, typer.Option(help="folder for the *.schema.json files")] = Path(
        "schemas")) -> None:
    """Write JSON Schema for every YAML kind (editors use them to autocomplete and validate)."""
    from sim.config.library import KINDS
    from sim.config.scenario import Scenario

    out.mkdir(parents=True, exist_ok=True)
    kinds = {kind: cls for kind, (_, cls) in KINDS.items()} | {"scenario": Scenario}
    for kind, model_cls in kinds.items():
        path = out / f"{kind}.schema.json"
        schema_obj = model_cls.model_json_schema()
        schema_obj["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(schema_obj, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)
        console.print(f"wrote {path}")


RUN_QUIET_S = 3.0
"""`fleetsim run` prints no stage line in its first seconds (not a terminal): a bad scenario
stays one line."""


@contextmanager
def _stages():
    """A `say(stage)` callback: a spinner with the elapsed time on a terminal, plain timed lines
    on stderr otherwise (a log, CI, a pipe)."""
    if not err_console.is_terminal:
        plain = _PlainProgress("run", quiet_s=RUN_QUIET_S)
        try:
            yield plain.stage
        finally:
            plain.close()
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as prog:
        task = prog.add_task("starting", total=None)
        yield lambda msg: prog.update(task, description=msg)


def _opt(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def _register_experiments() -> None:
    import sim.cli_experiments  # noqa: F401  (registers validate/sweep/mc/tornado/flip)
    import sim.cli_train  # noqa: F401  (registers train, calibrate training)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    _register_experiments()
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:  # accepted anywhere: the root option goes before the subcommand
        args = ["--debug", *(a for a in args if a != "--debug")]
    try:
        app(args, standalone_mode=False)
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except Exception as exc:  # noqa: BLE001 - classify below
        if debug:
            for line in getattr(exc, "details", ())[1:]:  # what "(and N more)" counted
                print(f"also: {line}", file=sys.stderr)
            raise
        if isinstance(exc, _user_errors()):
            more = "; --debug lists them all" if len(getattr(exc, "details", ())) > 1 else ""
            print(f"error: {str(exc).splitlines()[0]}{more}", file=sys.stderr)
            raise SystemExit(2) from None
        name = type(exc).__name__
        if name == "Abort":
            print("aborted", file=sys.stderr)
            raise SystemExit(130) from None
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):  # click usage errors
            msg = str(exc.format_message()).splitlines()[0]
            print(f"error: {msg}", file=sys.stderr)
            raise SystemExit(2) from None
        raise

if __name__ == "__main__":
    # `python -m sim.cli`: run the imported module's app, where sim.cli_experiments registers
    # its commands (this __main__ copy is a different module object)
    from sim.cli import main as _main

    _main()
