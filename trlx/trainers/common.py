"""What every trainer shares, online (PPO, GRPO, ...) or offline (SFT, DPO): the accelerate set-up of policy,
optimizer and scheduler, sampling from the policy, the optimizer step over gradient-accumulation micro-batches
with its fault guards, evaluation with reward_fn / metric_fn and the samples table, logging, checkpoints and the
end-of-run summary.

Each trainer keeps its own loop (`learn`) visible in its own file and calls these functions with itself as the
`Trainer` below: composition by functions, no base class and no hooks.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from trlx import trackers
from trlx.checkpoint import (
    BEST_DIR,
    checkpoint_name,
    load_trainer,
    read_latest,
    save_pretrained_policy,
    save_trainer,
)
from trlx.config import TRLConfig
from trlx.data.prompts import PromptPipeline
from trlx.distributed import fast_cpu_kernels, full_params_for_generation, mean_over_processes, unwrap
from trlx.faults import RESUME_HINT, FaultCounter, NumericalFault, StopOnSignal, any_process, nonfinite
from trlx.logging import MetricsLogger, run_summary
from trlx.report import write_report
from trlx.rollout.generation import generate
from trlx.rollout.options import SamplingParams
from trlx.trainers.evaluation import gathered_eval_metrics, sample_eval_prompts
from trlx.types import Generation, PromptBatch

MetricFn = Callable[..., dict[str, Any]]


class Trainer(Protocol):
    """The state the shared functions read and update (OnlineTrainer and OfflineTrainer have it)."""

    config: TRLConfig
    accelerator: Accelerator
    policy: Any  # the accelerate-prepared PolicyWithValueHead
    optimizer: Any
    scheduler: Any
    tokenizer: PreTrainedTokenizerBase
    sampling: SamplingParams
    stop_sequences: list[str]
    eval_prompts: PromptPipeline | None
    reward_fn: Callable[..., Any] | None
    metric_fn: MetricFn | None
    logger: MetricsLogger | None
    checkpoint_dir: Path
    step: int
    best_reward: float
    faults: FaultCounter


def prepare(config: TRLConfig, accelerator: Accelerator, policy: nn.Module) -> tuple[Any, Any, Any]:
    """The policy with its optimizer and LR schedule, prepared by accelerate (DDP, DeepSpeed, FSDP or none)."""
    from trlx.trainers.optim import make_optimizer, make_scheduler

    optimizer = make_optimizer(config.optimizer, policy.parameters())
    scheduler = make_scheduler(config.scheduler, optimizer)
    prepared = accelerator.prepare(policy, optimizer, scheduler)
    fast_cpu_kernels(config.train, accelerator, unwrap(accelerator, prepared[0]))
    return prepared


def make_logger(config: TRLConfig, accelerator: Accelerator) -> MetricsLogger | None:
    """metrics.jsonl and the trackers train.tracker asks for (their runs opened with the config) on the main
    process; None elsewhere."""
    if not accelerator.is_main_process:
        return None
    train = config.train
    trackers.start(accelerator, config)
    tensorboard = trackers.tensorboard_dir(train) if "tensorboard" in train.trackers else None
    return MetricsLogger(train.checkpoint_dir, accelerator, tensorboard)


def sample(trainer: Trainer, batch: PromptBatch, trunk: Any = None, values: bool = False) -> Generation:
    """Sample continuations of `batch` from the policy's `sampling_lm` (its LM; ILQL's advantage-shifted policy),
    gathering sharded parameters for generation; `values`: record the value head's V(s_t) too."""
    trainer.policy.eval()  # gradient checkpointing is active only in train mode and would disable the KV cache
    accelerator = trainer.accelerator
    policy = unwrapped_policy(trainer)
    value_head = policy.value_head if values else None
    with full_params_for_generation(accelerator, trainer.policy) as synced, accelerator.autocast():
        all_finished = (lambda done: not any_process(accelerator, not done)) if synced else None
        return generate(
            policy.sampling_lm,
            batch,
            trainer.tokenizer,
            trainer.sampling,
            trainer.stop_sequences,
            all_finished,
            trunk,
            value_head,
        )


def micro_batches(items: Any, n_micro: int) -> list[Any]:
    """`items` (anything with `len` and `select(index tensor)`) in exactly `n_micro` consecutive micro-batches
    whose sizes differ by at most one: accelerate syncs gradients and steps only after `n_micro` of them."""
    if len(items) < n_micro:
        raise ValueError(f"a batch of {len(items)} cannot be split into {n_micro} gradient-accumulation micro-batches")
    return [items.select(index) for index in torch.arange(len(items)).tensor_split(n_micro)]


