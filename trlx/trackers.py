"""Experiment trackers (TensorBoard, Weights & Biases, MLflow) through accelerate's tracker classes.

`train.tracker` names one or several; `make_trackers` builds accelerate's `TensorBoardTracker`, `WandBTracker` and
`MLflowTracker` for `Accelerator(log_with=...)` (building one starts nothing), `start` opens their runs on the
main process with the resolved config as the run's config / params (`accelerator.init_trackers`), and
`trlx.logging.MetricsLogger` sends every metrics row to them (`accelerator.log`) and the eval samples as a table.
metrics.jsonl stays the source of truth and is always written.

- tensorboard: events in `train.logging_dir` (default `<checkpoint_dir>/tensorboard`), samples as text.
- wandb: project `train.project_name`, run `train.run_name`, `train.tags`, `entity_name`, `group_name`; files in
  `<checkpoint_dir>/wandb` (`WANDB_MODE=offline` keeps the run local); samples as a W&B table.
- mlflow: experiment `train.project_name`, run `train.run_name`, tags; the tracking URI from
  `MLFLOW_TRACKING_URI` (a server, `sqlite:///...`, or `file:` with `MLFLOW_ALLOW_FILE_STORE=true`), else a local
  file store in `<checkpoint_dir>/mlruns`; samples as JSON artifacts.
"""

from __future__ import annotations

import json
import os
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from trlx.config import TrainConfig

# tracker -> (the module it needs, the pip extra that installs it)
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
TENSORBOARD_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"  # the default local MLflow store, inside the run folder
WANDB_DIR = "wandb"  # where wandb.init(dir=<checkpoint_dir>) keeps its files
TRACKER_DIRS = (TENSORBOARD_DIR, WANDB_DIR, MLFLOW_DIR)  # what the trackers write into a run folder by default
SAMPLE_COLUMNS = ("prompt", "output", "reward")


def check_installed(names: list[str]) -> None:
    """Fail before anything loads when a tracker's package is missing, naming the extra that installs it."""
    for name in names:
        module, extra = PACKAGES[name]
        if find_spec(module) is None:
            raise ImportError(
                f"train.tracker={name} needs the {module} package, which is not installed: pip install 'trlx[{extra}]'"
                f" (or pip install {module}), or remove {name} from train.tracker"
            )


def tensorboard_dir(train: TrainConfig) -> Path:
    return Path(train.logging_dir or Path(train.checkpoint_dir) / TENSORBOARD_DIR)


def make_trackers(train: TrainConfig) -> list[Any]:
    """accelerate's tracker objects for `train.tracker` (none is started until `start`)."""
    from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker

    names = train.trackers
    check_installed(names)
    trackers: list[Any] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker("", tensorboard_dir(train)))  # run name "": events in the folder
        elif name == "wandb":
            options = {"name": train.run_name, "tags": train.tags or None, "entity": train.entity_name}
            options = {k: v for k, v in {**options, "group": train.group_name}.items() if v is not None}
            trackers.append(WandBTracker(train.project_name, dir=str(train.checkpoint_dir), **options))
        else:
            tags = {tag: "true" for tag in train.tags} or None
            trackers.append(MLflowTracker(train.project_name, run_name=train.run_name, tags=tags))
    return trackers


def flat_config(config: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`{"train": {"seed": 1}}` -> `{"train.seed": 1}`; list and dict values (tags, gen_kwargs, optimizer kwargs)
    as JSON text, since TensorBoard's hparams and MLflow's params take only scalars."""
    out: dict[str, Any] = {}
    for section, fields in config.items():
        for name, value in fields.items():
            out[f"{section}.{name}"] = json.dumps(value) if isinstance(value, (dict, list, tuple)) else value
    return out


def start(accelerator: Any, config: Any) -> None:
    """Open the trackers' runs (main process only), with the resolved config as the run's config / params."""
    if not accelerator.log_with:
        return
    train = config.train
    if "mlflow" in train.trackers:
        import mlflow

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # trlx's default: a file store inside the run folder, which MLflow 3 opens only when asked
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (Path(train.checkpoint_dir).resolve() / MLFLOW_DIR).as_uri()
        mlflow.set_tracking_uri(uri)  # every run: a URI set by an earlier run in this process would win otherwise
    accelerator.init_trackers(train.project_name, config=flat_config(config.to_dict()))


def log_samples(tracker: Any, step: int, rows: list[dict[str, Any]]) -> None:
    """The eval samples of `step` as the tracker's table: a W&B table, MLflow JSON artifact, TensorBoard text."""
    data = [[r.get(c) for c in SAMPLE_COLUMNS] for r in rows]
    if tracker.name == "wandb":
        tracker.log_table("eval/samples", columns=list(SAMPLE_COLUMNS), data=data, step=step)
    elif tracker.name == "mlflow":
        import mlflow

        mlflow.log_dict({"step": step, "samples": rows}, f"eval_samples/step_{step:05d}.json")
    elif tracker.name == "tensorboard":  # a markdown table of the first 16
        lines = [f"| {p!r} | {o!r} | {'' if r is None else format(r, '.3f')} |" for p, o, r in data[:16]]
        text = "| prompt | output | reward |\n|---|---|---|\n" + "\n".join(lines)
        tracker.writer.add_text("eval/samples", text, step)


def finish(accelerator: Any) -> None:
    """Close the runs (not `accelerator.end_training`, which also tears down the process group)."""
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []
