"""`fleetsim validate / sweep / mc / tornado / flip / optimize`: experiments from the command line.

Each command loads the scenario (one-line errors, exit code 2), runs through the executor chosen
by `--workers N` (local processes) or `--dask local|tcp://host:port`, shows a progress bar, and
writes machine-readable results plus a report section (Markdown and self-contained HTML) under
`--out`. With `--json` it prints one JSON object instead of tables. Sweeps and Monte Carlo write
each finished batch under `--out` at once, so a rerun of the same command resumes.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from sim.cli.shared import (app, console, err_console, load_library, LibraryOpt, OutsidePathsOpt,
                            PlainProgress)


WorkersOpt = Annotated[int, typer.Option(help="local worker processes (1: in this process)")]
DaskOpt = Annotated[Optional[str], typer.Option(
    "--dask", help="run on Dask: 'local' starts a LocalCluster, or a scheduler address "
                   "tcp://host:port")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
OutOpt = Annotated[Optional[Path], typer.Option(
    help="folder for results and the report section (default out/<scenario>/<command>)")]
FidelityOpt = Annotated[bool, typer.Option(
    "--fidelity/--no-fidelity", help="draw each serving card's throughput from the model's "
                                     "measured fidelity error (default on)")]


def _load(scenario: Path, library):
    from sim.config.scenario import load_scenario

    lib = load_library(library)
    return load_scenario(scenario, lib), lib, scenario.resolve().parent


def _out(out: Path | None, scenario: Path, name: str) -> Path:
    return out if out is not None else Path("out") / scenario.stem / name


@contextmanager
def _executor(workers: int, dask: str | None, quiet: bool):
    from sim.experiments.executors import make_executor

    if workers < 1:
        raise typer.BadParameter("--workers must be >= 1")
    ex = make_executor(dask, workers)
    try:
        if ex.startup_s and not quiet:
            err_console.print(f"{ex.name}: started in {ex.startup_s:.1f} s")
        yield ex
    finally:
        ex.close()


@contextmanager
def _progress(label: str, quiet: bool, unit: str = "batches", items: int | None = None):
    """A `progress(done, total)` callback for `execute`'s batches: a bar with the ETA on a
    terminal, plain lines on stderr otherwise (a log, CI, a pipe); nothing when `quiet` (--json).
    With `items` (the points run, e.g. Monte Carlo draws), batches done are shown as items."""
    with _progress_bar(label, quiet, unit) as update:
        if update is None or items is None:
            yield update
            return
        from sim.experiments.engine import DEFAULT_BATCH

        def in_items(done: int, total: int) -> None:
            update(items if done >= total else min(done * DEFAULT_BATCH, items), items)
        yield in_items


@contextmanager
def _progress_bar(label: str, quiet: bool, unit: str):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    if quiet:
        yield None
        return
    if not err_console.is_terminal:
        yield PlainProgress(label, unit).count
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=err_console,
                  transient=True) as prog:
        task = prog.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)
        yield update


def _emit(payload: dict, as_json: bool) -> None:
    from sim.report import json_safe

    if as_json:
        sys.stdout.write(json.dumps(json_safe(payload), sort_keys=True) + "\n")


def _write_section(analyses: dict, folder: Path, name: str, scn) -> None:
    from sim.report.analysis import write_results, write_section

    write_results(analyses, folder, name)
    write_section(analyses, folder, name, scn)


@app.command()
def validate(scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
             library: LibraryOpt = None) -> None:
    """Check a scenario (schema, references, YAML paths) without running it."""
    scn, _, _ = _load(scenario, library)
    console.print(f"ok: {scenario}: {len(scn.options)} options, {len(scn.workloads)} "
                  f"workloads, {len(scn.training)} training campaigns, "
                  f"{len(scn.uncertain)} uncertain inputs")


def _parse_values(spec: str) -> tuple[str, list]:
    """PATH=v1,v2,... or PATH=low:high:n (n evenly spaced values)."""
    import numpy as np
    import yaml

    from sim.config.loader import ConfigError

    if "=" not in spec:
        raise ConfigError(f"--set {spec}: write PATH=v1,v2,... or PATH=low:high:n")
    path, vals = spec.split("=", 1)
    if vals.count(":") == 2 and "," not in vals:
        try:
            lo, hi, n = vals.split(":")
            values = [float(x) for x in np.linspace(float(lo), float(hi), int(n))]
        except ValueError:
            raise ConfigError(f"--set {spec}: low:high:n needs two numbers and a count") from None
        if int(n) < 1:
            raise ConfigError(f"--set {spec}: n must be >= 1")
        return path, values
    out = []
    for v in vals.split(","):
        if not v.strip():
            raise ConfigError(f"--set {spec}: empty value")
        out.append(yaml.safe_load(v))
    return path, out


@app.command()
def sweep(scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
          set_: Annotated[list[str], typer.Option(
              "--set", help="PATH=v1,v2,... or PATH=low:high:n (repeatable: a grid)")],
          zip_: Annotated[bool, typer.Option("--zip", help="pair the lists instead of a grid")]
          = False,
          out: OutOpt = None, workers: WorkersOpt = 1, dask: DaskOpt = None,
          as_json: JsonOpt = False, library: LibraryOpt = None,
          allow_outside_paths: OutsidePathsOpt = False) -> None:
    """Run the scenario at every combination of the given values; one tidy frame."""
    from sim.experiments.analyses import sweep as run_sweep

    scn, lib, base = _load(scenario, library)
    grid = dict(_parse_values(s) for s in set_)
    folder = _out(out, scenario, "sweep")
    with _executor(workers, dask, as_json) as ex, _progress("sweep", as_json) as prog:
        df = run_sweep(scn, grid, mode="zip" if zip_ else "grid", base=base, library=lib,
                       executor=ex, out=folder, progress=prog,
                       allow_outside_paths=allow_outside_paths)
    _write_section({"sweep": df}, folder, "sweep", scn)
    if as_json:
        _emit({"points": int(df["point"].nunique()), "rows": df.to_dict(orient="records")},
              True)
        return
    cols = ["point", *grid, "option", "npv_usd", "usd_per_m_tokens", "slo_attainment",
            "winner"]
    console.print(df[cols].to_string(index=False))
    console.print(f"results: {folder}")


@app.command()
def mc(scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
       draws: Annotated[int, typer.Option(help="number of Monte Carlo draws")] = 200,
       fidelity: FidelityOpt = True, out: OutOpt = None, workers: WorkersOpt = 1,
       dask: DaskOpt = None, as_json: JsonOpt = False, library: LibraryOpt = None,
       allow_outside_paths: OutsidePathsOpt = False) -> None:
    """Monte Carlo over the scenario's `uncertain:` inputs: win probabilities and NPV ranges."""
    from sim.config.loader import ConfigError
    from sim.experiments.analyses import monte_carlo

    if draws < 1:
        raise ConfigError(f"--draws: must be >= 1 (got {draws})")
    scn, lib, base = _load(scenario, library)
    folder = _out(out, scenario, "mc")
    with (_executor(workers, dask, as_json) as ex,
          _progress("Monte Carlo", as_json, "draws", draws) as prog):
        res = monte_carlo(scn, draws, fidelity=fidelity, base=base, library=lib, executor=ex,
                          out=folder, progress=prog, allow_outside_paths=allow_outside_paths)
    _write_section({"monte_carlo": res}, folder, "mc", scn)
    if as_json:
        _emit(res.to_json(), True)
        return
    console.print(f"{draws} draws in {res.seconds:.1f} s; win probability:")
    for o, p in sorted(res.win_probability.items(), key=lambda kv: -kv[1]):
        console.print(f"  {o}: {p:.1%}")
    console.print(res.percentiles[["option", "npv_p5", "npv_p50", "npv_p95"]]
                  .to_string(index=False, float_format=lambda v: f"{v / 1e6:,.1f}M"))
    console.print(f"results: {folder}")


