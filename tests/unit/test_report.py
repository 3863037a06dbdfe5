"""trlx.report: report.html from a run folder's files, with its figures, samples table and token view; bad lines
are reported with their line numbers."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from trlx import cli
from trlx.report import first_and_latest, read_rows, samples_table, token_view, token_view_html, write_report


def write_run(run_dir: Path, bad_line: bool = False) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for step in range(1, 21):
        rows.append({"step": step, "reward/mean": -0.2 + 0.05 * step, "kl/mean": 0.01 * step, "policy/entropy": 2.0})
        if step % 10 == 0:
            rows.append({"step": step, "eval/reward_mean": 0.04 * step, "eval/accuracy": 0.5})
    lines = [json.dumps(r) for r in rows]
    if bad_line:
        lines.insert(6, '{"step": 7, "reward/mean": 0.1')  # line 7: cut off mid-write
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    samples = [
        {"step": 0, "prompt": 'The <b>"worst"</b> & dullest', "output": "film I have seen.", "reward": -0.5},
        {"step": 0, "prompt": "Plain start", "output": "meh", "reward": 0.1},
        {"step": 20, "prompt": 'The <b>"worst"</b> & dullest', "output": "film I love <3 forever!", "reward": 0.9},
        {"step": 20, "prompt": "Plain start", "output": "wonderful", "reward": 0.3},
    ]
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return run_dir


def test_report_has_curves_samples_and_summary_whose_files_exist(tmp_path):
    out, problems = write_report(write_run(tmp_path / "run"))
    page = out.read_text()
    assert problems == []
    images = re.findall(r"<img src='([^']+)'", page)
    assert {"report/reward.png", "report/KL_to_the_reference.png", "report/evaluation.png"} <= set(images)
    for image in images:
        data = (tmp_path / "run" / image).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5_000, image
    assert "clip fraction" not in page  # a panel appears only when its metrics were logged
    assert "0.8 (step 20)" in page  # eval/reward_mean latest (0.04 * 20)
    # The samples: HTML-escaped, first vs latest side by side, means (-0.5 + 0.1) / 2 and (0.9 + 0.3) / 2 above.
    assert "The &lt;b&gt;&quot;worst&quot;&lt;/b&gt; &amp; dullest" in page and '<b>"worst"</b>' not in page
    assert "film I love &lt;3 forever!" in page
    assert "-0.200" in page and "+0.600" in page and "higher for 2 of 2" in page
    assert "No token view" in page and "No checkpoint with a trlx_config.yml" in page


def test_malformed_lines_are_skipped_and_reported_with_their_line_number(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", bad_line=True)
    rows, problems = read_rows(run_dir / "metrics.jsonl")
    assert len(rows) == 22 and problems == ["metrics.jsonl line 7: not valid JSON (Expecting ',' delimiter); skipped"]
    assert cli.main(["report", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "trlx report: metrics.jsonl line 7: not valid JSON" in captured.err
    assert f"wrote {run_dir / 'report.html'}" in captured.out
    assert "metrics.jsonl line 7" in (run_dir / "report.html").read_text()
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert "has no metrics.jsonl: not a trlx run folder" in capsys.readouterr().err


def test_token_view_colours_each_token_by_kl_and_advantage():
    view = token_view(
        3, ["a prompt"], [[" good", " <bad>\n"]], [[0.0, 0.5, 9.0]], [[1.0, -2.0, 9.0]], [0.75]
    )  # the third position is padding: cut to the sample's 2 tokens
    assert view["samples"][0]["kl"] == [0.0, 0.5] and view["samples"][0]["advantage"] == [1.0, -2.0]
    page = token_view_html(view)
    assert "Rollout at step 3" in page and "(score +0.750)" in page and "&lt;bad&gt;\u21b5" in page
    # KL 0.5 of max 0.5: full orange; advantage -2 of max 2: full red, +1: half green.
    assert "background:rgba(230,120,0,0.80)" in page and "background:rgba(230,120,0,0.00)" in page
    assert "background:rgba(210,40,40,0.80)" in page and "background:rgba(0,150,60,0.40)" in page
    assert "title='KL +0.5000, advantage -2.0000'" in page


def test_samples_table_without_rewards_still_lists_the_outputs():
    pairs = first_and_latest([{"step": 0, "prompt": "p", "output": "a", "reward": None}])
    page = samples_table(pairs)
    assert "<td>a</td>" in page and "Mean reward" not in page


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Chromium (apt-get install chromium)")
def test_the_report_renders_in_a_headless_browser(tmp_path):
    out, _ = write_report(write_run(tmp_path / "run"))
    shot = tmp_path / "shot.png"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}", "--window-size=1280,2000"]
        + [out.resolve().as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000  # text, tables and figures