def accumulated_step(
    trainer: Trainer, micros: Sequence[Any], micro_loss: Callable[[Any], tuple[Tensor, dict[str, float], float]]
) -> dict[str, float]:
    """One optimizer step from gradients accumulated over `micros`.

    `micro_loss(micro)` returns the micro-batch's loss already weighted by its share of the whole batch (so the
    weighted losses add up to the batch's loss), its statistics, and the weight to average those with. The
    step is skipped (NumericalFault, the same on every process) when the loss or the gradient norm is not
    finite. Logged values are averaged over all processes.
    """
    accelerator = trainer.accelerator
    trainer.policy.train()  # dropout is off everywhere; train mode only switches gradient checkpointing on
    n_micro = len(micros)
    loss_sum = torch.zeros((), device=accelerator.device)
    stats: dict[str, float] = {}
    trainer.optimizer.zero_grad()
    for micro in micros:
        with accelerator.accumulate(trainer.policy):
            loss, micro_stats, weight = micro_loss(micro)
            # accelerate (or DeepSpeed) divides by its gradient_accumulation_steps again, hence the factor.
            accelerator.backward(loss * n_micro)
        loss_sum += loss.detach()
        for key, value in micro_stats.items():
            stats[key] = stats.get(key, 0.0) + value * weight
    # The norm is computed even without clipping (max_norm=inf): a non-finite norm reveals NaN/inf gradients.
    max_norm = trainer.config.train.max_grad_norm
    grad_norm = accelerator.clip_grad_norm_(trainer.policy.parameters(), max_norm or math.inf)
    grad_norm = math.nan if grad_norm is None else float(grad_norm)  # DeepSpeed may not report it
    # Under fp16 loss scaling inf gradients are routine: the GradScaler skips that step and lowers its scale.
    checked: dict[str, Any] = {"loss": loss_sum}
    if accelerator.scaler is None:
        checked["gradient norm"] = grad_norm
    problem = nonfinite(checked)
    if any_process(accelerator, problem is not None):
        trainer.optimizer.zero_grad()
        raise NumericalFault(problem or "another process saw a non-finite loss or gradient")
    trainer.optimizer.step()
    # Freed now rather than before the next step: a model-sized set of gradients kept through the next rollout
    # is memory its generation and scoring cannot use, and leaves holes in the CPU heap.
    trainer.optimizer.zero_grad()
    trainer.scheduler.step()
    stats = mean_over_processes(accelerator, {"loss/total": loss_sum.item(), **stats})
    return {**stats, "optim/grad_norm": grad_norm, "optim/lr": trainer.scheduler.get_last_lr()[0]}


def guarded(trainer: Trainer, update: Callable[[], dict[str, float]]) -> dict[str, float]:
    """`update()`, or no update (counted in faults/skipped_steps) when its loss or gradients are not finite."""
    try:
        metrics = update()
    except NumericalFault as fault:
        trainer.faults.record(fault, "step", trainer.step + 1)
        return {}
    trainer.faults.reset()
    return metrics


@torch.no_grad()
def evaluate(trainer: Trainer, chunk_size: int) -> dict[str, float]:
    """Mean reward and metric_fn results on the eval prompts, with the same sampling noise every time; the
    samples go to samples.jsonl and the best evaluation so far to best_checkpoint/.

    A forked RNG with a fixed seed makes evaluations comparable across steps without disturbing the training
    RNG stream (so resume stays exact).
    """
    assert trainer.eval_prompts is not None
    accelerator = trainer.accelerator
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(trainer.config.train.seed + accelerator.process_index)
        samples = sample_eval_prompts(
            trainer.eval_prompts,
            chunk_size,
            lambda batch: sample(trainer, batch),
            trainer.reward_fn,
            trainer.metric_fn,
            trainer.tokenizer,
            trainer.config.train.reward_timeout_s,
        )
    if any_process(accelerator, samples.problem is not None):
        fault = NumericalFault(samples.problem or "another process saw a non-finite reward")
        trainer.faults.record(fault, "evaluation", trainer.step)
        return {}
    # Gathered, so every process computes the same numbers (and agrees on saving best_checkpoint).
    metrics, rows = gathered_eval_metrics(accelerator, samples)
    log(trainer, {"step": trainer.step, **metrics})
    if trainer.logger is not None:
        trainer.logger.log_samples(trainer.step, rows)
    reward = metrics.get("eval/reward_mean")  # none without a reward_fn (offline methods with a metric_fn only)
    if trainer.config.train.save_best and reward is not None and reward > trainer.best_reward:
        trainer.best_reward = metrics["eval/reward_mean"]
        save(trainer, trainer.checkpoint_dir / BEST_DIR)
    return metrics


