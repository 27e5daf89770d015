"""The notebooks in ``notebooks/`` execute top to bottom (nbclient, in a scratch directory) and are committed
without outputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import DATA_DIR, REPO

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
NEEDS_DATA = {"04-servegen-what-if.ipynb"}


def test_there_are_four_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01-quickstart.ipynb", "02-capacity-planning.ipynb",
                                           "03-policy-comparison.ipynb", "04-servegen-what-if.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_executes(path, tmp_path, monkeypatch):
    if path.name in NEEDS_DATA and not DATA_DIR.exists():
        pytest.skip(f"needs the data directory {DATA_DIR}")
    monkeypatch.setenv("LORASIM_DATA_DIR", str(DATA_DIR))
    work = tmp_path / path.name
    shutil.copy(path, work)
    nb = nbformat.read(work, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert any(Path(tmp_path).glob("*.png")) or path.name in NEEDS_DATA | {"03-policy-comparison.ipynb"}
