"""The quickstart notebook runs in a real Jupyter kernel, shows its figures inline, and leaves the
kernel's matplotlib backend as the notebook set it (toymodels never picks one)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the notebook test needs the test extra: nbformat")
nbclient = pytest.importorskip("nbclient", reason="the notebook test needs the test extra: nbclient, ipykernel")

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


def test_quickstart_runs_and_shows_its_figures_inline(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the 2-D feature figure and the fine-tuning figure should render inline"
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "backend:" in text and "inline" in text.split("backend:")[-1], text[-200:]
    assert "per-unit" in text                      # the fine-tuning table printed
    assert (tmp_path / "runs" / "quickstart" / "summary.json").is_file()
