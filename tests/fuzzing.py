"""Mutation fuzzing helpers shared by tests/test_fuzz.py and benchmarks/fuzz_large.py.

Each fuzz case starts from a VALID input (a shipped scenario, card, model, calibration or
length-mix file, or a small trace CSV), applies one or more mutations drawn by hypothesis, and
loads the result. The only acceptable outcomes are a valid load or a `ConfigError` whose
message is one line and starts with the file as the user named it; anything else (another
exception type, a hang, a multi-line message) fails the case.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
import signal
import threading
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from sim.config.library import KINDS
from sim.config.loader import ConfigError, load_file

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_scenario.yaml"

LIBRARY_SEEDS: list[tuple[str, Path]] = [
    ("card", REPO / "hardware_specs/cards/h100-sxm.yaml"),
    ("card", REPO / "hardware_specs/cards/mi300x.yaml"),
    ("card", REPO / "hardware_specs/cards/gb200.yaml"),
    ("calibration", REPO / "hardware_specs/calibration/h100-sxm.yaml"),
    ("calibration", REPO / "hardware_specs/calibration/h100-sxm@measured.yaml"),
    ("calibration", REPO / "hardware_specs/calibration/gaudi3.yaml"),
    ("model", REPO / "workloads/models/llama-3.1-8b.yaml"),
    ("model", REPO / "workloads/models/deepseek-v3.yaml"),
    ("model", REPO / "workloads/models/mixtral-8x7b.yaml"),
    ("workload", REPO / "workloads/lengths/mlperf-llama3.1-8b.yaml"),
]
SCENARIO_SEEDS: list[Path] = [TINY, *sorted((REPO / "scenarios").glob("*.yaml"))]

# ---------------------------------------------------------------- values

WRONG_DATES = ["2024-13-45", "2024-02-30", "0000-01-01", "2024-00", "99999-01-01", "tomorrow",
               "2024/01/01", "2024-1-1", "", "1e3"]
UNICODE = ["\u202egnp.exe", "caf\u00e9 \u2615", "\u0000nul", "\U0001f525" * 20, "\ufeffbom",
           "line1\nline2", "\t", "Ω≈ç√∫", "<script>alert(1)</script>", "'\"`$(rm -rf /)`"]
HUGE = [10**400, -10**400, 1e308, -1e308, 2**63, 2**64 + 1, 10**18, 1e-320, 5e-324]

NASTY = st.one_of(
    st.none(), st.booleans(),
    st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 0.0, -0.0, -1, -1.5, 1, 0.5, math.nan, math.inf, -math.inf]),
    st.sampled_from(HUGE),
    st.text(max_size=12),
    st.sampled_from(UNICODE),
    st.sampled_from(WRONG_DATES),
    st.just([]), st.just({}),
    st.lists(st.integers(-5, 5), max_size=3),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)

ACTIONS = ("set", "set", "set", "delete", "rename", "extra", "empty", "enormous", "nest",
           "wrong_type", "unicode", "date", "number")


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a parsed YAML document (mapping keys and list indices), root excluded."""
    out: list[tuple] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.append((*prefix, k))
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.append((*prefix, i))
            out.extend(paths(v, (*prefix, i)))
    return out


def _parent(doc, path):
    node = doc
    for p in path[:-1]:
        node = node[p]
    return node


def _nest(value, depth: int, as_list: bool):
    for _ in range(depth):
        value = [value] if as_list else {"x": value}
    return value


