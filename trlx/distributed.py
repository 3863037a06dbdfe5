"""The thin layer over accelerate: the Accelerator, prompt sharding, global statistics, seeding, and what
ZeRO-3 / FSDP need (synced generation, gathered weights)."""

from __future__ import annotations

import contextlib
import math
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs, gather_object
from torch import Tensor

from trlx.algorithms.stats import masked_sums, moments_from_sums
from trlx.config import ConfigError, TrainConfig
from trlx.memory import compact_freed_memory, retain_freed_memory
from trlx.trackers import make_trackers


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


def global_max(accelerator: Accelerator, value: Tensor) -> float:
    """The largest element of a scalar tensor over every process."""
    if accelerator.num_processes == 1:
        return float(value)
    return float(accelerator.reduce(value.reshape(1).float().to(accelerator.device), reduction="max").cpu())


def make_accelerator(train: TrainConfig) -> Accelerator:
    """The run's Accelerator: precision and accumulation from the config, the engine from `accelerate launch`,
    the experiment trackers of `train.tracker` (`trlx.trackers`).

    DDP, DeepSpeed and FSDP are chosen by the launcher (its config file or flags); nothing here names one.
    """
    handlers, cpu = [], False
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if not torch.cuda.is_available() and world_size > 1:
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            # DeepSpeed runs on CPU, but accelerate only opens a process group for it with a device backend
            # (nccl, ...); naming gloo lets ZeRO run on CPU-only hosts, which is how the tests exercise it.
            handlers.append(InitProcessGroupKwargs(backend="gloo"))
        else:
            # Under torchrun without GPUs accelerate would otherwise start N independent single-process runs.
            cpu = True
    accelerator = Accelerator(
        cpu=cpu,
        mixed_precision=train.mixed_precision,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        # Every process runs train.total_steps optimizer steps on its own rollouts, so the LR schedule advances
        # once per step; accelerate's default steps it num_processes times, which suits a sharded dataloader.
        step_scheduler_with_optimizer=False,
        kwargs_handlers=handlers,
        log_with=make_trackers(train) or None,  # started on the main process by trlx.trainers.common.make_logger
    )
    if train.retain_cpu_memory and accelerator.device.type == "cpu":
        compact_freed_memory() if train.retain_cpu_memory == "compact" else retain_freed_memory()
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:
        ds = plugin.deepspeed_config
        # Fill the values accelerate cannot infer without a DataLoader; explicit numbers in the file win.
        gas = ds.get("gradient_accumulation_steps", "auto")
        gas = accelerator.gradient_accumulation_steps if gas == "auto" else int(gas)
        if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
            ds["train_micro_batch_size_per_gpu"] = max(train.batch_size // gas, 1)
        if ds.get("gradient_clipping", "auto") == "auto":
            ds["gradient_clipping"] = train.max_grad_norm or 0.0
    if accelerator.num_processes != world_size:
        raise RuntimeError(
            f"launched as {world_size} processes (WORLD_SIZE) but accelerate formed a group of "
            f"{accelerator.num_processes}; check the launcher's distributed settings"
        )
    check_accumulation(train.batch_size, accelerator.gradient_accumulation_steps)
    return accelerator


def check_accumulation(batch_size: int, steps: int) -> None:
    """The launcher (ACCELERATE_GRADIENT_ACCUMULATION_STEPS, a DeepSpeed file) may override the config's value."""
    if batch_size % steps != 0:
        raise ConfigError(
            f"train.batch_size ({batch_size}) must be divisible by the gradient accumulation steps ({steps}, from "
            "train.gradient_accumulation_steps or the accelerate/DeepSpeed config)"
        )


def shard(items: Sequence[Any], accelerator: Accelerator, name: str) -> list[Any]:
    """This process's share of `items` (every num_processes-th, from its rank); each process gets at least one."""
    world, rank = accelerator.num_processes, accelerator.process_index
    if len(items) < world:
        raise ValueError(
            f"{name}: {len(items)} prompt(s) for {world} processes; every process generates from its own share, "
            f"so pass at least {world} prompts or launch fewer processes"
        )
    return list(items[rank::world])


def shard_padded(n: int, accelerator: Accelerator) -> tuple[list[int], list[bool]]:
    """Indices of this process's share of n items, padded so every process gets ceil(n / num_processes).

    Equal shares make every process run the same number of generate/forward calls, which ZeRO-3 and FSDP need
    (their forward gathers parameters collectively). Padding repeats item 0; the flags (False for padding) let
    metrics drop the duplicates. Returns (indices, keep).
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    indices = list(range(rank, n, world))
    size = math.ceil(n / world)
    keep = [True] * len(indices) + [False] * (size - len(indices))
    return indices + [0] * (size - len(indices)), keep


def gather_lists(accelerator: Accelerator, items: list[Any]) -> list[Any]:
    """Concatenate a picklable list from every process, in rank order (the list itself on one process)."""
    if accelerator.num_processes == 1:
        return list(items)
    return [item for part in gather_object([items]) for item in part]


def mean_over_processes(accelerator: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Average per-process scalars (losses, clip fractions) in one all-reduce, so the logged row is global."""
    if accelerator.num_processes == 1:
        return metrics
    keys = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    means = (global_sum(accelerator, values) / accelerator.num_processes).tolist()
    return dict(zip(keys, means))


def global_explained_variance(accelerator: Accelerator, values: Tensor, returns: Tensor, mask: Tensor) -> float:
    """1 - Var[returns - values] / Var[returns] over the valid tokens of every process."""
    _, var_residual, _ = global_moments(accelerator, returns - values, mask, unbiased=False)
    _, var_returns, _ = global_moments(accelerator, returns, mask, unbiased=False)
    return (1.0 - var_residual / var_returns).item()


# ---------------------------------------------------------------------------------------------- sharded params
def zero_stage(accelerator: Accelerator) -> int:
    plugin = accelerator.state.deepspeed_plugin
    return int(plugin.zero_stage or 0) if plugin is not None else 0


def engine_owns_model(accelerator: Accelerator) -> bool:
    """True under DeepSpeed or FSDP: the engine wraps, casts or shards the parameters and owns the optimizer state
    (partitioned over the processes)."""
    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)


