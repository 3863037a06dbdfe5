"""Run artifacts: reward/KL plot from metrics.jsonl, before/after samples HTML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trlx.demos.sentiment.report import plot_reward_curve, write_samples_html


def write_metrics(path: Path) -> Path:
    rows = []
    for step in range(20):
        rows.append({"step": step, "reward/mean": -0.2 + 0.05 * step, "kl/mean": 0.01 * step, "time/rollout_s": 1.0})
        if step % 5 == 0:
            rows.append({"step": step, "eval/reward_mean": -0.1 + 0.04 * step})
    rows.append({"event": "done"})  # rows without a step are ignored
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


def test_plot_reward_curve_writes_png(tmp_path: Path) -> None:
    out = plot_reward_curve(write_metrics(tmp_path / "metrics.jsonl"), tmp_path / "plots" / "reward.png")
    assert out == tmp_path / "plots" / "reward.png"
    data = out.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_plot_reward_curve_rejects_metrics_without_curves(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 0, "time/rollout_s": 1.0}) + "\n")
    with pytest.raises(ValueError, match="reward/mean"):
        plot_reward_curve(metrics, tmp_path / "reward.png")
    assert not (tmp_path / "reward.png").exists()


def test_samples_html_escapes_text_and_shows_both_continuations(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": 'The <b>"worst"</b> & dullest',
            "before": "film I have seen.",
            "after": "film I love <3 forever!",
            "reward_before": -0.5,
            "reward_after": 0.9,
        },
        {"prompt": "Plain start", "before": "meh", "after": "wonderful", "reward_before": 0.1, "reward_after": 0.3},
    ]
    page = write_samples_html(rows, tmp_path / "samples.html").read_text()
    assert "The &lt;b&gt;&quot;worst&quot;&lt;/b&gt; &amp; dullest" in page
    assert '<b>"worst"</b>' not in page
    assert "film I have seen." in page and "film I love &lt;3 forever!" in page
    # Summary means: before (-0.5 + 0.1) / 2 = -0.2, after (0.9 + 0.3) / 2 = 0.6.
    assert "-0.200" in page and "+0.600" in page and "+0.800" in page
    assert page.index("-0.200") < page.index("<table>")


def test_samples_html_names_missing_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reward_after"):
        write_samples_html([{"prompt": "p", "before": "b", "after": "a", "reward_before": 0.0}], tmp_path / "s.html")
