"""notebooks/compare_methods.ipynb runs top to bottom on a tiny real sweep and shows the
report tables, the counted FLOPs and every Pareto plot; the committed file carries no outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from test_report_sweep import tiny_sweep

from recsys.report.plots import COSTS

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_methods.ipynb"


def test_committed_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)


@pytest.mark.slow
def test_notebook_shows_table_and_plots(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("RECSYS_SWEEP_DIR", str(tiny_sweep(tmp_path_factory)))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    markdown = "".join(o.data.get("text/markdown", "") for o in outputs if "data" in o)
    assert "| method | seeds | HR@10 | NDCG@10 |" in markdown and "| iisan_intra | 2 |" in markdown
    assert "| method | train GFLOPs/seq |" in markdown and "## Failed runs (2)" in markdown
    frames = "".join(o.data.get("text/html", "") for o in outputs if "data" in o)
    assert "train_flops_per_sequence" in frames and "memory_source" in frames
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(COSTS)
