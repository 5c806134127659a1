"""Safe YAML loading into pydantic models, with one-line errors naming file, YAML path and fault.

    hardware_specs/cards/h100-sxm.yaml: memory.bandwidth_tbps: must be > 0 (got -3)
    hardware_specs/cards/h100-sxm.yaml: memroy: unknown key (did you mean 'memory'?)
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

T = TypeVar("T", bound=BaseModel)

MAX_YAML_BYTES = 16 * 1024 * 1024
"""Refuse larger YAML files: a library or scenario file is kilobytes; this bounds memory."""


MAX_MESSAGE_CHARS = 1000


def one_line(text: str) -> str:
    """`text` as one printable line: line breaks and other control or invisible characters
    (a right-to-left override, a NUL) escaped, and cut to MAX_MESSAGE_CHARS."""
    out = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                  for c in str(text))
    return out if len(out) <= MAX_MESSAGE_CHARS else out[:MAX_MESSAGE_CHARS - 3] + "..."


class ConfigError(ValueError):
    """A user-facing configuration error: one line, file and YAML path first. Whatever the
    message holds (user strings with line breaks or control characters), it is made one
    printable line."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(str(message)))


class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader (no arbitrary objects) that rejects duplicate mapping keys; libyaml's C parser
    where PyYAML has it (about 10x faster on the library's tables), the pure-Python one else."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"unhashable key at line {key_node.start_mark.line + 1}",
                key_node.start_mark) from None
        if key in out:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' at line {key_node.start_mark.line + 1}",
                key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=deep)
    return out


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _construct_timestamp(loader: _UniqueKeyLoader, node: yaml.ScalarNode):
    """YAML reads 2024-02-30 as a date: an impossible one is a located YAML error, not a crash."""
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, OverflowError) as exc:
        raise yaml.constructor.ConstructorError(
            None, None, f"'{node.value}' is not a real date ({exc})", node.start_mark) from None


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def _count_nodes(node: yaml.Node, limit: int) -> int:
    """Count nodes (aliases expanded) to refuse 'billion laughs' alias bombs before constructing."""
    count = 0
    stack = [node]
    while stack:
        n = stack.pop()
        count += 1
        if count > limit:
            return count
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack.append(k)
                stack.append(v)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return count


MAX_YAML_NODES = 200_000


def read_yaml(path: Path, display: str | None = None) -> Any:
    """Parse one YAML file safely; errors become `ConfigError` naming the file."""
    where = display or str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read ({exc.strerror or exc})") from None
    if size > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: file is {size} bytes, larger than the {MAX_YAML_BYTES} allowed")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text") from None
    return parse_yaml(text, where)


def parse_yaml(text: str, where: str) -> Any:
    try:
        loader = _UniqueKeyLoader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if _count_nodes(node, MAX_YAML_NODES) > MAX_YAML_NODES:
                raise ConfigError(
                    f"{where}: more than {MAX_YAML_NODES} YAML nodes after expanding aliases")
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        if "nesting depth" in problem:  # libyaml's own depth limit
            raise ConfigError(f"{where}: YAML nested too deeply{line}") from None
        raise ConfigError(f"{where}: malformed YAML{line}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: malformed YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"{where}: YAML nested too deeply") from None
    except ConfigError:
        raise
    except (ValueError, OverflowError) as exc:  # a scalar no Python value holds (5,000 digits)
        raise ConfigError(f"{where}: malformed YAML: {str(exc).splitlines()[0]}") from None


def _fmt_value(v: Any) -> str:
    s = repr(v) if isinstance(v, str) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _models_in(ann: Any) -> list[type[BaseModel]]:
    """The BaseModel classes an annotation holds directly (through Optional, unions and
    Annotated), not inside containers."""
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    origin = typing.get_origin(ann)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(ann)[0])
    if origin is typing.Union or type(ann).__name__ == "UnionType":
        return [m for a in typing.get_args(ann) for m in _models_in(a)]
    return []