@app.command("tornado")
def tornado_cmd(scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
                fidelity: FidelityOpt = True, out: OutOpt = None, workers: WorkersOpt = 1,
                dask: DaskOpt = None, as_json: JsonOpt = False,
                library: LibraryOpt = None,
                allow_outside_paths: OutsidePathsOpt = False) -> None:
    """One-at-a-time sensitivity: each uncertain input at its 10th and 90th percentile."""
    from sim.experiments.analyses import tornado

    scn, lib, base = _load(scenario, library)
    folder = _out(out, scenario, "tornado")
    with _executor(workers, dask, as_json) as ex, _progress("tornado", as_json) as prog:
        df = tornado(scn, fidelity=fidelity, base=base, library=lib, executor=ex, progress=prog,
                     allow_outside_paths=allow_outside_paths)
    _write_section({"tornado": df}, folder, "tornado", scn)
    if as_json:
        _emit({"rows": df.to_dict(orient="records")}, True)
        return
    console.print(df.to_string(index=False))
    console.print(f"results: {folder}")


@app.command("flip")
def flip_cmd(scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
             param: Annotated[str, typer.Option(help="YAML path of the input to vary")],
             between: Annotated[tuple[float, float], typer.Option(
                 help="the bracket searched: LOW HIGH")],
             options: Annotated[Optional[tuple[str, str]], typer.Option(
                 help="the two options compared (default: the winner and the runner-up)")]
             = None,
             out: OutOpt = None, workers: WorkersOpt = 1, dask: DaskOpt = None,
             as_json: JsonOpt = False, library: LibraryOpt = None,
             allow_outside_paths: OutsidePathsOpt = False) -> None:
    """The value of one input at which two options cost the same (NPV)."""
    from sim.experiments.analyses import flip

    scn, lib, base = _load(scenario, library)
    folder = _out(out, scenario, "flip")
    with _executor(workers, dask, as_json) as ex, _progress("flip", as_json) as prog:
        res = flip(scn, param, between, options, base=base, library=lib, executor=ex,
                   progress=prog, allow_outside_paths=allow_outside_paths)
    _write_section({"flip": [res]}, folder, "flip", scn)
    if as_json:
        _emit(res.to_json(), True)
        return
    console.print(res.statement())
    console.print(f"results: {folder}")


