"""Run outputs a researcher can plot: metrics.jsonl (+ optional TensorBoard), sample tables, a progress bar."""

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
    """Appends one JSON object per row to `metrics.jsonl`; mirrors scalars to TensorBoard when asked.

    Only the main process constructs one (see `trlx.distributed`), so rows are written exactly once.
    """

    def __init__(self, out_dir: str | Path, tensorboard_dir: str | Path | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / "metrics.jsonl"
        self.tensorboard_dir = None if tensorboard_dir is None else Path(tensorboard_dir)
        self._tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("train.tracker=tensorboard needs `pip install tensorboard`") from e
            self._tb = SummaryWriter(log_dir=str(tensorboard_dir))

    def log(self, row: dict[str, Any]) -> None:
        row = {k: _jsonable(v) for k, v in row.items()}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, global_step=row.get("step", 0))

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """Eval samples table: one JSON line per sample in samples.jsonl, tagged with the step."""
        with (self.out_dir / "samples.jsonl").open("a", encoding="utf-8") as f:
            for r in rows:
                row = {"step": step, **{k: _jsonable(v) for k, v in r.items()}}
                f.write(json.dumps(row, ensure_ascii=False) + "\n")  # non-ASCII text stays readable
        if self._tb is not None:
            table = "\n".join(
                f"| {r['prompt']!r} | {r['output']!r} | {'' if r['reward'] is None else format(r['reward'], '.3f')} |"
                for r in rows[:16]
            )
            self._tb.add_text("eval/samples", "| prompt | output | reward |\n|---|---|---|\n" + table, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


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
    out_dir: str | Path, seconds: float, method: str, checkpoint: Path | None, tensorboard_dir: Path | None = None
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
    return "\n".join(lines)
