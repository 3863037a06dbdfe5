"""`trlx report RUN_DIR`: one HTML page for any run folder, of any method, from what the run wrote.

    report.html       headline numbers; the training and evaluation curves; the eval samples of the first and the
                      latest evaluation side by side (rewards coloured); the last rollout's first samples token by
                      token, coloured by per-token KL to the reference and by advantage (online methods); the config
    report/*.png      the curves (matplotlib, one panel per group of metrics that the run logged)

Read from metrics.jsonl, samples.jsonl, token_view.json and the latest checkpoint's trlx_config.yml. A malformed
metrics line is skipped and reported with its line number (on the page and by `trlx report`). Written at the end
of every `trlx.train` run too, so each run folder can be looked at in a browser.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORT_FILE = "report.html"
FIGURES_DIR = "report"
TOKEN_VIEW_FILE = "token_view.json"
# Panels of the curves figure: a title and the metrics drawn in it (a panel appears when any of them was logged).
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("reward", ("reward/mean", "eval/reward_mean")),
    ("KL to the reference", ("kl/mean",)),
    ("policy entropy", ("policy/entropy",)),
    ("clip fraction", ("policy/clipfrac", "value/clipfrac")),
    ("value explained variance", ("value/explained_variance",)),
    ("loss", ("loss/total", "sft/nll", "loss/dpo", "loss/ipo", "loss/q", "loss/v", "loss/awac")),
    ("preference pairs", ("rewards/accuracy", "rewards/margin")),
    ("rejection sampling", ("rft/sampled_mean", "rft/threshold_mean")),
)


def read_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The JSON objects of a JSON-lines file, and one problem per malformed line ("metrics.jsonl line 7: ...")."""
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    if not path.is_file():
        return rows, problems
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"{path.name} line {number}: not valid JSON ({error.msg}); skipped")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path.name} line {number}: a JSON {type(row).__name__}, not an object; skipped")
            continue
        rows.append(row)
    return rows, problems


def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows that have both `step` and a finite number under `key`."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if "step" in row and isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(float(row["step"]))
            values.append(float(value))
    return steps, values


def eval_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The evaluation metrics the run logged (eval/reward_mean and every metric_fn key), std columns aside."""
    keys = {k for row in rows for k in row if k.startswith("eval/") and not k.endswith("_std")}
    return sorted(keys, key=lambda k: (k != "eval/reward_mean", k))


def plot_panels(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[tuple[str, Path]]:
    """One PNG per panel with data (PANELS, then the evaluation metrics), written to `out_dir`."""
    # A bare Figure renders to files without pyplot, so a notebook's backend and open figures are left alone.
    from matplotlib.figure import Figure

    panels = [*PANELS, ("evaluation", tuple(k for k in eval_keys(rows) if k != "eval/reward_mean"))]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for title, keys in panels:
        drawn = [(key, series(rows, key)) for key in keys]
        drawn = [(key, s) for key, s in drawn if s[0]]
        if not drawn:
            continue
        fig = Figure(figsize=(6.4, 3.2))
        ax = fig.subplots()
        for key, (steps, values) in drawn:
            style = "o--" if key.startswith("eval/") else "-"
            ax.plot(steps, values, style, label=key, markersize=4)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / f"{title.replace(' ', '_')}.png"
        fig.savefig(path, dpi=100)
        written.append((title, path))
    return written


def first_and_latest(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The eval samples of the first and the latest evaluation, paired prompt by prompt (the order is fixed)."""
    steps = sorted({row["step"] for row in samples if "step" in row})
    if not steps:
        return []
    first = [row for row in samples if row.get("step") == steps[0]]
    last = [row for row in samples if row.get("step") == steps[-1]]
    return [
        {
            "prompt": a.get("prompt", ""),
            "before": a.get("output", ""),
            "after": b.get("output", ""),
            "reward_before": a.get("reward"),
            "reward_after": b.get("reward"),
            "step_before": steps[0],
            "step_after": steps[-1],
        }
        for a, b in zip(first, last)
    ]


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _reward_cell(value: Any) -> str:
    """Green for a positive, red for a negative reward, so a shift is visible at a glance."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "<td class='num'>-</td>"
    colour = "#e6f4ea" if value > 0 else "#fce8e6" if value < 0 else "#ffffff"
    return f"<td class='num' style='background:{colour}'>{value:+.3f}</td>"


def samples_table(pairs: Sequence[dict[str, Any]]) -> str:
    """HTML: prompt, first output and reward, latest output and reward, with the mean rewards above."""
    if not pairs:
        return "<p>No evaluation samples (samples.jsonl is empty or missing).</p>"
    before = [p["reward_before"] for p in pairs if isinstance(p["reward_before"], int | float)]
    after = [p["reward_after"] for p in pairs if isinstance(p["reward_after"], int | float)]
    summary = ""
    if before and after:
        scored = [p for p in pairs if p["reward_before"] is not None and p["reward_after"] is not None]
        improved = sum(p["reward_after"] > p["reward_before"] for p in scored)
        summary = (
            f"<p>{len(pairs)} prompts. Mean reward at step {pairs[0]['step_before']}: <b>{_mean(before):+.3f}</b>, "
            f"at step {pairs[0]['step_after']}: <b>{_mean(after):+.3f}</b> (change {_mean(after) - _mean(before):+.3f});"
            f" higher for {improved} of {len(pairs)}.</p>"
        )
    esc = html.escape
    body = "\n".join(
        f"<tr><td class='num'>{i}</td><td>{esc(str(p['prompt']))}</td><td>{esc(str(p['before']))}</td>"
        f"{_reward_cell(p['reward_before'])}<td>{esc(str(p['after']))}</td>{_reward_cell(p['reward_after'])}</tr>"
        for i, p in enumerate(pairs)
    )
    head = (
        f"<tr><th>#</th><th>prompt</th><th>step {pairs[0]['step_before']}</th><th>reward</th>"
        f"<th>step {pairs[0]['step_after']}</th><th>reward</th></tr>"
    )
    return f"{summary}<table>{head}\n{body}</table>"


def _shade(value: float, scale: float, positive: str, negative: str) -> str:
    """A background whose opacity grows with |value| / scale: `positive` above 0, `negative` below."""
    alpha = 0.0 if scale <= 0 else min(abs(value) / scale, 1.0) * 0.8
    colour = positive if value >= 0 else negative
    return f"rgba({colour},{alpha:.2f})"


def visible(token: str) -> str:
    """A token's text with line breaks and tabs shown as marks, so each sample stays on its rows."""
    return token.replace("\n", "\u21b5").replace("\t", "\u21e5")