@app.command("optimize")
def optimize_cmd(scenario: Annotated[Path, typer.Argument(help="scenario YAML")],
                 cards: Annotated[Optional[str], typer.Option(
                     help="candidate cards, comma-separated (default: every card the "
                          "scenario's options buy)")] = None,
                 unit: Annotated[int, typer.Option(help="cards per server bought")] = 8,
                 margin: Annotated[float, typer.Option(
                     help="demand margin of the first round")] = 0.05,
                 out: OutOpt = None, as_json: JsonOpt = False,
                 library: LibraryOpt = None,
                 allow_outside_paths: OutsidePathsOpt = False) -> None:
    """The cheapest purchase plan (MILP on a linearised fleet), checked by simulating it."""
    import yaml

    from sim.experiments.optimize import optimize

    scn, lib, base = _load(scenario, library)
    folder = _out(out, scenario, "optimize")
    res = optimize(scn, cards=[c.strip() for c in cards.split(",")] if cards else None,
                   unit=unit, margin=margin, base=base, library=lib,
                   allow_outside_paths=allow_outside_paths)
    _write_section({"optimize": res}, folder, "optimize", scn)
    (folder / "optimised-option.yaml").write_text(
        "# The optimiser's plan as a scenario option: paste it under `options:`.\n"
        + yaml.safe_dump({"optimised": res.option}, sort_keys=False))
    if as_json:
        _emit(res.to_json(), True)
        return
    console.print(res.plan.to_string(index=False))
    console.print(res.comparison.to_string(index=False))
    for n in res.notes:
        console.print(n)
    console.print(f"results: {folder}")
