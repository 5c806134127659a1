"""Fuzzing: mutated scenarios, library files (cards, models, calibrations, length mixes) and
traces either load or fail with a one-line ConfigError naming the file (and the YAML path where
one applies); never another exception, a hang or a partial output directory.

Every test mutates a VALID input (tests/fuzzing.py has the strategies). The example counts
below are explicit so that `make test` runs over 2,000 cases whatever the hypothesis profile
(`HYPOTHESIS_PROFILE=ci` keeps them, derandomized). `benchmarks/fuzz_large.py` runs the same
strategies with many more examples.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fuzzing import (LIBRARY_SEEDS, REPO, SCENARIO_SEEDS, TINY, check_error, dump, finite_floats,
                     load_kind, mutate, mutate_trace, outcome, text_mutate, trace_text)
from sim.config.library import KINDS, Library
from sim.config.loader import ConfigError

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
SCALE = float(os.environ.get("FLEETSIM_FUZZ_SCALE", "1"))
"""Multiplies every example count below (benchmarks/fuzz_large.py sets it)."""


def n(examples: int) -> int:
    return max(int(examples * SCALE), 1)

_DOCS = {p: yaml.safe_load(p.read_text()) for _, p in LIBRARY_SEEDS}
_SCN_DOCS = {p: yaml.safe_load(p.read_text()) for p in SCENARIO_SEEDS}


@pytest.fixture(scope="module")
def library():
    return Library.default()


def _write(tmp_path_factory, name: str, text: str | bytes) -> Path:
    f = tmp_path_factory.mktemp("fz") / name
    if isinstance(text, bytes):
        f.write_bytes(text)
    else:
        f.write_text(text, encoding="utf-8")
    return f


def _mutated_text(data, doc):
    """The document after 1-3 structural mutations, as YAML text (None if it cannot be dumped)."""
    doc = copy.deepcopy(doc)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        doc, _how = mutate(data, doc)
    return dump(doc)


def _shown(kind: str, seed: Path, f: Path) -> str:
    return f"{KINDS[kind][0]}/{seed.name}" if kind in KINDS else str(f)


# ---------------------------------------------------------------- library files


@settings(max_examples=n(500), suppress_health_check=SLOW_OK)
@given(data=st.data())
def test_mutated_library_files_load_or_fail_in_one_line(tmp_path_factory, data):
    kind, seed = data.draw(st.sampled_from(LIBRARY_SEEDS), label="seed")
    text = _mutated_text(data, _DOCS[seed])
    if text is None:
        return
    f = _write(tmp_path_factory, seed.name, text)
    shown = _shown(kind, seed, f)
    rec = None

    def load():
        nonlocal rec
        rec = load_kind(kind, f, shown)

    if outcome(load, shown) == "ok":  # what loads is finite and re-validates
        assert all(math.isfinite(v) for v in finite_floats(rec.model_dump()))
        type(rec).model_validate(rec.model_dump())


@settings(max_examples=n(300), suppress_health_check=SLOW_OK)
@given(data=st.data())
def test_library_file_text_mutations_load_or_fail_in_one_line(tmp_path_factory, data):
    kind, seed = data.draw(st.sampled_from(LIBRARY_SEEDS), label="seed")
    text, _how = text_mutate(data, seed.read_text())
    f = _write(tmp_path_factory, seed.name, text)
    shown = _shown(kind, seed, f)
    outcome(lambda: load_kind(kind, f, shown), shown)


# ---------------------------------------------------------------- scenarios


@settings(max_examples=n(500), suppress_health_check=SLOW_OK)
@given(data=st.data())
def test_mutated_scenarios_load_or_fail_in_one_line(tmp_path_factory, library, data):
    seed = data.draw(st.sampled_from(SCENARIO_SEEDS), label="seed")
    text = _mutated_text(data, _SCN_DOCS[seed])
    if text is None:
        return
    f = _write(tmp_path_factory, seed.name, text)
    msg = []

    def load():
        load_kind("scenario", f, str(f), library)

    try:
        load()
    except ConfigError as exc:
        msg.append(check_error(exc, str(f)))
    if msg:  # the fault is located: a YAML path, a line, or a whole-file problem
        rest = msg[0][len(str(f)) + 2:]
        assert rest, msg[0]


@settings(max_examples=n(300), suppress_health_check=SLOW_OK)
@given(data=st.data())
def test_scenario_text_mutations_load_or_fail_in_one_line(tmp_path_factory, library, data):
    seed = data.draw(st.sampled_from(SCENARIO_SEEDS), label="seed")
    text, _how = text_mutate(data, seed.read_text())
    f = _write(tmp_path_factory, seed.name, text)
    outcome(lambda: load_kind("scenario", f, str(f), library), str(f))


# ---------------------------------------------------------------- the YAML path is named


def _yaml_path(p: tuple) -> str:
    out = ""
    for k in p:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
    return out


_LEAF_SEEDS = [(k, s) for k, s in LIBRARY_SEEDS] + [("scenario", s) for s in SCENARIO_SEEDS]


@pytest.mark.parametrize("kind,seed", _LEAF_SEEDS, ids=[s.name for _, s in _LEAF_SEEDS])
def test_every_bad_number_is_reported_at_its_yaml_path(tmp_path, library, kind, seed):
    """Each numeric leaf of each seed file set to NaN, -1e300 or a string: the error names the
    leaf's YAML path, or (a cross-field check) an object at most two levels above it."""
    from fuzzing import paths

    doc = yaml.safe_load(seed.read_text())
    f = tmp_path / seed.name
    checked = 0
    for p in paths(doc):
        node = doc
        for k in p:
            node = node[k]
        if isinstance(node, bool) or not isinstance(node, (int, float)):
            continue
        accept = tuple(_yaml_path(p[:k]) for k in range(max(len(p) - 2, 1), len(p) + 1))
        for bad in (math.nan, -1e300, "x"):
            d = copy.deepcopy(doc)
            parent = d
            for k in p[:-1]:
                parent = parent[k]
            parent[p[-1]] = bad
            f.write_text(yaml.safe_dump(d, allow_unicode=True))
            shown = _shown(kind, seed, f)
            try:
                load_kind(kind, f, shown, library)
            except ConfigError as exc:
                rest = check_error(exc, shown)[len(shown) + 2:]
                assert any(rest.startswith(a) and rest[len(a)] in ":.[" for a in accept), (
                    f"{_yaml_path(p)} = {bad!r}: {rest}")
            checked += 1
    assert checked >= 6


