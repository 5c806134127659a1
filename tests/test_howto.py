"""The README's how-to examples work as written, the way a newcomer would use them.

Every fenced YAML block of the README that starts with `# file: PATH` is written to PATH in an
empty folder, and the `fleetsim` commands of the how-to's shell blocks are run there verbatim
(as `python -m sim.cli`): the scenario example validates and runs; the example card and its
calibration, in a library folder of their own, are listed, estimated and compared with an H100
in a scenario; the example model is listed with its derived parameter count and estimated.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def howto(title: str) -> str:
    """The text of the README's `### title` subsection of "How to"."""
    start = README.index(f"\n### {title}\n")
    nxt = re.search(r"^##+ ", README[start + 5:], re.M)
    return README[start: start + 5 + nxt.start()] if nxt else README[start:]


def files(section: str) -> dict[str, str]:
    out = {}
    for lang, body in FENCE.findall(section):
        first = body.split("\n", 1)[0]
        if lang == "yaml" and first.startswith("# file: "):
            out[first[len("# file: "):].strip()] = body
    return out


def commands(section: str) -> list[list[str]]:
    """The `fleetsim ...` lines of the section's shell blocks (comments and continuations
    handled), as argument lists."""
    out = []
    for lang, body in FENCE.findall(section):
        if lang != "sh":
            continue
        body = body.replace("\\\n", " ")
        for line in body.splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("fleetsim "):
                out.append(shlex.split(line)[1:])
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("newcomer")


# the `fleetsim` console script's entry point, run by this interpreter
FLEETSIM = [sys.executable, "-c", "from sim.cli import main; main()"]


def fleetsim(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "FLEETSIM_CACHE": str(cwd / ".cache")}
    env.pop("FLEETSIM_LIBRARY", None)
    r = subprocess.run([*FLEETSIM, *args], capture_output=True, text=True, cwd=cwd, env=env,
                       timeout=600)
    assert r.returncode == 0, f"fleetsim {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r


def write(section: str, root: Path) -> dict[str, str]:
    fs = files(section)
    for rel, text in fs.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return fs


def test_the_howto_section_has_every_task():
    for title in ("Write a scenario", "Add a card", "Add a model", "Calibrate on your own GPU",
                  "Run a sweep on a Dask cluster"):
        assert f"\n### {title}\n" in README


def test_write_a_scenario(workdir):
    sec = howto("Write a scenario")
    fs = write(sec, workdir)
    assert list(fs) == ["scenarios/my-first.yaml"]
    cmds = commands(sec)
    assert [c[0] for c in cmds] == ["validate", "run"]
    for c in cmds:
        fleetsim(c, workdir)
    report = (workdir / "out" / "my-first" / "report.md").read_text()
    assert "70B chat, H200 or MI300X" in report and "| mi300x |" in report


def test_add_a_card_and_compare_it(workdir):
    sec = howto("Add a card")
    fs = write(sec, workdir)
    assert set(fs) == {"my-library/hardware_specs/cards/example-x1.yaml",
                       "my-library/hardware_specs/calibration/example-x1.yaml",
                       "compare-x1.yaml"}
    cmds = commands(sec)
    assert [c[0] for c in cmds] == ["cards", "perf", "run"]
    assert all("--library" in c for c in cmds)
    listed = fleetsim(cmds[0], workdir).stdout
    assert "example-x1" in listed and "fictional card" in listed
    perf = fleetsim(cmds[1], workdir).stdout
    assert "offline tokens/s per card" in perf and "assumed" in perf
    fleetsim(cmds[2], workdir)
    report = (workdir / "out" / "compare-x1" / "report.md").read_text()
    assert "| chat-8b | example-x1 |" in report and "| x1 |" in report and "| h100 |" in report
    # without the library folder the card is unknown: one line, exit code 2
    env = {**os.environ, "FLEETSIM_CACHE": str(workdir / ".cache")}
    env.pop("FLEETSIM_LIBRARY", None)
    r = subprocess.run([*FLEETSIM, "validate", "compare-x1.yaml"], capture_output=True,
                       text=True, cwd=workdir, env=env, timeout=120)
    assert r.returncode == 2 and "example-x1" in r.stderr


def test_add_a_model(workdir):
    sec = howto("Add a model")
    fs = write(sec, workdir)
    assert list(fs) == ["my-library/workloads/models/llama-3.2-3b.yaml"]
    cmds = commands(sec)
    assert [c[0] for c in cmds] == ["models", "perf"]
    listed = fleetsim(cmds[0], workdir).stdout
    row = next(line for line in listed.splitlines() if "llama-3.2-3b" in line)
    cells = [c.strip() for c in row.split("│") if c.strip()]
    derived, published = float(cells[7]), float(cells[9])
    assert derived == pytest.approx(published, rel=0.02)
    assert "offline tokens/s per card" in fleetsim(cmds[1], workdir).stdout


def test_calibrate_and_dask_commands_exist():
    """The commands the last two how-tos name are real CLI commands and options."""
    from typer.main import get_command

    import sim.cli  # registers every command

    cli = get_command(sim.cli.app)
    for sec in ("Calibrate on your own GPU", "Run a sweep on a Dask cluster"):
        for c in commands(howto(sec)):
            cmd = cli
            args = list(c)
            while hasattr(cmd, "commands") and args and args[0] in cmd.commands:
                cmd = cmd.commands[args.pop(0)]
            assert not hasattr(cmd, "commands"), f"fleetsim {' '.join(c)}: not a command"
            opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
            for a in args:
                if a.startswith("--"):
                    assert a.split("=")[0] in opts, f"fleetsim {' '.join(c)}: no option {a}"
