"""Fuzz the library loader: any mutation of a real card, calibration, model or length-mix file
either loads or fails with a one-line ConfigError naming the file; never another exception."""

from __future__ import annotations

import math
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.config.library import KINDS
from sim.config.loader import ConfigError, load_file

REPO = Path(__file__).resolve().parents[1]
FILES = [(kind, p) for kind, (sub, _) in KINDS.items()
         for p in sorted((REPO / sub).glob("*.yaml"))[:4]] + [
    ("scenario", p) for p in sorted((REPO / "scenarios").glob("*.yaml"))]

NASTY = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.just("2024-13-45"), st.just([]), st.just({}), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.just(10**400), st.just("\u202e\u0000bad"), st.just(-0.0),
)


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


def _mutate(doc, path, action, value):
    parent = doc
    for p in path[:-1]:
        parent = parent[p]
    key = path[-1]
    if action == "delete":
        if isinstance(parent, dict):
            del parent[key]
        else:
            parent.pop(key)
    elif action == "rename" and isinstance(parent, dict):
        parent[f"{key}x"] = parent.pop(key)
    else:
        parent[key] = value


@settings(max_examples=300)
@given(data=st.data())
def test_mutated_library_files_fail_cleanly(tmp_path_factory, data):
    kind, path = data.draw(st.sampled_from(FILES))
    doc = yaml.safe_load(path.read_text())
    paths = list(_paths(doc))
    target = data.draw(st.sampled_from(paths))
    action = data.draw(st.sampled_from(["set", "delete", "rename"]))
    value = data.draw(NASTY)
    _mutate(doc, target, action, value)
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except (yaml.YAMLError, ValueError, OverflowError):
        return
    d = tmp_path_factory.mktemp("fz")
    f = d / path.name
    f.write_text(text, encoding="utf-8")
    shown = f"{KINDS[kind][0]}/{path.name}" if kind in KINDS else str(f)
    try:
        if kind == "scenario":
            from sim.config.scenario import load_scenario

            rec = load_scenario(f)
        else:
            rec = load_file(KINDS[kind][1], f, shown)
    except ConfigError as exc:
        msg = str(exc)
        assert msg.startswith(shown + ":"), msg
        assert "\n" not in msg
        return
    # it loaded: every float in it is finite
    for v in _floats(rec.model_dump()):
        assert math.isfinite(v)


def _floats(obj):
    if isinstance(obj, float):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _floats(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _floats(v)