# ---------------------------------------------------------------- traces


@settings(max_examples=n(300), suppress_health_check=SLOW_OK)
@given(data=st.data(), fmt=st.sampled_from(["plain", "azure"]))
def test_mutated_traces_load_or_fail_in_one_line(tmp_path_factory, data, fmt):
    from sim.serving.traffic import EmpiricalLengths, TraceTraffic, collect, fit_lengths

    body = trace_text(fmt)
    for _ in range(data.draw(st.integers(1, 2), label="mutations")):
        raw, _how = mutate_trace(data, body)
    f = _write(tmp_path_factory, "trace.csv", raw)
    shown = str(f)
    got = {}

    def replay():
        chunk = data.draw(st.sampled_from([1, 3, 4096]), label="chunk size")
        got["c"] = collect(TraceTraffic(f), chunk_size=chunk if len(raw) < 4000 else 4096)

    if outcome(replay, shown) == "ok":
        c = got["c"]
        assert (c.input_tokens >= 1).all() and (c.output_tokens >= 1).all()
        assert (c.arrival_s >= 0).all() and (c.arrival_s[1:] >= c.arrival_s[:-1]).all()
    outcome(lambda: EmpiricalLengths.from_trace(f), shown)
    outcome(lambda: fit_lengths(f), shown)


# ---------------------------------------------------------------- whole runs, in process

