"""Optimizer and learning-rate schedule from their config sections."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from trlx.config import OptimizerConfig, SchedulerConfig

OPTIMIZER_CLASSES = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
# Optimizers with a fused kernel, used by default: on CPU torch otherwise steps AdamW one tensor at a time
# (~10 small kernels per parameter). For SmolLM2-135M on 2 cores one step took 0.65 s that way and 0.09 s fused.
FUSED = {"adamw", "adam"}


def fusable(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused Adam kernel takes these: floating point, on CPU or CUDA, all on one device type."""
    devices = {p.device.type for p in params}
    return len(devices) == 1 and devices <= {"cpu", "cuda"} and all(p.is_floating_point() for p in params)


def make_optimizer(config: OptimizerConfig, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
    kwargs = dict(config.kwargs)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    trainable = [p for p in params if p.requires_grad]
    if not trainable:
        raise ValueError("the policy has no trainable parameters (check model.num_layers_unfrozen)")
    if config.name in FUSED and not {"fused", "foreach"} & kwargs.keys() and fusable(trainable):
        kwargs["fused"] = True
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
