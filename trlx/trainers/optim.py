"""Optimizer and learning-rate schedule from their config sections."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from trlx.config import OptimizerConfig, SchedulerConfig

OPTIMIZER_CLASSES = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}


def make_optimizer(config: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    kwargs = dict(config.kwargs)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("the policy has no trainable parameters (check model.num_layers_unfrozen)")
    try:
        return OPTIMIZER_CLASSES[config.name](trainable, **kwargs)
    except TypeError as e:
        raise ValueError(f"optimizer.kwargs {config.kwargs} do not fit torch {config.name}: {e}") from e


def make_scheduler(config: SchedulerConfig, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
    kwargs = dict(config.kwargs)
    try:
        if config.name == "constant":
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
        if config.name == "linear":
            return torch.optim.lr_scheduler.LinearLR(optimizer, **kwargs)
        kwargs.setdefault("T_max", 10_000)
        kwargs["T_max"] = int(kwargs["T_max"])
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, **kwargs)
    except TypeError as e:
        raise ValueError(f"scheduler.kwargs {config.kwargs} do not fit torch {config.name}: {e}") from e