# Leaves whose change keeps the (cached) serving capacity: the fleet and cost layers run for
# real on every mutated value. Capacity-relevant leaves are fuzzed by the load tests above.
@pytest.fixture(scope="module")
def run_cache():
    """One in-process cache for the mutated runs (the capacity rows they share)."""
    from sim.stages import RunCache

    return RunCache()


_RUN_TARGETS = [
    ("horizon_years",), ("start",), ("seed",), ("site",), ("site", "preset"),
    ("site", "power_cap_mw"), ("finance",), ("finance", "discount_rate"),
    ("finance", "server_multiplier"), ("finance", "depreciation_years"),
    ("workloads", "chat-8b", "traffic", "peak_rps"),
    ("workloads", "chat-8b", "traffic", "growth_per_year"),
    ("workloads", "chat-8b", "traffic", "diurnal_amplitude"),
    ("workloads", "chat-8b", "traffic", "weekend_factor"),
    ("workloads", "chat-8b", "traffic", "share_by_year"),
    ("workloads", "chat-8b", "rent"), ("workloads", "chat-8b", "rent", "usd_per_hour"),
    ("workloads", "chat-8b", "rent", "max_cards"),
    ("training", "finetune", "tokens"), ("training", "finetune", "cards"),
    ("training", "finetune", "start"), ("training", "finetune", "every_months"),
    ("training", "finetune", "deadline_days"), ("training", "finetune", "priority"),
    ("cards", "l40s", "price_usd"), ("cards", "l40s", "tdp_w"),
    ("cards", "l40s", "lead_time_weeks"),
    ("options", "h100", "buy", 0, "count"), ("options", "h100", "buy", 0, "at"),
    ("options", "h100", "buy", 0, "price_usd"), ("options", "h100", "buy", 0, "life_years"),
    ("options", "h100", "buy", 0, "lead_time_weeks"), ("options", "h100", "spare_fraction"),
    ("options", "h100", "policy"), ("options", "h100", "software"),
    ("options", "h100+l40s", "buy", 1, "lead_time_weeks"),
    ("options", "h100+l40s", "buy", 1, "count"), ("options", "h100+l40s", "serve_on"),
    ("engine",), ("engine", "plan"), ("engine", "upgrade_lag_months"), ("engine", "pinned"),
    ("engine", "upgrades"), ("options", "h100", "engine"), ("options", "h100", "engine", "plan"),
    ("software_rate_per_year",), ("software_rate_per_year", "cuda"),
]
_RUN_VALUES = st.one_of(
    st.sampled_from([0, 1, -1, 0.5, 1e-9, 1e-300, 2, 7, 10, 11, 1e6, 1e12, 1e300, 10**30,
                     math.nan, math.inf, "2026-02", "2030-12-31", "2024-02-30", "9999-12",
                     "1900", [], [0, 0], [1, 1e9], [5, 2], [3], [1, 2, 3], {}, None, True, "x",
                     "pinned", "explicit", "follow-releases", "trtllm-1.2", "trtllm-9",
                     {"h100-sxm": "trtllm-0.20"}, {"h100-sxm": "vllm-rocm-0.8.3"},
                     [{"at": "2026-06", "engine": "trtllm-1.2"}],
                     [{"at": "2031-06", "engine": "trtllm-1.2"}], {"plan": "pinned"}]),
    st.floats(-1e3, 1e7, allow_nan=False), st.integers(-10, 10**7))


