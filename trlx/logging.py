"""Run outputs a researcher can plot: metrics.jsonl (+ optional TensorBoard), sample tables, a progress bar."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm


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
            table = "\n".join(f"| {r['prompt']!r} | {r['output']!r} | {r['reward']:.3f} |" for r in rows[:16])
            self._tb.add_text("eval/samples", "| prompt | output | reward |\n|---|---|---|\n" + table, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open() as f:
        return [json.loads(line) for line in f if line.strip()]


def progress_enabled(setting: bool | None) -> bool:
    """Progress bars for people at a terminal; quiet in CI logs and pipes unless asked for."""
    if setting is not None:
        return setting
    return sys.stderr.isatty() and not os.environ.get("CI")


def progress_bar(total: int, initial: int, enabled: bool) -> tqdm:
    return tqdm(total=total, initial=initial, desc="PPO", unit="step", disable=not enabled, dynamic_ncols=True)
