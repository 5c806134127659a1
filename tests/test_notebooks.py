"""Every notebook runs top to bottom in a real Jupyter kernel (nbclient + ipykernel) with its
small settings (`FLEETSIM_NOTEBOOK_SMALL=1`); a failing cell fails its test. Notebooks are
stored without outputs.

The kernel is this interpreter (the venv's python, `sys.executable`), whatever `python3`
kernelspecs the machine has: the test writes its own kernelspec named `python3` and starts the
kernel from it. Capacity searches go to a fresh cache folder, so each run starts cold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # a hung cell fails; how fast a notebook runs is not a test's business


@pytest.fixture(scope="session")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec folder holding `python3` -> this interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / "python3"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (fleetsim tests)", "language": "python"}))
    return root


@pytest.fixture(scope="session")
def notebook_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("notebook-cache")


def test_there_are_notebooks():
    names = [p.name for p in NOTEBOOKS]
    for want in ("01-quickstart.ipynb", "02-can-anyone-replace-nvidia.ipynb",
                 "03-calibration-and-fidelity.ipynb", "04-serving-deep-dive.ipynb"):
        assert want in names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_clean(path):
    """No outputs, no execution counts, nbformat 4, the python3 kernel."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "notebook has no code"
    for i, c in enumerate(code):
        assert c.get("outputs") == [] and c.get("execution_count") is None, (
            f"code cell {i} was saved with outputs: clear them before committing")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_dir, notebook_cache, monkeypatch, tmp_path):
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    monkeypatch.setenv("FLEETSIM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("FLEETSIM_CACHE", str(notebook_cache))  # the kernel inherits os.environ
    # connection files and IPython's profile in temporary folders: no writable HOME needed
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name="python3",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = nbclient.NotebookClient(nb, km=km, kernel_name="python3", timeout=CELL_TIMEOUT_S,
                                     startup_timeout=120,
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # a cell that raises fails the test (nbclient's CellExecutionError)
    assert km.kernel_spec.argv[0] == sys.executable
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