def _set(doc, path, value):
    """Set the value at `path`, creating missing mappings (skipped where a value is in the way)."""
    node = doc
    for p in path[:-1]:
        if isinstance(node, dict) and not isinstance(node.get(p), (dict, list)):
            node[p] = {}
        if isinstance(node, list) and not (isinstance(p, int) and p < len(node)):
            return
        node = node[p]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(path[-1], int)
                                  and path[-1] < len(node)):
        node[path[-1]] = value


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflowing costs: an expected error
@settings(max_examples=n(250), suppress_health_check=SLOW_OK, deadline=None)
@given(data=st.data())
def test_mutated_tiny_scenario_runs_or_fails_in_one_line(tmp_path_factory, library, data,
                                                         monkeypatch_session_cache, run_cache):
    from sim.stages import run as run_stages

    doc = yaml.safe_load(TINY.read_text())
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        _set(doc, data.draw(st.sampled_from(_RUN_TARGETS), label="path"),
             copy.deepcopy(data.draw(_RUN_VALUES, label="value")))
    text = dump(doc)
    if text is None:
        return
    f = _write(tmp_path_factory, "tiny.yaml", text)
    res = {}

    def run():
        res["r"] = run_stages(f, library, cache=run_cache)

    result = outcome(run, str(f))
    event(result)
    if result == "ok":
        r = res["r"]
        for name, o in r.summary["options"].items():
            assert math.isfinite(o["npv_usd"]) and math.isfinite(o["total_cost_usd"]), name
            assert 0 <= o["slo_attainment"] <= 1 + 1e-9, name
        assert r.summary["winner"] is None or r.summary["winner"] in r.summary["options"]


@pytest.fixture(scope="module")
def monkeypatch_session_cache(tmp_path_factory):
    """One warm capacity cache for the run fuzz (the capacity search is not what is fuzzed)."""
    old = os.environ.get("FLEETSIM_CACHE")
    os.environ["FLEETSIM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("FLEETSIM_CACHE", None)
    else:
        os.environ["FLEETSIM_CACHE"] = old


# ---------------------------------------------------------------- through the CLI

_CLI_CASES = [
    ("dup_key", lambda t: t.replace("seed: 3\n", "seed: 3\nseed: 4\n")),
    ("python_tag", lambda t: t.replace("seed: 3", "seed: !!python/object/apply:os.system [ls]")),
    ("bomb", lambda t: t + "".join(
        f"b{i}: &b{i} [" + ", ".join([f"*b{i - 1}" if i else "x"] * 9) + "]\n"
        for i in range(9))),
    ("nan", lambda t: t.replace("peak_rps: 30", "peak_rps: .nan")),
    ("wrong_date", lambda t: t.replace("at: 2026-01, price", "at: 2026-13, price", 1)),
    ("impossible_date", lambda t: t.replace("start: 2026-01-01", "start: 2026-02-30")),
    ("unknown_key", lambda t: t.replace("seed: 3", "sed: 3")),
    ("deep", lambda t: t + "deep: " + "[" * 5000 + "]" * 5000 + "\n"),
    ("unicode_card", lambda t: t.replace("card: l40s, count: 8", "card: \"l40s\\u202e\\n\", "
                                                                 "count: 8")),
    ("huge_count", lambda t: t.replace("count: 16", "count: 100000000000000")),
    ("outside_trace", lambda t: t.replace("lengths: mlperf-llama3.1-8b",
                                          "trace: ../../../../etc/passwd")),
    ("absolute_trace", lambda t: t.replace("lengths: mlperf-llama3.1-8b",
                                           f"trace: {TINY}")),  # exists, absolute
]


@pytest.mark.parametrize("name,edit", _CLI_CASES, ids=[c[0] for c in _CLI_CASES])
def test_cli_run_bad_scenarios_exit_2_in_one_line_without_output(tmp_path, capsys, name, edit,
                                                                  monkeypatch):
    from sim.cli import main

    monkeypatch.setenv("FLEETSIM_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(edit(TINY.read_text()))
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as ex:
        main(["run", str(bad), "--out", str(out)])
    err = capsys.readouterr().err
    assert ex.value.code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}:"), err
    assert "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_subprocess_bad_scenario_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text().replace("horizon_years: 1", "horizon_years: .inf"))
    out = tmp_path / "out"
    env = {**os.environ, "FLEETSIM_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "sim.cli", "run", str(bad), "--out", str(out)],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"error: {bad}: horizon_years: must be a finite number "
                                "(got inf)")
    assert not out.exists()