def unwrap(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """`accelerator.unwrap_model(model)`, without importing DeepSpeed on a run that does not use it.

    accelerate imports DeepSpeed, when installed, to recognise its engine in any unwrap; with it come mlflow,
    pandas and pyarrow: ~140 MB of resident memory and seconds of start-up. Without DeepSpeed the wrappers are
    DDP, DataParallel and FSDP.
    """
    if accelerator.distributed_type == DistributedType.DEEPSPEED or hasattr(model, "_orig_mod"):
        # DeepSpeed's engine, or torch.compile's wrapper, which accelerate keeps
        return accelerator.unwrap_model(model)
    wrappers: tuple[type, ...] = (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FullyShardedDataParallel

        wrappers += (FullyShardedDataParallel,)
    while isinstance(model, wrappers):
        model = model.module
    return model


def params_sharded(accelerator: Accelerator) -> bool:
    """True when no process holds the whole model (ZeRO-3, FSDP): forwards and saves are then collective."""
    return zero_stage(accelerator) == 3 or accelerator.distributed_type == DistributedType.FSDP


@contextlib.contextmanager
def full_params_for_generation(accelerator: Accelerator, model: torch.nn.Module) -> Iterator[bool]:
    """Make the parameters a bare decode loop on the inner LM needs available; yield whether the loop must run in
    step with the other processes (stop only when all have finished).

    ZeRO-3 gathers each layer's shards on the fly in its forward hooks, so every process must keep calling
    forward until all have finished sampling. FSDP also gathers per wrapped block, but the root module's own
    parameters (embeddings, head) are only gathered by the root's forward, which generating from the inner LM
    skips, so they are gathered here (without the nested blocks).
    """
    if zero_stage(accelerator) == 3:
        yield True
    elif accelerator.distributed_type == DistributedType.FSDP:
        if hasattr(model, "unshard"):  # FSDP2 (fully_shard)
            model.unshard()
            try:
                yield True
            finally:
                model.reshard()
        else:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            with FSDP.summon_full_params(model, writeback=False, recurse=False):
                yield True
    else:
        yield False


@contextlib.contextmanager
def loading_full_weights(accelerator: Accelerator) -> Iterator[None]:
    """Load models whole, even under ZeRO-3 (whose zero.Init would partition them while loading): the reference
    is copied from the loaded weights before the engine partitions the policy.

    transformers applies zero.Init whenever accelerate has registered a ZeRO-3 config (whatever
    zero3_init_flag says), so the registration is lifted for the duration and restored after.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None or zero_stage(accelerator) != 3:
        yield
        return
    from transformers.integrations import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        plugin.set_deepspeed_weakref()


def gathered_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, Tensor] | None:
    """The full state dict of a ZeRO-3/FSDP-sharded model (collective: call on every process); None otherwise.

    Keys are those of the unwrapped model; only the main process gets tensors.
    """
    if not params_sharded(accelerator):
        return None
    return accelerator.get_state_dict(model)


def fast_cpu_kernels(train: TrainConfig, accelerator: Accelerator, *modules: Any) -> int:
    """`train.onednn_linear` and `train.fused_blocks` for `modules` on a CPU run without DeepSpeed/FSDP (which
    wrap or shard the parameters themselves); returns how many modules were switched."""
    from trlx.models.fused import use_fused_blocks
    from trlx.models.onednn import onednn_preferred, use_onednn_linears

    if accelerator.device.type != "cpu" or engine_owns_model(accelerator):
        return 0
    onednn = onednn_preferred() if train.onednn_linear == "auto" else train.onednn_linear
    # Linears first: the fused MLP runs its down projection on the kernel its layer was given.
    switched = use_onednn_linears(*modules) if onednn else 0
    return switched + (use_fused_blocks(*modules) if train.fused_blocks else 0)
