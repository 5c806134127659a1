"""Every notebook's code cells run top to bottom (executed in-process, no kernel needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = json.loads(path.read_text())
    ns: dict = {"__name__": "__notebook__"}
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, "notebook has no code"
    for cell in code:
        exec(compile("".join(cell["source"]), f"{path.name}", "exec"), ns)  # noqa: S102
