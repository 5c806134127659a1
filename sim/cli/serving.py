"""`fleetsim serve` and `fleetsim capacity`: the serving simulator on the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from sim.cli.shared import (app, card_setup, console, engine_fields, load_library,
                            refuse_misfit, warn, AsOfOpt, EngineOpt, LibraryOpt, ScaleOutTpOpt)
from sim.report import json_safe


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
    from sim.perf.memory import TP_CHOICES, Layout, min_tp, plan_memory
    from sim.serving.engine import engine_config
    from sim.serving.metrics import Slo, summarize
    from sim.serving.simulate import ServeSetup, ServingError, simulate
    from sim.serving.traffic import (SYNTHETIC_KINDS, TRAFFIC_KINDS, LognormalLengths,
                                     TraceTraffic, kinds_text)

    lib, spec, hw, prec = card_setup(card, model, precision, engine, as_of, library)
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
            if traffic not in SYNTHETIC_KINDS:
                raise ValueError(f"--traffic must be {kinds_text(SYNTHETIC_KINDS)} "
                                 f"(got {traffic!r})")
            source = TRAFFIC_KINDS[traffic](rate, requests, lengths, seed, cv=cv)
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
               scheduler=f"{engine.name} {engine.version}", router=router, **engine_fields(hw),
               tp_limit=serving_tp_limit(hw), scale_out_tp=warning is not None)
    warn(warning)
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
    roots = load_library(library).roots
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
    from sim.perf.memory import Layout
    from sim.serving.capacity import cache_key, cached, max_rate
    from sim.serving.engine import EngineConfig
    from sim.serving.metrics import Slo
    from sim.serving.simulate import ServeSetup, ServingError
    from sim.serving.traffic import (TRAFFIC_KINDS, EmpiricalLengths, LognormalLengths,
                                     TraceTraffic, collect, kinds_text)
    from sim.stages.capacity import calibration_files, engine_files

    lib, spec, hw, prec = card_setup(card, model, precision, engine, as_of, library)
    try:
        slo = Slo(slo_ttft_ms, slo_tpot_ms)
        engine = EngineConfig(max_num_seqs=max_num_seqs,
                              max_num_batched_tokens=max_num_batched_tokens)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if traffic not in TRAFFIC_KINDS:
        raise typer.BadParameter(f"--traffic must be {kinds_text(list(TRAFFIC_KINDS))} "
                                 f"(got {traffic!r})")
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
    refuse_misfit(est)
    setup = ServeSetup(spec, hw, prec, Layout(tp=tp), 1, engine)
    base = collect(TraceTraffic(trace, max_requests=requests)) if traffic == "trace" else None
    make = TRAFFIC_KINDS[traffic]

    def traffic_at(rate, s):
        return make(rate, requests, lengths, seed + s, cv=cv, trace=base)

    files = [lib.path("card", card), lib.path("model", model),
             *calibration_files(lib, card), *engine_files(lib, hw)]
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
               **engine_fields(hw), tp_limit=est.tp_limit, scale_out_tp=est.scale_out_tp)
    warn(warning)
    if as_json:
        print(json.dumps(json_safe(out), sort_keys=True))
        return
    console.print(f"{model} on {card} TP{tp} ({prec.label}), {traffic} traffic: max "
                  f"{out['max_rate_rps_per_replica']:.3f} req/s per replica meets p99 TTFT <= "
                  f"{slo_ttft_ms} ms and p99 TPOT <= {slo_tpot_ms} ms "
                  f"({out['tokens_per_s_per_card']:,.0f} output tokens/s per card)")
