"""`fleetsim run` (a scenario through every stage, its results written) and `fleetsim
schema`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from sim.cli.shared import app, console, load_library, run_progress, LibraryOpt, OutsidePathsOpt


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

    lib = load_library(library)
    if out.exists() and not force:
        raise ConfigError(f"{out}: already exists (use --force to replace it)")
    with run_progress() as say:
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
