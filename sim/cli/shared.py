"""What every `fleetsim` command shares: the typer app and its `calibrate` group, the
consoles, the common options, the library loader, user errors, tables that fit the
terminal, progress (plain timed lines when not a terminal) and engine facts."""

from __future__ import annotations

import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table


app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="fleetsim: accelerator fleet TCO simulator.")
console = Console()
err_console = Console(stderr=True)

STATE = {"debug": False, "library": []}

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


calibrate_app = typer.Typer(help="Calibration: fit measured microbenchmarks into calibration.")
app.add_typer(calibrate_app, name="calibrate")


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False) -> None:
    STATE["debug"] = debug


def load_library(library: list[Path] | None):
    from sim.config.library import Library

    return Library.default(library or [])


def card_setup(card: str, model: str, precision: str, engine: str | None, as_of,
               library: list[Path] | None):
    """(library, model record, hardware view, precision) of a serving command, the precision
    checked against the card (an unknown card, model or engine is a located error)."""
    from sim.perf.hardware import Hardware
    from sim.perf.precision import Precision

    lib = load_library(library)
    spec = lib.model(model)
    hw = Hardware.load(card, lib, engine=engine, as_of=as_of)
    prec = Precision.preset(precision)
    hw.check_precision(prec)
    return lib, spec, hw, prec


def user_errors() -> tuple[type[BaseException], ...]:
    from sim.config.loader import ConfigError
    from sim.perf.memory import LayoutError
    from sim.perf.precision import PrecisionError
    from sim.serving.simulate import ServingError

    from sim.perf.training import TrainingLayoutError

    return (ConfigError, LayoutError, PrecisionError, ServingError, TrainingLayoutError)


def print_table(t: Table, ids: tuple[str, ...] = ("id",)) -> None:
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


class PlainProgress:
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


def refuse_misfit(est) -> None:
    """A layout that does not fit is a user error (exit 2), named in one line."""
    from sim.perf.memory import LayoutError

    if not est.fits:
        raise LayoutError(f"{est.model} on {est.card} ({est.precision}): {est.reason}")


def warn(line: str | None) -> None:
    if line:
        print(line, file=sys.stderr, flush=True)


def engine_fields(hw) -> dict:
    """`engine`, `engine_version`, `engine_date` of the engine a card runs, for --json."""
    e = hw.engine
    return {"engine": hw.engine_id, "engine_version": f"{e.name} {e.version}" if e else None,
            "engine_date": e.release_date if e else None}


RUN_QUIET_S = 3.0
"""`fleetsim run` prints no stage line in its first seconds (not a terminal): a bad scenario
stays one line."""


@contextmanager
def run_progress():
    """A `say(stage)` callback: a spinner with the elapsed time on a terminal, plain timed lines
    on stderr otherwise (a log, CI, a pipe)."""
    if not err_console.is_terminal:
        plain = PlainProgress("run", quiet_s=RUN_QUIET_S)
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


def opt_text(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"
