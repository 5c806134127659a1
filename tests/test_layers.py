"""The import direction of every subpackage (`sim.LAYERS`, written once): each module imports
only from the layers before its own, lazy imports inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIM = REPO / "sim"


def _layer(py: Path) -> str:
    rel = py.relative_to(SIM)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(py: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(py.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [n for n in out if n.startswith("sim.")]


def test_every_subpackage_is_in_the_layer_order():
    import sim

    subpackages = {p.name for p in SIM.iterdir() if (p / "__init__.py").is_file()}
    assert subpackages - {"_library"} <= set(sim.LAYERS), subpackages - set(sim.LAYERS)


def _backward(mine: str, names: list[str]) -> list[str]:
    import sim

    rank = {name: i for i, name in enumerate(sim.LAYERS)}
    rank["pipeline"] = rank["stages"]  # the two-line alias of sim.stages
    return [n for n in names if (o := n.split(".")[1]) != mine and rank[o] > rank[mine]]


def test_every_module_imports_only_earlier_layers():
    wrong = []
    for py in sorted(SIM.rglob("*.py")):
        if "_library" in py.parts or py == SIM / "__init__.py":
            continue
        wrong += [f"{py.relative_to(REPO)} imports {n}" for n in _backward(_layer(py),
                                                                           _imports(py))]
    assert not wrong, "\n".join(wrong)


def test_the_check_catches_a_backward_import(tmp_path):
    """A report module importing the stages, even lazily inside a function, is refused."""
    f = tmp_path / "m.py"
    f.write_text("def render(res):\n    from sim.stages import run\n    return run\n")
    assert _backward("report", _imports(f)) == ["sim.stages"]
    assert _backward("stages", _imports(f)) == []
