"""Every notebook runs in its reduced mode (PROBINV_NOTEBOOK_SMALL=1), so no notebook can rot."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == ["bayesian_fwi.ipynb", "paper2_table1.ipynb"]


# paper2_table1.ipynb is executed on the quick benchmark results by tests/test_paper2.py
EXECUTED_HERE = [p for p in NOTEBOOKS if p.name == "bayesian_fwi.ipynb"]


@pytest.mark.parametrize("path", EXECUTED_HERE, ids=[p.name for p in EXECUTED_HERE])
def test_notebook_executes(path, monkeypatch):
    monkeypatch.setenv("PROBINV_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # as CI sets it: the notebook's %matplotlib inline must still embed PNGs
    # the kernel must import THIS checkout of probinv (not another installed copy)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "reduced size" in outputs
    assert "of the pixels" in outputs  # the uncertainty-map cell ran to its end
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    # every figure appears in the executed notebook (issue 15: matplotlib.use("Agg") showed none): each cell that
    # draws gets at least one embedded PNG per plotting call, a loop over the four posteriors one per posterior
    figure_cells = [c for c in nb.cells if c.cell_type == "code" and "plotting.plot_" in c.source]
    assert len(figure_cells) >= 5
    for cell in figure_cells:
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        expected = 4 if "for post in (lap, svi, svgd, nuts)" in cell.source else cell.source.count("plotting.plot_")
        assert len(images) >= expected, (cell.source.splitlines()[0], len(images))
        assert all(len(o["data"]["image/png"]) > 1000 for o in images)  # base64 PNGs, not empty placeholders