def token_view_html(view: dict[str, Any] | None) -> str:
    """Each response token of the last rollout's first samples, coloured twice: by its KL to the reference
    (orange, darker = larger) and by its advantage (green positive, red negative)."""
    if not view or not view.get("samples"):
        return "<p>No token view: it is written by the online methods (ppo, grpo, rloo, reinforce_pp).</p>"
    samples = view["samples"]
    kl_scale = max((abs(k) for s in samples for k in s["kl"]), default=0.0)
    adv_scale = max((abs(a) for s in samples for a in s["advantage"]), default=0.0)
    parts = [
        f"<p>Rollout at step {view.get('step')}: the first {len(samples)} samples. Hover a token for its numbers. "
        f"Colour scales: KL up to {kl_scale:.3g}, |advantage| up to {adv_scale:.3g}.</p>"
    ]
    for i, s in enumerate(samples):
        rows = []
        for name, values, scale, pos, neg in (
            ("KL", s["kl"], kl_scale, "230,120,0", "230,120,0"),
            ("advantage", s["advantage"], adv_scale, "0,150,60", "210,40,40"),
        ):
            spans = "".join(
                f"<span class='tok' style='background:{_shade(v, scale, pos, neg)}' "
                f"title='KL {k:+.4f}, advantage {a:+.4f}'>{html.escape(visible(t))}</span>"
                for t, v, k, a in zip(s["tokens"], values, s["kl"], s["advantage"])
            )
            rows.append(f"<div class='tokrow'><span class='toklabel'>{name}</span>{spans}</div>")
        reward = s.get("score")
        reward_text = "" if reward is None else f" (score {reward:+.3f})"
        parts.append(
            f"<div class='sample'><div class='prompt'>#{i}{reward_text}: {html.escape(str(s.get('prompt', '')))}</div>"
            + "".join(rows)
            + "</div>"
        )
    return "\n".join(parts)


