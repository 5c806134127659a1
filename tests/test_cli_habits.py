"""What a newcomer trips over on the command line (issue 18, items 3 and 4): layouts that cannot
run are refused in one line (exit 2), a TP across servers only when asked for and then flagged,
`--debug` anywhere, id columns whole in 80 columns, "did you mean" for nested YAML keys, progress
lines when the output is not a terminal, and `fleetsim run` ending on its report.html."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# throughput-only SLOs take the offline optimum: a run in about two seconds
FAST = """\
name: Fast CLI test
start: 2026-01-01
horizon_years: 1
seed: 3
capacity_requests: 300
site: {preset: us-colo}
workloads:
  chat-8b:
    model: llama-3.1-8b
    precision: fp8
    traffic: {peak_rps: 30, growth_per_year: 0.5, diurnal_amplitude: 0.3,
              lengths: mlperf-llama3.1-8b}
    rent: {card: h100-sxm, usd_per_hour: 2.5, max_cards: 8}
options:
  h100:
    buy: [{card: h100-sxm, count: 16, at: 2026-01, price_usd: 30000}]
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def run(*args: str, columns: int = 250, cache_dir: Path | None = None,
        ) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(columns)}
    env.pop("FLEETSIM_LIBRARY", None)
    if cache_dir is not None:
        env["FLEETSIM_CACHE"] = str(cache_dir)
    return subprocess.run([sys.executable, "-m", "sim.cli", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=120, env=env)


def one_error(r: subprocess.CompletedProcess) -> str:
    """The single stderr line of a refused command (exit 2, nothing on stdout)."""
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


# ------------------------------------------------------------- item 3: refuse what cannot run

def test_perf_layout_that_does_not_fit_is_exit_2_naming_memory():
    line = one_error(run("perf", "--card", "l4", "--model", "llama-3.1-405b", "--tp", "8",
                         "--isl", "1000", "--osl", "100"))
    assert "llama-3.1-405b on l4" in line and "at TP 8" in line
    assert re.search(r"weights [\d.]+ GB \+ activations [\d.]+ GB exceed the [\d.]+ GB usable",
                     line), line
    assert "smallest TP that fits is 64" in line


def test_perf_without_tp_does_not_pick_tp_across_servers():
    line = one_error(run("perf", "--card", "l4", "--model", "llama-3.1-405b", "--isl", "1000",
                         "--osl", "100", "--json"))
    assert "within one 8-card server" in line and "--allow-scale-out-tp" in line


def test_perf_tp_beyond_scale_up_domain_is_refused_unless_asked():
    line = one_error(run("perf", "--card", "h100-sxm", "--model", "llama-2-70b", "--tp", "16",
                         "--isl", "1000", "--osl", "100"))
    assert "TP 16 on h100-sxm goes beyond the 8-card scale-up domain" in line
    assert "--allow-scale-out-tp" in line


def test_perf_scale_out_tp_when_asked_is_flagged():
    r = run("perf", "--card", "l4", "--model", "llama-3.1-405b", "--isl", "1000", "--osl", "100",
            "--allow-scale-out-tp", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["fits"] is True and out["tp"] == 64 and out["tp_limit"] == 8
    assert out["scale_out_tp"] is True
    warn = r.stderr.strip().splitlines()
    assert len(warn) == 1 and warn[0].startswith("warning: TP 64 on l4 goes beyond"), r.stderr


def test_perf_within_the_domain_is_not_flagged():
    r = run("perf", "--card", "h100-sxm", "--model", "llama-2-70b", "--precision", "fp8",
            "--isl", "1000", "--osl", "100", "--json")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = json.loads(r.stdout)
    assert out["scale_out_tp"] is False and out["tp"] <= out["tp_limit"] == 8


@pytest.mark.parametrize("args,needle", [
    (["serve", "--card", "l4", "--model", "llama-3.1-405b", "--rate", "1"],
     "the smallest TP that fits is 64, across servers (--allow-scale-out-tp)"),
    (["serve", "--card", "l4", "--model", "llama-3.1-405b", "--rate", "1", "--tp", "8"],
     "does not fit at TP 8 (weights"),
    (["serve", "--card", "h100-sxm", "--model", "llama-3.1-8b", "--rate", "1", "--tp", "16"],
     "TP 16 on h100-sxm goes beyond"),
    (["capacity", "--card", "l4", "--model", "llama-3.1-405b"],
     "the smallest TP that fits is 64, across servers"),
    (["capacity", "--card", "h100-sxm", "--model", "llama-3.1-8b", "--tp", "16"],
     "TP 16 on h100-sxm goes beyond"),
], ids=["serve-auto", "serve-misfit", "serve-tp16", "capacity-auto", "capacity-tp16"])
def test_serve_and_capacity_refuse_the_same(args, needle, cache):
    line = one_error(run(*args, cache_dir=cache))
    assert needle in line, line


def test_serve_scale_out_tp_when_asked_is_flagged(cache):
    r = run("serve", "--card", "h100-sxm", "--model", "llama-3.1-8b", "--precision", "fp8",
            "--rate", "1", "--requests", "10", "--tp", "16", "--allow-scale-out-tp", "--json",
            cache_dir=cache)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["tp"] == 16 and out["scale_out_tp"] is True and out["tp_limit"] == 8
    assert r.stderr.startswith("warning: TP 16 on h100-sxm goes beyond"), r.stderr


# ------------------------------------------------------------------------ item 4: CLI habits

def test_make_demo_and_readme_say_how_to_activate_the_venv():
    make = (REPO / "Makefile").read_text()
    demo = make.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "$(VENV)/bin/activate" in demo and "@echo" in demo
    assert ". .venv/bin/activate" in (REPO / "README.md").read_text()


def test_debug_after_the_subcommand_is_accepted():
    r = run("cards", "--debug")
    assert r.returncode == 0 and "h100-sxm" in r.stdout, r.stderr
    r = run("perf", "--card", "nope", "--isl", "10", "--osl", "10", "--debug")
    assert r.returncode != 0 and "No such option" not in r.stderr
    assert "Traceback" in r.stderr and "unknown card 'nope'" in r.stderr


@pytest.mark.parametrize("command,kind", [("cards", "card"), ("models", "model"),
                                          ("engines", "engine")])
def test_tables_in_80_columns_keep_every_id_whole(command, kind, lib):
    r = run(command, columns=80)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    first = {ln.split("│")[1].strip() for ln in lines if ln.startswith("│")}
    assert set(lib.ids(kind)) <= first, set(lib.ids(kind)) - first
    assert "…" not in r.stdout
    if "left out at 80 columns" in r.stdout:  # what did not fit is named
        wide = run(command, columns=250).stdout
        note = r.stdout.split("left out at 80 columns:", 1)[1].split(";")[0]
        for word in note.replace(",", " ").split():
            assert word in wide, word


def _bad_scenario(tmp_path: Path) -> Path:
    bad = tmp_path / "bad.yaml"
    bad.write_text(FAST.replace("max_cards: 8", "max_crads: 8")
                   .replace("count: 16", "cuont: 16"))
    return bad


def test_unknown_nested_key_says_did_you_mean(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text(FAST.replace("count: 16", "cuont: 16"))
    line = one_error(run("validate", str(one)))
    assert "options.h100.buy[0].cuont: unknown key (did you mean 'count'?)" in line


def test_and_n_more_is_listed_with_debug(tmp_path):
    bad = _bad_scenario(tmp_path)
    line = one_error(run("validate", str(bad)))
    assert "(and 2 more); --debug lists them all" in line
    assert "did you mean" in line
    r = run("validate", str(bad), "--debug")
    also = [ln for ln in r.stderr.splitlines() if ln.startswith("also: ")]
    assert len(also) == 2, r.stderr
    text = "\n".join(also + [line])
    assert "workloads.chat-8b.rent.max_crads: unknown key (did you mean 'max_cards'?)" in text
    assert "options.h100.buy[0].cuont: unknown key (did you mean 'count'?)" in text
    assert "options.h100.buy[0].count: required key is missing" in text


def test_monte_carlo_progress_lines_when_not_a_terminal(tmp_path, cache):
    scn = tmp_path / "mc.yaml"
    scn.write_text(FAST + "uncertain:\n  workloads.chat-8b.traffic.growth_per_year: "
                          "{triangular: [0.2, 0.5, 1.0]}\n")
    r = run("mc", str(scn), "--draws", "20", "--out", str(tmp_path / "mc"), cache_dir=cache)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert all(re.match(r"\[ *[\d.]+ s\] Monte Carlo: \d+/20 draws done", ln) for ln in lines), \
        r.stderr
    assert any(re.search(r"/20 draws done, ETA \d+ s$", ln) for ln in lines), r.stderr
    assert lines[-1].endswith("20/20 draws done")


def test_plain_stage_lines_wait_out_the_quiet_seconds(capsys):
    import time

    from sim.cli import _PlainProgress

    p = _PlainProgress("run", quiet_s=0.2)
    p.stage("loading scenario")
    p.stage("capacity chat-8b on h100-sxm")
    assert capsys.readouterr().err == ""  # a run that fails now stays one line
    time.sleep(0.5)
    p.stage("writing results")
    p.close()
    err = capsys.readouterr().err.splitlines()
    assert [ln.split("] ", 1)[1] for ln in err] == ["capacity chat-8b on h100-sxm",
                                                    "writing results"]


def test_run_ends_on_the_report_html(tmp_path, cache):
    scn = tmp_path / "fast.yaml"
    scn.write_text(FAST)
    out = tmp_path / "out"
    r = run("run", str(scn), "--out", str(out), cache_dir=cache)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last == f"report: {out / 'report.html'}"
    assert (out / "report.html").is_file()
    assert "winner: h100" in r.stdout
