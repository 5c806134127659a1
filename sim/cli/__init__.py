"""`fleetsim` command line: library tables, performance estimates, serving, calibration,
scenario runs, experiments and training. One module per group of commands, each calling the
same functions a notebook calls; `shared` holds what they share (no private names cross files).

User errors (bad YAML, unknown ids, impossible precision or layout) print one line to stderr and
exit with code 2; `--debug` (anywhere on the command line) shows the traceback instead, after the
full list of what a file got wrong where the one line says "(and N more)".
"""

from __future__ import annotations

import sys

import typer

# each module registers its commands on `app`, in the order `fleetsim --help` lists them
from sim.cli import library, perf, serving, calibrate, run, experiments, train  # noqa: F401,I001
from sim.cli.shared import PlainProgress, app, console, err_console, user_errors

_PlainProgress = PlainProgress  # the name tests and older scripts import

__all__ = ["app", "console", "err_console", "main"]


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
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
        if isinstance(exc, user_errors()):
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