# The methods below are shared as they are: each trainer class binds them (`save = common.save`).
def log(trainer: Trainer, row: dict[str, Any]) -> None:
    """Append `row` to metrics.jsonl (and TensorBoard); the main process only."""
    if trainer.logger is not None:
        trainer.logger.log(row)


def save(trainer: Any, dest: Path) -> None:
    """Write checkpoint `dest` (all processes call this; see `trlx.checkpoint.save_trainer`)."""
    trainer.accelerator.wait_for_everyone()
    save_trainer(trainer, dest)
    trainer.accelerator.wait_for_everyone()


def resume(trainer: Any, path: str | Path) -> None:
    """Continue exactly where the run that wrote checkpoint `path` stood (weights, optimizer, RNG, data position
    and, for the online loop, the rollout in flight)."""
    load_trainer(trainer, Path(path))
    trainer.resumed_from = Path(path)


def unwrapped_policy(trainer: Trainer) -> Any:
    """The policy (its causal LM is `.lm`), unwrapped from accelerate (trlX's `trainer.model`)."""
    return unwrap(trainer.accelerator, trainer.policy)


def save_pretrained(trainer: Trainer, directory: str | Path) -> Path:
    """Write the policy LM and tokenizer in Hugging Face format to `directory` (trlX's method; all processes call
    it). Checkpoints for resuming are `save`'s."""
    card = (trainer.config.to_dict(), trainer.step, trainer.checkpoint_dir / "metrics.jsonl")
    return save_pretrained_policy(trainer.accelerator, trainer.policy, trainer.tokenizer, Path(directory), card)


def wind_up(trainer: Any, stop: StopOnSignal) -> None:
    """The end of every loop: on a signal, checkpoint and exit saying how to resume; else the final checkpoint
    (unless this step already has one) and the final evaluation.

    The checkpoint comes before the final evaluation: it then records the log without that row, so a run resumed
    from it to more steps logs exactly what one uninterrupted run would. (A signal now is noted and ignored: the
    run is finishing anyway.)
    """
    train = trainer.config.train
    if stop.stopping:
        dest = trainer.checkpoint_dir / checkpoint_name(trainer.step)
        save(trainer, dest)
        message = f"trlx: stopped by {stop.name} at step {trainer.step}; checkpoint saved to {dest}\n{RESUME_HINT}"
        if trainer.accelerator.is_main_process:
            print(message, file=sys.stderr, flush=True)
        if trainer.logger is not None:
            trainer.logger.close()
            report_quietly(trainer.checkpoint_dir)
        raise stop.interruption(message)
    if trainer.step % train.checkpoint_interval != 0:
        save(trainer, trainer.checkpoint_dir / checkpoint_name(trainer.step))
    if trainer.eval_prompts is not None and trainer.step % train.eval_interval != 0:
        trainer.evaluate()


def report_quietly(run_dir: Path) -> Path | None:
    """report.html for the run; a failure to draw it warns and never fails a run that trained."""
    try:
        return write_report(run_dir)[0]
    except Exception as e:  # noqa: BLE001 - the report is a convenience; the run's results are already saved
        warnings.warn(
            f"could not write {run_dir}/report.html ({type(e).__name__}: {e}); try `trlx report`", stacklevel=2
        )
        return None


def finish(trainer: Trainer, started: float) -> None:
    """Close the logs, write the run's report.html (`trlx.report`) and print where the run's outputs went, with
    its headline numbers."""
    if trainer.logger is None:
        return
    trainer.logger.close()
    report = report_quietly(trainer.checkpoint_dir)
    seconds = time.perf_counter() - started
    latest = read_latest(trainer.checkpoint_dir)
    method = trainer.config.method.name
    print(run_summary(trainer.checkpoint_dir, seconds, method, latest, trainer.logger.tensorboard_dir, report))
