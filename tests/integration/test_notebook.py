"""examples/sentiment.ipynb runs headlessly, top to bottom, with a tiny model and a two-step budget."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "sentiment.ipynb"


def test_sentiment_notebook_runs_with_a_tiny_budget(tiny_gpt2_path, tmp_path, monkeypatch):
    out = tmp_path / "nb-run"
    # The kernel is a child process and inherits these; the notebook's defaults are the real model and budget.
    monkeypatch.setenv("TRLX_NOTEBOOK_MODEL", str(tiny_gpt2_path))
    monkeypatch.setenv("TRLX_NOTEBOOK_STEPS", "2")
    monkeypatch.setenv("TRLX_NOTEBOOK_ROLLOUTS", "8")
    monkeypatch.setenv("TRLX_NOTEBOOK_NEW_TOKENS", "6")
    monkeypatch.setenv("TRLX_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()

    assert (out / "report" / "reward.png").is_file() and (out / "metrics.jsonl").is_file()
    text = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "eval reward:" in text
    assert any("image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", []))
