"""Scenario values addressed by their YAML path, e.g. `cards.mi300x.price_usd` or
`options.h200+mi300x.buy[1].count`, and `with_overrides` to vary a scenario in code.

Keys may themselves contain dots (model ids such as `llama-3.1-70b`): at each mapping the
longest run of path segments that names an existing key wins. A path must name a value the
scenario has (given in the file or a default), with two exceptions that create it: an override
of a library record (`cards.<card>.price_usd`, `cards.<card>.memory.bandwidth_tbps`,
`models.<model>.num_layers`, with the source "set by experiment") and an entry of the
`efficiency` map (`efficiency.<card>`). Anything else is a one-line `ConfigError`.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from typing import Any

from sim.config.library import Library
from sim.config.loader import ConfigError, validate
from sim.config.scenario import Scenario, check_references

EXPERIMENT_SOURCE = "set by experiment (sweep, Monte Carlo draw or flip-point search)"
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    """`a.b[2].c` -> ['a', 'b', 2, 'c'] (indices as ints)."""
    if not path or path.startswith(".") or path.endswith(".") or ".." in path:
        raise ValueError(f"'{path}' is not a YAML path")
    out: list[str | int] = []
    pos = 0
    for m in _SEGMENT.finditer(path):
        gap = path[pos:m.start()]
        if gap not in ("", "."):
            raise ValueError(f"'{path}' is not a YAML path")
        out.append(m.group(1) if m.group(1) is not None else int(m.group(2)))
        pos = m.end()
    if pos != len(path) or not out or not isinstance(out[0], str):
        raise ValueError(f"'{path}' is not a YAML path")
    return out


def _longest_key(node: dict, segs: list[str | int], i: int) -> tuple[str, int]:
    """Greedy: the longest dotted run of plain segments from `i` that is a key of `node` (else
    segment `i` alone), and the index after it."""
    key, j = str(segs[i]), i + 1
    k = i + 1
    while k < len(segs) and isinstance(segs[k], str):
        cand = ".".join(str(s) for s in segs[i:k + 1])
        if cand in node:
            key, j = cand, k + 1
        k += 1
    return key, j


def _walk(doc: Any, segs: list[str | int], path: str, create: bool):
    """The container and key holding `path`'s value (keys joined greedily across dots)."""
    node = doc
    i = 0
    trail: list[str] = []
    while True:
        seg = segs[i]
        if isinstance(seg, int):
            if not isinstance(node, list):
                raise KeyError(f"{'.'.join(trail) or 'the scenario'} is not a list")
            if seg >= len(node):
                raise KeyError(f"{'.'.join(trail)} has {len(node)} entries, no [{seg}]")
            key: str | int = seg
            j = i + 1
        else:
            if not isinstance(node, dict):
                raise KeyError(f"{'.'.join(trail) or 'the scenario'} has no key '{seg}'")
            key, j = _longest_key(node, segs, i)
            if key not in node:
                if j == len(segs) and create:
                    return node, key
                close = difflib.get_close_matches(str(key), [str(x) for x in node], n=1,
                                                  cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else (
                    f" (known: {', '.join(map(str, node))})" if node else "")
                raise KeyError(f"{'.'.join(trail) or 'the scenario'} has no key '{key}'{hint}")
        trail.append(f"[{key}]" if isinstance(key, int) else str(key))
        if j == len(segs):
            return node, key
        node = node[key]
        i = j


def get_value(scn: Scenario, path: str) -> Any:
    """The value at `path` in the scenario (defaults included)."""
    doc = scn.model_dump(mode="json")
    try:
        node, key = _walk(doc, parse_path(path), path, create=False)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{path}: unknown YAML path: {exc.args[0]}") from None
    return node[key]


def with_overrides(scn: Scenario, overrides: Mapping[str, Any], library: Library | None = None,
                   where: str = "overrides") -> Scenario:
    """A copy of `scn` with each YAML path set to its value, validated again (one-line
    `ConfigError` naming `where` and the path on an unknown path or an invalid value)."""
    if not overrides:
        return scn
    full = scn.model_dump(mode="json")
    doc = copy.deepcopy(scn.model_dump(mode="json", exclude_unset=True))
    for path, value in overrides.items():
        try:
            segs = parse_path(path)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc.args[0]}") from None
        _set(full, doc, segs, path, value, where)
    new = validate(Scenario, doc, where)
    if library is not None:
        check_references(new, library, where)
    return new


CREATABLE_MAPS = ("efficiency", "software_rate_per_year")
"""Scenario maps whose keys a path may create (`efficiency.<card>`, `software_rate_per_year.<stack>`)."""


def _creatable_segs(segs: list) -> bool:
    top = segs[0]
    return (top in CREATABLE_MAPS and len(segs) == 2) or (
        top in ("cards", "models") and len(segs) >= 3
        and all(isinstance(x, str) for x in segs[1:]))