def _step(ann: Any, part: Any) -> list[Any]:
    """Annotations reached from `ann` by one step of a data path: a field of a model, a value
    of a mapping (`dict[str, X]`: any key), an item of a list or tuple."""
    import typing

    out: list[Any] = []
    for m in _models_in(ann):
        field = m.model_fields.get(part) if isinstance(part, str) else None
        if field is not None:
            out.append(field.annotation)
    todo = [ann]
    while todo:
        a = todo.pop()
        origin = typing.get_origin(a)
        args = typing.get_args(a)
        if origin is typing.Annotated:
            todo.append(args[0])
        elif origin is typing.Union or type(a).__name__ == "UnionType":
            todo.extend(args)
        elif origin in (dict, typing.Mapping) or (isinstance(origin, type)
                                                   and issubclass(origin, dict)):
            if len(args) == 2:
                out.append(args[1])
        elif origin in (list, tuple, set, frozenset) and isinstance(part, int):
            out.extend(x for x in args if x is not Ellipsis)
    return out


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (sub)models reached by following the data path `loc` from `model`
    (through nested models, mapping values such as `options.<name>`, and list items), for
    suggestions."""
    current: list[Any] = [model]
    for part in loc:
        current = [nxt for ann in current for nxt in _step(ann, part)]
        if not current:
            return []
    names: list[str] = []
    for ann in current:
        for m in _models_in(ann):
            names += [n for n in m.model_fields if n not in names]
    return names


def _data_loc(loc: tuple, data: Any) -> tuple:
    """`loc` without pydantic's union-member tags ('tuple[constrained-float, ...]', 'float'),
    found by walking the input data: a part that is neither a key nor an index there is a tag
    (except a missing key at the end of the path)."""
    out: list = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, (list, tuple)) and isinstance(part, int) and 0 <= part < len(
                node):
            out.append(part)
            node = node[part]
        elif (i == len(loc) - 1 and isinstance(node, dict) and isinstance(part, str)
              and not any(c in part for c in "[]-")):
            out.append(part)  # a missing (or unknown) key of this mapping
        else:
            continue
    return tuple(out)


def format_error(err: dict, model: type[BaseModel], data: Any = None) -> str:
    """One pydantic error -> 'yaml.path: what is wrong (got X)'."""
    loc = tuple(p for p in err.get("loc", ()) if not (isinstance(p, str) and "[" in p and "]" in p
                                                        and p.startswith(("function", "tagged"))))
    if data is not None:
        loc = _data_loc(loc, data)
    path = ""
    for p in loc:
        path += f"[{p}]" if isinstance(p, int) else (f".{p}" if path else str(p))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    got = err.get("input")
    msg: str
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        key = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else (
            f" (known: {', '.join(known)})" if known else "")
        return f"{path}: unknown key{hint}"
    if kind == "missing":
        msg = "required key is missing"
        return f"{path}: {msg}" if path else msg
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<",
              "less_than_equal": "<="}[kind]
        bound = next(iter(ctx.values())) if ctx else "?"
        bound = f"{bound:g}" if isinstance(bound, (int, float)) else bound
        msg = f"must be {op} {bound} (got {_fmt_value(got)})"
    elif kind == "finite_number":
        msg = f"must be a finite number (got {_fmt_value(got)})"
    elif kind in ("float_type", "float_parsing", "int_type", "int_parsing", "int_from_float"):
        want = "an integer" if kind.startswith("int") else "a number"
        msg = f"must be {want} (got {_fmt_value(got)})"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected', '?')} (got {_fmt_value(got)})"
    elif kind == "string_pattern_mismatch":
        msg = f"has the wrong format (got {_fmt_value(got)}, expected pattern {ctx.get('pattern')})"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        msg = f"must be a mapping (got {type(got).__name__})"
    elif kind in ("tuple_type", "list_type"):
        msg = f"must be a list (got {type(got).__name__})"
    elif kind == "value_error":
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
    else:
        msg = f"{err.get('msg', 'invalid')} (got {_fmt_value(got)})"
    return f"{path}: {msg}" if path else msg


def validate(model: type[T], data: Any, where: str) -> T:
    """Validate plain data into `model`; raise `ConfigError` with the first error as one line."""
    if data is None:
        raise ConfigError(f"{where}: file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping at the top level (got {type(data).__name__})")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # an unknown key is most often a misspelling of a "missing" one: report it first
        errors.sort(key=lambda e: e.get("type") != "extra_forbidden")
        lines = [format_error(e, model, data) for e in errors]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        err = ConfigError(f"{where}: {lines[0]}{more}")
        err.details = tuple(one_line(f"{where}: {ln}") for ln in lines)  # `--debug` prints them
        raise err from None
    except RecursionError:
        raise ConfigError(f"{where}: nested too deeply") from None


def load_file(model: type[T], path: Path, display: str | None = None) -> T:
    where = display or str(path)
    return validate(model, read_yaml(path, where), where)
