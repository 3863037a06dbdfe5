"""Checks that run before any model is loaded, so a run that cannot work fails in seconds, naming the field.

Field-by-field checks live in `trlx.config` (`__post_init__`); prompts are checked against the length budget
when they are tokenized (`trlx.data.prompts`), also before the model loads. What remains needs more than
one config value or a look at the disk: optimizer/scheduler kwargs and the checkpoint to resume from.
"""

from __future__ import annotations

from pathlib import Path

import torch

from trlx.checkpoint import check_output_dir, check_resumable, resolve_checkpoint
from trlx.config import TRLConfig
from trlx.trainers.optim import make_optimizer, make_scheduler


def preflight(config: TRLConfig, num_processes: int) -> Path | None:
    """Fail early on settings that cannot work; return the checkpoint folder to resume from, if any."""
    # A throwaway one-parameter optimizer: torch validates kwargs at construction, in microseconds.
    make_scheduler(config.scheduler, make_optimizer(config.optimizer, [torch.nn.Parameter(torch.zeros(1))]))
    check_output_dir(config.train)
    if config.train.resume_from_checkpoint is None:
        return None
    path = resolve_checkpoint(config.train.checkpoint_dir, config.train.resume_from_checkpoint)
    check_resumable(path, config, num_processes)
    return path