def headline(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The run's headline numbers as (name, value) pairs: steps, first/latest/best evaluation, the last rollout."""
    out = [("steps", str(max((int(r.get("step", 0)) for r in rows), default=0)))]
    evals = [r for r in rows if isinstance(r.get("eval/reward_mean"), int | float)]
    if evals:
        best = max(evals, key=lambda r: r["eval/reward_mean"])
        out.append(("eval/reward_mean, first", f"{evals[0]['eval/reward_mean']:.4g} (step {evals[0]['step']})"))
        out.append(("eval/reward_mean, latest", f"{evals[-1]['eval/reward_mean']:.4g} (step {evals[-1]['step']})"))
        out.append(("eval/reward_mean, best", f"{best['eval/reward_mean']:.4g} (step {best['step']})"))
    trained = [r for r in rows if isinstance(r.get("reward/mean"), int | float)]
    if trained:
        out.append(("reward/mean, last rollout", f"{trained[-1]['reward/mean']:.4g}"))
        if isinstance(trained[-1].get("kl/mean"), int | float):
            out.append(("kl/mean, last rollout", f"{trained[-1]['kl/mean']:.4g}"))
    losses = [r for r in rows if isinstance(r.get("loss/total"), int | float)]
    if losses and not trained:
        out.append(("loss/total", f"{losses[0]['loss/total']:.4g} -> {losses[-1]['loss/total']:.4g}"))
    return out


def run_config(run_dir: Path) -> str | None:
    """The YAML config of the run's latest checkpoint (or best_checkpoint), if there is one."""
    latest = run_dir / "latest"
    candidates = [run_dir / latest.read_text().strip()] if latest.is_file() else []
    candidates += sorted(run_dir.glob("checkpoint_*"), reverse=True) + [run_dir / "best_checkpoint"]
    for folder in candidates:
        if (folder / "trlx_config.yml").is_file():
            return (folder / "trlx_config.yml").read_text(encoding="utf-8")
    return None


STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1em; }
td, th { border: 1px solid #ccc; padding: 6px; vertical-align: top; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; white-space: nowrap; font-family: monospace; }
.figures img { max-width: 48%; margin: 0.5%; border: 1px solid #eee; }
.problems { background: #fff4e5; border: 1px solid #f0b429; padding: 0.5em 1em; }
.sample { margin-bottom: 1em; }
.prompt { font-weight: bold; margin-bottom: 0.2em; }
.tokrow { font-family: monospace; white-space: pre-wrap; line-height: 1.8; }
.toklabel { display: inline-block; width: 6em; color: #666; }
.tok { border-radius: 2px; padding: 0 1px; margin-right: 2px; outline: 1px solid #e4e4e4; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
"""


def write_report(run_dir: str | Path, title: str | None = None) -> tuple[Path, list[str]]:
    """Write `run_dir/report.html` (and its figures in `run_dir/report/`); returns it and the problems found."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{run_dir} has no metrics.jsonl: not a trlx run folder (train.checkpoint_dir)")
    rows, problems = read_rows(run_dir / "metrics.jsonl")
    samples, sample_problems = read_rows(run_dir / "samples.jsonl")
    problems += sample_problems
    view = None
    if (run_dir / TOKEN_VIEW_FILE).is_file():
        view = json.loads((run_dir / TOKEN_VIEW_FILE).read_text(encoding="utf-8"))
    try:
        figures = plot_panels(rows, run_dir / FIGURES_DIR)
        figures_html = "".join(
            f"<img src='{FIGURES_DIR}/{html.escape(path.name)}' alt='{html.escape(name)}'>" for name, path in figures
        )
    except ImportError:
        figures_html = "<p>No curves: matplotlib is not installed (pip install matplotlib).</p>"
    config = run_config(run_dir)
    esc = html.escape
    heading = title or f"trlx run: {run_dir.resolve().name}"
    numbers = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in headline(rows))
    problems_html = ""
    if problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in problems)
        problems_html = f"<div class='problems'><b>Problems reading the run</b><ul>{items}</ul></div>"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{esc(heading)}</title><style>{STYLE}</style></head>
<body>
<h1>{esc(heading)}</h1>
<p>{esc(str(run_dir.resolve()))}</p>
{problems_html}
<h2>Summary</h2>
<table>{numbers}</table>
<h2>Curves</h2>
<div class="figures">{figures_html}</div>
<h2>Evaluation samples: first vs latest</h2>
{samples_table(first_and_latest(samples))}
<h2>Token view: where the policy drifted</h2>
{token_view_html(view)}
<h2>Config</h2>
{f"<pre>{esc(config)}</pre>" if config else "<p>No checkpoint with a trlx_config.yml yet.</p>"}
</body></html>
"""
    out = run_dir / REPORT_FILE
    out.write_text(page, encoding="utf-8")
    return out, problems


def token_view(
    step: int, prompts: Sequence[str], tokens: Sequence[Sequence[str]], kl: Any, advantages: Any, scores: Any
) -> dict[str, Any]:
    """What the report's token view shows of a rollout's first samples: each response token's text, per-token KL
    to the reference and advantage. kl, advantages: (n, R) tensors or lists; tokens: n lists of <= R strings."""
    samples = []
    for i, (prompt, toks) in enumerate(zip(prompts, tokens)):
        n = len(toks)
        samples.append(
            {
                "prompt": prompt,
                "tokens": list(toks),
                "kl": [round(float(x), 6) for x in list(kl[i])[:n]],
                "advantage": [round(float(x), 6) for x in list(advantages[i])[:n]],
                "score": float(scores[i]),
            }
        )
    return {"step": step, "samples": samples}