def creatable(path: str) -> bool:
    """Whether `path` may name a value the scenario does not hold yet (an override of a library
    record, a per-card efficiency, a per-stack software rate)."""
    try:
        return _creatable_segs(parse_path(path))
    except ValueError:
        return False


def _set(full: dict, doc: dict, segs: list, path: str, value: Any, where: str) -> None:
    top = segs[0]
    if top in ("cards", "models"):
        # ids may hold dots (llama-3.1-8b): a segment starting with a digit continues the id
        # (no field name starts with one)
        while len(segs) > 2 and isinstance(segs[2], str) and segs[2][:1].isdigit():
            segs = [segs[0], f"{segs[1]}.{segs[2]}", *segs[3:]]
    # an override of a library record may be created at any depth: `cards.<id>.price_usd`,
    # `cards.<id>.memory.bandwidth_tbps`, `models.<id>.num_layers` (checked against the record
    # when the scenario is validated)
    creatable = _creatable_segs(segs)
    if creatable and top in ("cards", "models"):
        node = full[top].setdefault(segs[1], {"source": EXPERIMENT_SOURCE})
        for seg in segs[2:-1]:
            if not isinstance(node.get(seg), dict):
                node[seg] = {}
            node = node[seg]
    try:
        node, key = _walk(full, segs, path, create=creatable)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"{where}: {path}: unknown YAML path: {exc.args[0]}") from None
    current = node.get(key) if isinstance(node, dict) else node[key]
    section = isinstance(current, dict) or (isinstance(current, list) and any(
        isinstance(x, (dict, list)) for x in current))
    if section and not isinstance(value, (dict, list)):
        raise ConfigError(f"{where}: {path}: names a section, not a value")
    # the same route through the sparse (as-written) document, creating what defaults hide
    resolved = _resolved_keys(full, segs)
    d: Any = doc
    for k, nxt in zip(resolved[:-1], resolved[1:]):
        if isinstance(d, list):
            d = d[k]
            continue
        if k not in d:
            d[k] = [] if isinstance(nxt, int) else {}
            if top in ("cards", "models") and d is doc.get(top):
                d[k]["source"] = EXPERIMENT_SOURCE
        d = d[k]
    d[resolved[-1]] = value
    node[key] = value


def _resolved_keys(full: dict, segs: list) -> list[str | int]:
    """The path's keys as they appear in the document (dotted keys joined)."""
    out: list[str | int] = []
    node: Any = full
    i = 0
    while i < len(segs):
        seg = segs[i]
        if isinstance(seg, int) or not isinstance(node, dict):
            out.append(seg)
            node = node[seg] if isinstance(node, list) and isinstance(seg, int) else None
            i += 1
            continue
        key, j = _longest_key(node, segs, i)
        out.append(key)
        node = node.get(key)
        i = j
    return out


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def override_spec(spec, overrides: Mapping[str, Any]):
    """A library record (card, model) with values replaced by path (`memory.bandwidth_tbps`,
    or nested mappings), validated again. Errors read `<path>: <what is wrong>`."""
    full = spec.model_dump(mode="json")
    doc = copy.deepcopy(spec.model_dump(mode="json", exclude_unset=True))
    for path, value in _flatten(dict(overrides)).items():
        try:
            segs = parse_path(path)
        except ValueError as exc:
            raise ConfigError(f"{exc.args[0]}") from None
        try:
            _set(full, doc, segs, path, value, "")
        except ConfigError as exc:
            msg = str(exc).removeprefix(": ")
            raise ConfigError(msg.replace(f"{path}: unknown YAML path: ", f"{path}: no such "
                                          "library field: ").replace(
                "the scenario has no key", "the record has no key")) from None
    try:
        return validate(type(spec), doc, "")
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix(": ")) from None


def scenario_library(scn: Scenario, library: Library) -> Library:
    """The library as the scenario sees it: records with the scenario's `cards:` / `models:`
    overrides applied (scenario-level keys such as `price_usd` are read by the run's stages)."""
    replaced = {}
    for kind, section in (("card", scn.cards), ("model", scn.models)):
        for ident, ov in section.items():
            rest = ov.fields
            if rest:
                spec = library.card(ident) if kind == "card" else library.model(ident)
                try:
                    replaced[(kind, ident)] = override_spec(spec, rest)
                except ConfigError as exc:
                    raise ConfigError(f"{kind}s.{ident}.{exc}") from None
    if not replaced:
        return library
    view = Library(library.roots)
    view._cache.update(library._cache)
    view._cache.update(replaced)
    return view


def spec_overrides(scn: Scenario) -> dict:
    """The library-record overrides of a scenario, as plain data (for cache keys)."""
    out = {}
    for section_name, section in (("cards", scn.cards), ("models", scn.models)):
        for ident, ov in sorted(section.items()):
            if ov.fields:
                out[f"{section_name}.{ident}"] = dict(ov.fields)
    return out
