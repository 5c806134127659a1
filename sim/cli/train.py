"""`fleetsim train` and `fleetsim calibrate training`: training from physics on the command line.

    fleetsim train --model llama-3.1-70b --card h100-sxm --cards 1024 --tokens 15e12
    fleetsim train --workload mlperf-llama2-70b-lora --card h100-sxm --cards 8 --json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from sim.cli.shared import app, calibrate_app, console, load_library, LibraryOpt
from sim.report import json_safe


@app.command()
def train(
    card: Annotated[str, typer.Option(help="card id, e.g. h100-sxm")],
    cards: Annotated[int, typer.Option(help="cards in the job")],
    model: Annotated[Optional[str], typer.Option(help="model id (default: the workload's)")] = None,
    tokens: Annotated[Optional[float], typer.Option(help="tokens to train")] = None,
    workload: Annotated[Optional[str], typer.Option(
        help="training benchmark in workloads/training (e.g. mlperf-llama2-70b-lora)")] = None,
    seq_len: Annotated[int, typer.Option(help="sequence length (tokens)")] = 8192,
    global_batch: Annotated[Optional[int], typer.Option(
        help="sequences per step (default: the workload's, else 4M tokens)")] = None,
    precision: Annotated[str, typer.Option(help="bf16 or fp8")] = "bf16",
    task: Annotated[str, typer.Option(help="pretrain, finetune or lora")] = "pretrain",
    tp: Annotated[Optional[int], typer.Option(help="tensor parallel (with --pp, --cp, ...: "
                                                   "a fixed layout; default: the fastest)")] = None,
    pp: Annotated[int, typer.Option(help="pipeline parallel")] = 1,
    cp: Annotated[int, typer.Option(help="context parallel")] = 1,
    ep: Annotated[int, typer.Option(help="expert parallel")] = 1,
    vp: Annotated[int, typer.Option(help="virtual pipeline stages")] = 1,
    micro_batch: Annotated[int, typer.Option(help="micro-batch (sequences)")] = 1,
    recompute: Annotated[str, typer.Option(help="none, selective, full or block (with "
                                               "--recompute-layers)")] = "selective",
    recompute_layers: Annotated[int, typer.Option(
        help="with --recompute block: layers of each pipeline stage recomputed whole "
             "(Megatron's recompute_num_layers)")] = 0,
    zero: Annotated[int, typer.Option(help="ZeRO stage 0-3")] = 1,
    failures_per_card_year: Annotated[float, typer.Option(
        help="interruptions per card-year (reference-data D1)")] = 0.17,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    library: LibraryOpt = None,
) -> None:
    """Step time, layout, memory, MFU and time to train of a training job (exit 2 when nothing
    fits, a layout does not divide the cards, or an id is unknown)."""
    from sim.config.loader import ConfigError
    from sim.perf.training import TrainJob, TrainLayout, plan_training

    lib = load_library(library)
    lib.card(card)
    bench = lib.training_benchmark(workload) if workload else None
    model_id = model or (bench.model if bench else None)
    if model_id is None:
        raise ConfigError("train: give --model or --workload")
    m = lib.model(model_id)
    if bench is not None:
        seq_len, precision, task = bench.seq_tokens, bench.precision, bench.task
    if precision not in ("bf16", "fp8") or task not in ("pretrain", "finetune", "lora"):
        raise ConfigError(f"train: --precision bf16|fp8 and --task pretrain|finetune|lora "
                          f"(got {precision}, {task})")
    if recompute not in ("none", "selective", "full", "block"):
        raise ConfigError(f"train: --recompute none|selective|full|block (got {recompute})")
    if (recompute == "block") != (recompute_layers > 0):
        raise ConfigError(f"train: --recompute block needs --recompute-layers >= 1, and only "
                          f"it takes one (got {recompute}, {recompute_layers})")
    if cards < 1 or (tokens is None and bench is None) or (tokens is not None and tokens <= 0):
        raise ConfigError("train: give --cards >= 1 and --tokens > 0 (or --workload)")
    gbs = global_batch or (bench.default_global_batch if bench else max(1, 4 * 2**20 // seq_len))
    job = TrainJob(m, seq_len, gbs, precision, task)  # type: ignore[arg-type]
    layout = None
    if tp is not None:
        dp = cards // (tp * pp * cp) if tp * pp * cp else 0
        layout = TrainLayout(tp, pp, max(dp, 1), cp, ep, micro_batch, vp, recompute,  # type: ignore[arg-type]
                             zero, recompute_layers)
    plan = plan_training(job, card, cards, lib, tokens=tokens, layout=layout,
                         failures_per_card_year=failures_per_card_year, benchmark=bench)
    out = plan.to_dict() | {"model": model_id, "workload": workload, "global_batch": gbs,
                            "seq_len": seq_len, "precision": precision, "task": task}
    if as_json:
        print(json.dumps(json_safe(out), sort_keys=True))
        return
    t = Table(title=f"{model_id} on {cards} x {card}", show_header=False)
    rows = [("layout", plan.step.layout.label()), ("step time", f"{plan.step.step_s:.3f} s"),
            ("tokens/s per card", f"{plan.step.tokens_per_s_per_card:,.0f}"),
            ("MFU (BF16 peak)", f"{plan.step.mfu:.1%}"),
            ("memory per card", f"{plan.step.memory.total_gb:.1f} of "
                                f"{plan.step.memory.usable_gb:.1f} GB usable"),
            ("goodput (interruptions)", f"{plan.interruptions.goodput:.1%} "
                                        f"({plan.interruptions.failures_per_day:.2f} failures/day, "
                                        f"checkpoint every "
                                        f"{plan.interruptions.checkpoint_interval_s / 60:.0f} min)"),
            ("time to train", f"{plan.time_to_train_days:.2f} days")]
    if plan.time_to_train_minutes is not None:
        rows.append(("benchmark time to train", f"{plan.time_to_train_minutes:.1f} min"))
    rows.append(("calibration", plan.calibration))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)


@calibrate_app.command("training")
def calibrate_training(
    out: Annotated[Optional[Path], typer.Option(help="folder for the fits (default: the "
                                                "packaged hardware_specs/training_fits)")] = None,
    report: Annotated[Optional[Path], typer.Option(help="write the Markdown report here")] = None,
    loo: Annotated[bool, typer.Option(help="leave-one-out residuals (slower)")] = True,
    library: LibraryOpt = None,
) -> None:
    """Fit each card's training factors to published non-MLPerf training tables."""
    from sim.calibrate.training import fit_all, render_markdown, write_fits
    from sim.config.library import packaged_root

    lib = load_library(library)
    fits, rows, skipped = fit_all(lib, loo)
    paths = write_fits(fits, out or packaged_root() / "hardware_specs" / "training_fits")
    md = render_markdown(fits, rows, skipped)
    if report is not None:
        report.write_text(md)
    for p in paths:
        console.print(f"wrote {p}")
    console.print(md.split("\n| point")[0])
