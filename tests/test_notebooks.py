"""Every notebook in notebooks/ runs top to bottom without an error, in under 2 minutes (executed into a temporary copy)."""

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NOTEBOOK_TIMEOUT_S = 120  # issue 16: each notebook runs in class in under 2 minutes


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    deadline = time.monotonic() + NOTEBOOK_TIMEOUT_S
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",  # the kernel of the interpreter running the tests (the venv's)
        # the budget is per notebook, so each cell gets what the cells before it left over
        timeout_func=lambda cell: max(1, int(deadline - time.monotonic())),
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},  # cwd = notebooks/, as in Jupyter
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    nbformat.write(notebook, tmp_path / path.name)
    errors = [out for cell in notebook.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
