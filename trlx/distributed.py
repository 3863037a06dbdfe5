"""The thin layer over accelerate: global statistics, seeding, main-process-only work."""

from __future__ import annotations

import random

import numpy as np
import torch
from accelerate import Accelerator
from torch import Tensor

from trlx.algorithms.stats import masked_sums, moments_from_sums


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def global_sum(accelerator: Accelerator, value: Tensor) -> Tensor:
    """Sum a tensor over every process (identity on one process)."""
    if accelerator.num_processes == 1:
        return value
    return accelerator.reduce(value.to(accelerator.device), reduction="sum").cpu()


def global_moments(
    accelerator: Accelerator, x: Tensor, mask: Tensor, unbiased: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Mean, variance and count of the masked entries of `x` across all processes."""
    sums = torch.stack(masked_sums(x, mask))
    total, total_sq, count = global_sum(accelerator, sums)
    mean, var = moments_from_sums(total, total_sq, count, unbiased=unbiased)
    return mean, var, count


def global_mean(accelerator: Accelerator, x: Tensor) -> float:
    """Mean of every element of `x` across all processes."""
    sums = torch.tensor([x.double().sum().item(), float(x.numel())], dtype=torch.float64)
    total, count = global_sum(accelerator, sums).tolist()
    return total / max(count, 1.0)
