"""Artifacts of a sentiment run: the reward/KL curve as a PNG and before/after samples as an HTML table."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REWARD_KEY = "reward/mean"
KL_KEY = "kl/mean"
EVAL_REWARD_KEY = "eval/reward_mean"
SAMPLE_FIELDS = ("prompt", "before", "after", "reward_before", "reward_after")


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that have both `step` and a finite number under `key`."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if "step" in row and isinstance(value, int | float) and math.isfinite(value):
            steps.append(float(row["step"]))
            values.append(float(value))
    return steps, values


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; blank lines are skipped, a malformed line raises with its line number."""
    rows = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
    return rows


def plot_reward_curve(metrics_jsonl: Path, out_png: Path, title: str = "PPO sentiment fine-tuning") -> Path:
    """Plot `reward/mean` (with `eval/reward_mean` points) above `kl/mean`, both against `step`; returns `out_png`."""
    import matplotlib

    # Agg renders to files without a display, which is what servers, CI and notebooks-as-scripts have.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_jsonl(metrics_jsonl)
    reward, kl, eval_reward = (_series(rows, key) for key in (REWARD_KEY, KL_KEY, EVAL_REWARD_KEY))
    if not (reward[0] or kl[0] or eval_reward[0]):
        raise ValueError(
            f"{metrics_jsonl} has no rows with 'step' and any of {REWARD_KEY}, {KL_KEY}, {EVAL_REWARD_KEY}"
        )

    fig, (ax_reward, ax_kl) = plt.subplots(2, 1, sharex=True, figsize=(7, 5.5))
    try:
        ax_reward.plot(*reward, label="train " + REWARD_KEY, color="tab:blue")
        ax_reward.plot(*eval_reward, "o--", label=EVAL_REWARD_KEY, color="tab:orange")
        ax_reward.set_ylabel("reward")
        ax_reward.grid(alpha=0.3)
        ax_reward.legend(loc="best")
        ax_kl.plot(*kl, color="tab:red", label=KL_KEY)
        ax_kl.set_ylabel("KL(policy || reference)")
        ax_kl.set_xlabel("step")
        ax_kl.grid(alpha=0.3)
        ax_kl.legend(loc="best")
        fig.suptitle(title)
        fig.tight_layout()
        out_png = Path(out_png)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=110)
    finally:
        # Figures live in pyplot's global registry until closed; a long run making many plots would leak them.
        plt.close(fig)
    return out_png


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def write_samples_html(
    rows: list[dict[str, Any]], out_html: Path, title: str = "Samples before and after PPO"
) -> Path:
    """Side-by-side table of continuations before and after training, with mean rewards on top.

    Each row needs `prompt`, `before`, `after`, `reward_before`, `reward_after`. All text is HTML-escaped,
    since model output can contain `<`, `&` or quotes.
    """
    for i, row in enumerate(rows):
        missing = [field for field in SAMPLE_FIELDS if field not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks {missing}; every row needs {list(SAMPLE_FIELDS)}")
    before = [float(row["reward_before"]) for row in rows]
    after = [float(row["reward_after"]) for row in rows]
    improved = sum(a > b for a, b in zip(after, before, strict=True))

    def cell(text: Any) -> str:
        return f"<td>{html.escape(str(text))}</td>"

    def reward_cell(value: float) -> str:
        # Green for positive, red for negative reward, so the shift is visible at a glance.
        color = "#e6f4ea" if value > 0 else "#fce8e6" if value < 0 else "#ffffff"
        return f'<td class="num" style="background:{color}">{value:+.3f}</td>'

    body = "\n".join(
        f"<tr><td class='num'>{i}</td>{cell(row['prompt'])}{cell(row['before'])}{reward_cell(before[i])}"
        f"{cell(row['after'])}{reward_cell(after[i])}</tr>"
        for i, row in enumerate(rows)
    )
    summary = (
        f"<p>{len(rows)} prompts. Mean reward before: <b>{_mean(before):+.3f}</b>, after: <b>{_mean(after):+.3f}</b> "
        f"(change {_mean(after) - _mean(before):+.3f}); higher after training for {improved} of {len(rows)}.</p>"
    )
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border: 1px solid #ccc; padding: 6px; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; white-space: nowrap; font-family: monospace; }}
</style></head>
<body>
<h1>{html.escape(title)}</h1>
{summary}
<table>
<tr><th>#</th><th>prompt</th><th>before</th><th>reward</th><th>after</th><th>reward</th></tr>
{body}
</table>
</body></html>
"""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    return out_html
