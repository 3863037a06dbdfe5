"""Run outputs a researcher can plot: metrics.jsonl (+ experiment trackers), sample tables, a progress bar."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

# DeepSpeed (imported by transformers when installed) announces at import time that it found no GPU: noise for
# a CPU run that never asked for DeepSpeed. Its logger keeps filters added before it is configured.
logging.getLogger("DeepSpeed").addFilter(lambda record: "Setting accelerator to CPU" not in record.getMessage())


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Without transformers' own progress bars ("Loading weights", "Writing model shards"): the run's bar and
    end-of-run summary say what is going on. The previous setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class MetricsLogger:
    """Appends one JSON object per row to `metrics.jsonl` and sends the row's numbers to the experiment trackers
    of `accelerator` (TensorBoard, W&B, MLflow: `trlx.trackers`), the eval samples as their tables.

    Only the main process constructs one (see `trlx.trainers.common.make_logger`), so rows are written once.
    """

    def __init__(self, out_dir: str | Path, accelerator: Any = None, tensorboard_dir: Path | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.accelerator = accelerator
        self.tensorboard_dir = tensorboard_dir  # for the end-of-run summary

    @property
    def trackers(self) -> list[Any]:
        return [] if self.accelerator is None else list(self.accelerator.trackers)

    def log(self, row: dict[str, Any]) -> None:
        row = {k: _jsonable(v) for k, v in row.items()}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.trackers:
            numbers = {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float)) and v is not None}
            self.accelerator.log(numbers, step=int(row.get("step", 0)))

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Eval samples table: one JSON line per sample in samples.jsonl, tagged with the step; and each tracker's
        table (`trlx.trackers.log_samples`)."""
        rows = [{k: _jsonable(v) for k, v in r.items()} for r in rows]
        with (self.out_dir / "samples.jsonl").open("a", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({"step": step, **r}, ensure_ascii=False) + "\n")  # non-ASCII text stays readable
        from trlx.trackers import log_samples

        for tracker in self.trackers:
            log_samples(tracker, step, rows)

    def save_token_view(self, view: dict[str, Any]) -> None:
        """The last rollout's first samples token by token (`trlx.report.token_view`), replacing the previous."""
        from trlx.report import TOKEN_VIEW_FILE

        tmp = self.out_dir / f".{TOKEN_VIEW_FILE}.tmp"
        tmp.write_text(json.dumps(view, ensure_ascii=False), encoding="utf-8")
        tmp.replace(self.out_dir / TOKEN_VIEW_FILE)

    def close(self) -> None:
        if self.accelerator is not None:
            from trlx.trackers import finish

            finish(self.accelerator)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file (metrics.jsonl, samples.jsonl); blank lines are skipped, a malformed line raises
    naming its line number (`trlx.report.read_rows` skips and reports them instead)."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not valid JSON: {error}") from error
    return rows


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is not a TTY but a progress bar is wanted)."""
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    return get_ipython is not None and type(get_ipython()).__name__ == "ZMQInteractiveShell"


def progress_enabled(setting: bool | None) -> bool:
    """Progress bars for people at a terminal or in a notebook; quiet in CI logs and pipes unless asked for."""
    if setting is not None:
        return setting
    return (sys.stderr.isatty() or in_notebook()) and not os.environ.get("CI")


def progress_bar(total: int, initial: int, enabled: bool, desc: str = "PPO") -> tqdm:
    """A bar over optimizer steps; tqdm.auto draws a widget in notebooks (when ipywidgets is installed)."""
    return tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)


def run_summary(
    out_dir: str | Path,
    seconds: float,
    method: str,
    checkpoint: Path | None,
    tensorboard_dir: Path | None = None,
    report: Path | None = None,
) -> str:
    """What a finished run leaves behind and its headline numbers, from metrics.jsonl (the source of truth)."""
    out_dir = Path(out_dir)
    rows = read_metrics(out_dir / "metrics.jsonl") if (out_dir / "metrics.jsonl").is_file() else []
    steps = max((int(r.get("step", 0)) for r in rows), default=0)
    lines = [f"trlx: {method} finished at step {steps} in {seconds / 60:.1f} min"]
    trained = [r for r in rows if "reward/mean" in r]
    if trained:
        last = trained[-1]
        kl = f", kl/mean {last['kl/mean']:.4g}" if last.get("kl/mean") is not None else ""
        lines.append(f"  last rollout     reward/mean {last['reward/mean']:.4g}{kl}")
    losses = [r for r in rows if r.get("loss/total") is not None]
    if losses and not trained:  # offline methods: the training loss is the headline
        first, last = losses[0], losses[-1]
        lines.append(
            f"  loss/total       {first['loss/total']:.4g} (step {first['step']}) -> {last['loss/total']:.4g} "
            f"(step {last['step']})"
        )
    evals = [r for r in rows if r.get("eval/reward_mean") is not None]
    if evals:
        first, last = evals[0], evals[-1]
        best = max(evals, key=lambda r: r["eval/reward_mean"])
        lines.append(
            f"  eval/reward_mean {first['eval/reward_mean']:.4g} (step {first['step']}) -> "
            f"{last['eval/reward_mean']:.4g} (step {last['step']}); best {best['eval/reward_mean']:.4g} "
            f"(step {best['step']})"
        )
    if checkpoint is not None:
        lines.append(f"  checkpoint       {checkpoint}  (AutoModelForCausalLM.from_pretrained loads it)")
    if (out_dir / "best_checkpoint").is_dir():
        lines.append(f"  best checkpoint  {out_dir / 'best_checkpoint'}")
    files = [name for name in ("metrics.jsonl", "samples.jsonl") if (out_dir / name).is_file()]
    if files:
        lines.append(f"  logs             {', '.join(str(out_dir / name) for name in files)}")
    if tensorboard_dir is not None:
        lines.append(f"  tensorboard      tensorboard --logdir {tensorboard_dir}")
    if report is not None:
        lines.append(f"  report           {report}  (curves, samples, token view: open in a browser)")
    return "\n".join(lines)
