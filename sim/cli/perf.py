"""`fleetsim perf`: one performance estimate, or every card compared."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer
from rich.table import Table

from sim.cli.shared import (app, console, load_library, print_table, refuse_misfit, warn, AsOfOpt,
                            EngineOpt, LibraryOpt, ScaleOutTpOpt)
from sim.report import json_safe


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

    lib = load_library(library)
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
    refuse_misfit(est)
    warn(warning)
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
    print_table(t, ids=("card", "engine"))