def mutate(data, doc: Any) -> tuple[Any, str]:
    """One structural mutation of `doc` (in place where possible); returns (doc, description).
    Drawn values are copied: a strategy's constant ([] or {}) must never be mutated later."""
    data = _Copying(data)
    ps = paths(doc)
    if not ps:
        return data.draw(NASTY), "replaced the whole document"
    path = data.draw(st.sampled_from(ps), label="path")
    action = data.draw(st.sampled_from(ACTIONS), label="action")
    parent = _parent(doc, path)
    key = path[-1]
    old = parent[key]
    if action == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif action == "rename" and isinstance(parent, dict):
        parent[data.draw(st.sampled_from([f"{key}x", str(key)[:-1] or "k", str(key).upper(),
                                          f" {key}"]))] = parent.pop(key)
    elif action == "extra":
        target = old if isinstance(old, dict) else parent
        if isinstance(target, dict):
            target[data.draw(st.sampled_from(["unexpected", "sourcex", "__class__",
                                              "\u00fcnicode", "1"]))] = data.draw(NASTY)
        else:
            target.append(data.draw(NASTY))
    elif action == "empty":
        parent[key] = data.draw(st.sampled_from([[], {}, "", None]))
    elif action == "enormous":
        n = data.draw(st.sampled_from([200, 3000]))
        item = old[0] if isinstance(old, list) and old else old
        parent[key] = [item] * n if not isinstance(item, (dict, list)) else [item] * min(n, 300)
    elif action == "nest":
        depth = data.draw(st.sampled_from([3, 40, 400]))
        parent[key] = _nest(old, depth, data.draw(st.booleans()))
    elif action == "wrong_type":
        parent[key] = data.draw(st.sampled_from(
            [[old], {"value": old}, str(old), True, None, 1]))
    elif action == "unicode":
        parent[key] = data.draw(st.sampled_from(UNICODE))
    elif action == "date":
        parent[key] = data.draw(st.sampled_from(WRONG_DATES))
    elif action == "number":
        parent[key] = data.draw(st.sampled_from(
            [0, -1, 0.0, -0.0, 1e-300, math.nan, math.inf, -math.inf, *HUGE]))
    else:
        parent[key] = data.draw(NASTY)
    return doc, f"{action} {'.'.join(map(str, path))}"


class _Copying:
    """`data.draw` that returns a deep copy of what was drawn."""

    def __init__(self, data):
        self._data = data

    def draw(self, strategy, label=None):
        return copy.deepcopy(self._data.draw(strategy, label=label))


def dump(doc: Any) -> str | None:
    try:
        return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False, width=1000)
    except (yaml.YAMLError, ValueError, OverflowError, RecursionError):
        return None


# ---------------------------------------------------------------- text-level mutations

