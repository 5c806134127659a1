"""`fleetsim calibrate engines / fit / import / check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from sim.cli.shared import calibrate_app, console, load_library, LibraryOpt
from sim.report import json_safe


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

    lib = load_library(library)
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

    lib = load_library(library)
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
    lib = load_library(library)
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
        _print_errors(f"serving check: {measurement.name} vs {model} on {replicas}x {card} "
                      f"TP{tp}", "metric", rows)
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
    _print_errors(f"serving results: {measured.name} (measured) vs {predicted.name}", "key",
                  rows)


def _print_errors(title: str, name: str, rows: list[dict]) -> None:
    """A measured-vs-predicted table: one row per `r[name]`, with the relative error."""
    t = Table(title=title)
    for col in (name, "measured", "predicted", "error"):
        t.add_column(col)
    for r in rows:
        t.add_row(r[name], f"{r['measured']:,.2f}", f"{r['predicted']:,.2f}",
                  "-" if r["error"] is None else f"{r['error']:+.1%}")
    console.print(t)