BOMB = ("lol0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 9)))

TEXT_ACTIONS = ("duplicate", "bomb", "bomb_inline", "alias", "python_tag", "deep_text",
                "truncate", "tab", "garbage", "bom", "merge_key", "anchor_cycle", "doc_marker",
                "crlf", "long_line", "binary_tag", "set_tag", "control")


def text_mutate(data, text: str) -> tuple[str, str]:
    """A mutation of the YAML text itself (what cannot be expressed on the parsed data)."""
    action = data.draw(st.sampled_from(TEXT_ACTIONS), label="text action")
    lines = text.splitlines(keepends=True) or ["a: 1\n"]
    top = [i for i, ln in enumerate(lines) if re.match(r"^[A-Za-z_]", ln)] or [0]
    i = data.draw(st.sampled_from(top))
    if action == "duplicate":  # a top-level key given twice
        j = i + 1
        while j < len(lines) and lines[j][:1] in (" ", "-", "#", "\n"):
            j += 1
        text = "".join(lines[:j] + lines[i:j] + lines[j:])
    elif action == "bomb":
        text = BOMB + text
    elif action == "bomb_inline":  # the bomb as a value under an existing key
        key = lines[i].split(":")[0]
        body = "".join(f"  {ln}" for ln in BOMB.splitlines(keepends=True))
        text = "".join(lines[:i]) + f"{key}:\n{body}" + "".join(
            ln for k, ln in enumerate(lines[i + 1:]) if not ln.startswith(" "))
    elif action == "alias":  # an alias to an undefined anchor
        text = text.replace(lines[i], lines[i].split(":")[0] + ": *nowhere\n", 1)
    elif action == "python_tag":
        tag = data.draw(st.sampled_from([
            "!!python/object/apply:os.system ['echo pwned']", "!!python/name:os.system",
            "!!python/object:sim.pipeline.Result {}", "!!python/module:os",
            "!<tag:yaml.org,2002:python/object/new:os.system> [ls]"]))
        text = text.replace(lines[i], lines[i].split(":")[0] + f": {tag}\n", 1)
    elif action == "deep_text":
        depth = data.draw(st.sampled_from([60, 300, 1200]))
        text = text + "deep: " + "[" * depth + "]" * depth + "\n"
    elif action == "truncate":
        cut = data.draw(st.integers(0, max(len(text) - 1, 0)))
        text = text[:cut]
    elif action == "tab":
        text = text.replace("  ", "\t", 1)
    elif action == "garbage":
        pos = data.draw(st.integers(0, len(text)))
        junk = data.draw(st.sampled_from(["{", "}", "[", "]", ":", "- ", "&", "*", "!", "%",
                                          "|", ">", "'", '"', "@", "`", "\x00", "\x85", "#"]))
        text = text[:pos] + junk + text[pos:]
    elif action == "bom":
        text = "\ufeff" + text
    elif action == "merge_key":
        text = "base: &b {x: 1}\n" + text.replace(lines[i], lines[i].split(":")[0]
                                                   + ": {<<: *b, y: 2}\n", 1)
    elif action == "anchor_cycle":  # a recursive structure (anchor used inside itself)
        text = text + "cyc: &c [1, *c]\n"
    elif action == "doc_marker":
        text = text + "---\nsecond: document\n"
    elif action == "crlf":
        text = text.replace("\n", "\r\n")
    elif action == "long_line":
        text = text.replace(lines[i], lines[i].split(":")[0] + ": " + "x" * 200_000 + "\n", 1)
    elif action == "binary_tag":
        text = text.replace(lines[i], lines[i].split(":")[0] + ": !!binary aGVsbG8=\n", 1)
    elif action == "set_tag":
        text = text.replace(lines[i], lines[i].split(":")[0] + ": !!set {a, b}\n", 1)
    elif action == "control":
        text = text.replace(lines[i], lines[i].rstrip("\n") + " \x07\x1b[31m\n", 1)
    return text, f"text:{action}"


# ---------------------------------------------------------------- loading and checking


@contextlib.contextmanager
def no_hang(seconds: float = 20.0):
    """Fail (TimeoutError) instead of hanging: a SIGALRM timer, main thread only (elsewhere,
    and on platforms without it, a no-op)."""
    main = threading.current_thread() is threading.main_thread()
    if not hasattr(signal, "setitimer") or not main:
        yield
        return

    def fire(signum, frame):
        raise TimeoutError(f"fuzz case still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def load_kind(kind: str, path: Path, shown: str, library=None):
    """Load `path` as `kind` the way fleetsim does (scenarios resolve their ids too)."""
    if kind == "scenario":
        from sim.config.scenario import load_scenario

        return load_scenario(path, library)
    return load_file(KINDS[kind][1], path, shown)


def check_error(exc: ConfigError, shown: str) -> str:
    """The fuzz contract for an error: one line, naming the file first."""
    msg = str(exc)
    assert "\n" not in msg and "\r" not in msg, f"multi-line error: {msg!r}"
    assert msg.startswith(shown + ":"), f"error does not name the file {shown!r}: {msg!r}"
    assert len(msg) < 2000, f"error is {len(msg)} characters long"
    return msg


def outcome(fn, shown: str, timeout_s: float = 20.0) -> str:
    """'ok' when `fn()` succeeds, 'error' for a well-formed ConfigError; anything else raises
    (a case running past `timeout_s` raises TimeoutError)."""
    try:
        with no_hang(timeout_s):
            fn()
    except ConfigError as exc:
        check_error(exc, shown)
        return "error"
    return "ok"


def finite_floats(obj) -> list[float]:
    if isinstance(obj, float):
        return [obj]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in finite_floats(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in finite_floats(v)]
    return []


# ---------------------------------------------------------------- traces

PLAIN_ROWS = [(0.0, 120, 40), (0.5, 300, 12), (0.5, 8, 1), (1.25, 2048, 256), (3.0, 77, 7),
              (3.5, 1000, 100), (4.0, 15, 300), (9.75, 512, 64)]
AZURE_ROWS = [("2023-11-16 18:15:46.6805900", 374, 44), ("2023-11-16 18:15:50.9951690", 396, 109),
              ("2023-11-16 18:15:51.0", 879, 3), ("2023-11-16 18:16:02.123", 1, 1),
              ("2023-11-16 18:17:00", 4096, 512)]


def trace_text(fmt: str) -> list[list[str]]:
    if fmt == "plain":
        return [["arrival_s", "input_tokens", "output_tokens"]] + [
            [repr(a), str(i), str(o)] for a, i, o in PLAIN_ROWS]
    return [["TIMESTAMP", "ContextTokens", "GeneratedTokens"]] + [
        [a, str(i), str(o)] for a, i, o in AZURE_ROWS]


CELL_VALUES = ["", "-1", "0", "1.5", "nan", "NaN", "inf", "-inf", "1e30", "1e400", "abc",
               "\u00e9", "2023-13-45 25:61:61", "2023-11-16T18:15:46Z", "  7  ", "0x10", "1_000",
               "9" * 40, "1,2", '"5"', "true", "-0", "0.0", "+3", "1e-300",
               "2023-11-16 18:15:46.6805900", "1970-01-01", "\x00", "1000-01-01",
               "2300-01-01 00:00:00", "2023-11-16 18:15:46+05:00"]

TRACE_ACTIONS = ("cell", "cell", "cell", "drop_col", "extra_col", "swap_rows", "header",
                 "blank", "dup_row", "delete_row", "bom", "crlf", "truncate", "invalid_utf8",
                 "empty", "header_only", "quote", "reorder_cols", "many_rows", "long_field")


def mutate_trace(data, rows: list[list[str]]) -> tuple[bytes, str]:
    rows = [list(r) for r in rows]
    action = data.draw(st.sampled_from(TRACE_ACTIONS), label="trace action")
    r = data.draw(st.integers(1, len(rows) - 1))
    c = data.draw(st.integers(0, 2))
    newline = "\n"
    prefix = b""
    if action == "cell":
        rows[r][c] = data.draw(st.sampled_from(CELL_VALUES) | st.text(max_size=6))
    elif action == "drop_col":
        rows[r] = rows[r][:2]
    elif action == "extra_col":
        rows[r].append("42")
    elif action == "swap_rows" and r + 1 < len(rows):
        rows[r], rows[r + 1] = rows[r + 1], rows[r]
    elif action == "header":
        rows[0][c] = data.draw(st.sampled_from(["", "time", "arrival", "TIMESTAMP ",
                                                "input_tokens", "\u00e9"]))
    elif action == "blank":
        rows.insert(r, [])
    elif action == "dup_row":
        rows.insert(r, list(rows[r]))
    elif action == "delete_row":
        rows.pop(r)
    elif action == "bom":
        prefix = b"\xef\xbb\xbf"
    elif action == "crlf":
        newline = "\r\n"
    elif action == "empty":
        return b"", f"trace:{action}"
    elif action == "header_only":
        rows = rows[:1]
    elif action == "quote":
        rows[r][c] = '"' + rows[r][c]
    elif action == "reorder_cols":
        rows = [[x[2], x[0], x[1]] if len(x) == 3 else x for x in rows]
    elif action == "many_rows":
        rows = rows[:1] + rows[1:] * data.draw(st.sampled_from([50, 500]))
        if rows[0][0] == "arrival_s":  # keep times sorted
            rows = rows[:1] + [[str(k * 0.01), x[1], x[2]] for k, x in enumerate(rows[1:])]
    elif action == "long_field":
        rows[r][c] = "7" * 100_000
    body = (newline.join(",".join(x) for x in rows) + newline).encode("utf-8")
    if action == "truncate":
        body = body[:data.draw(st.integers(0, len(body)))]
    if action == "invalid_utf8":
        pos = data.draw(st.integers(0, len(body)))
        body = body[:pos] + b"\xff\xfe\xc3" + body[pos:]
    return prefix + body, f"trace:{action} row {r} col {c}"
