"""The loop of every offline method (SFT, DPO, ILQL, RFT), read top to bottom.

    learn():  evaluate → repeat { next length-grouped batch of the dataset → the method's loss over
              gradient-accumulation micro-batches → optimizer step → log / eval / checkpoint } → final checkpoint
              and eval

The methods differ only in their `Objective` (trlx.trainers.objectives): how a batch is built from the dataset
and what its loss is. Everything else (accelerate, optimizer step, fault guards, evaluation, logging, checkpoints,
exact resume, signals) is `trlx.trainers.common`, shared with the online loop.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from trlx.checkpoint import checkpoint_name
from trlx.config import TRLConfig
from trlx.data.prompts import PromptPipeline
from trlx.faults import FaultCounter, StopOnSignal
from trlx.logging import progress_bar, progress_enabled
from trlx.models.policy import PolicyWithValueHead, model_eos_ids
from trlx.rollout.options import SamplingParams
from trlx.trainers import common
from trlx.types import Generation, PromptBatch

# Batches are formed from windows of this many batches' worth of examples sorted by length, so a batch's rows
# have similar lengths (little padding) while batches still come in a random order.
LENGTH_GROUP_WINDOW = 16


class Objective(Protocol):
    """What an offline method adds to the loop: its dataset (this process's share) and its loss."""

    lengths: list[int]  # tokens of each example, for length-grouped batching

    def batch(self, indices: Sequence[int]) -> Any:
        """The examples at `indices`, collated on the CPU (anything with `len`, `select` and `to`)."""
        ...

    def normalizer(self, batch: Any) -> Tensor:
        """What the batch's loss averages over (learned tokens, pairs): micro-batch losses are weighted by it."""
        ...

    def loss(self, policy: Any, micro: Any, total: Tensor) -> tuple[Tensor, dict[str, float], float]:
        """The micro-batch's loss as its share of the batch's (summed over the micro-batch, divided by `total`),
        its statistics, and their weight (the micro-batch's share of `total`)."""
        ...

    def start_pass(self, trainer: Any, epoch: int) -> None:
        """Called before each pass over the data; rft samples and selects the pass's data here (sft, dpo: no-op)."""
        ...

    def end_step(self, trainer: Any, step: int) -> None:
        """Called after optimizer step `step`; ilql syncs its target Q heads here (the others: no-op)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """This process's data, when it is not fixed (rft's completions and selection)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class LengthGroupedBatches:
    """Batches of example indices for one process: each pass is a fresh seeded permutation, cut into windows of
    LENGTH_GROUP_WINDOW batches that are sorted by length and split into batches, then shuffled. A last batch
    smaller than `min_size` (the gradient-accumulation micro-batch count) is dropped from that pass; the next
    pass's permutation differs, so no example is left out for good. The state makes resume exact."""

    lengths: list[int]
    batch_size: int
    seed: int
    min_size: int = 1
    epoch: int = 0
    position: int = 0
    _planned: tuple[Any, list[list[int]]] | None = field(default=None, init=False, repr=False, compare=False)

    def plan(self) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).tolist()
        window = self.batch_size * LENGTH_GROUP_WINDOW
        batches = []
        for start in range(0, len(order), window):
            group = sorted(order[start : start + window], key=lambda i: -self.lengths[i])
            batches += [group[i : i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        batches = [b for b in batches if len(b) >= self.min_size]
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def next(self) -> list[int]:
        # The pass's plan is a function of (epoch, lengths): computed once per pass, not at every step.
        key = (self.epoch, id(self.lengths), len(self.lengths))
        if self._planned is None or self._planned[0] != key:
            self._planned = (key, self.plan())
        batches = self._planned[1]
        if not batches:
            raise ValueError(
                f"{len(self.lengths)} example(s) on this process are fewer than train.gradient_accumulation_steps "
                f"({self.min_size}): give more samples or accumulate over fewer micro-batches"
            )
        taken = batches[self.position]
        self.position += 1
        if self.position >= len(batches):
            self.epoch, self.position = self.epoch + 1, 0
        return taken

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


@dataclass
class DataStream:
    """This process's position in the data: the objective's data for the current pass and the pass's batches.
    Its state (saved per process in every checkpoint) holds both, so a resumed run continues mid-pass exactly."""

    objective: Objective
    batches: LengthGroupedBatches

    @property
    def epoch(self) -> int:
        return self.batches.epoch

    def next(self, trainer: Any) -> Any:
        """The next batch; at the start of a pass, the objective first prepares the pass's data."""
        if self.batches.position == 0:
            self.objective.start_pass(trainer, self.batches.epoch)
            self.batches.lengths = self.objective.lengths
        return self.objective.batch(self.batches.next())

    def state_dict(self) -> dict[str, Any]:
        return {**self.batches.state_dict(), "data": self.objective.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)
        self.objective.load_state_dict(state.get("data") or {})
        self.batches.lengths = self.objective.lengths


class OfflineTrainer:
    """Owns the policy, the method's objective over a static dataset, and the loop that trains on it."""

    def __init__(
        self,
        config: TRLConfig,
        policy: PolicyWithValueHead,
        objective: Objective,
        tokenizer: PreTrainedTokenizerBase,
        eval_prompts: PromptPipeline | None = None,
        reward_fn: Callable[..., Any] | None = None,
        metric_fn: common.MetricFn | None = None,
        stop_sequences: Sequence[str] = (),
        accelerator: Accelerator | None = None,
    ) -> None:
        from trlx.distributed import make_accelerator

        self.config = config
        self.accelerator = accelerator or make_accelerator(config.train)
        self.tokenizer = tokenizer
        self.objective = objective
        self.eval_prompts = eval_prompts
        self.reward_fn, self.metric_fn = reward_fn, metric_fn
        self.stop_sequences = list(stop_sequences)
        self.policy, self.optimizer, self.scheduler = common.prepare(config, self.accelerator, policy)
        lm = common.unwrapped_policy(self).lm
        eos_ids = model_eos_ids(tokenizer, lm)
        self.sampling = SamplingParams.from_gen_kwargs(config.method.gen_kwargs, eos_ids, tokenizer.pad_token_id)
        batches = LengthGroupedBatches(
            objective.lengths, config.train.batch_size, config.train.seed, self.accelerator.gradient_accumulation_steps
        )
        self.sampler = DataStream(objective, batches)  # `sampler`: the name checkpoint.Resumable saves per process
        self.step = 0
        self.best_reward = -math.inf
        self.faults = FaultCounter(config.train.max_consecutive_faults)
        self.rollout = None  # offline: nothing in flight between steps (checkpoint.Resumable asks)
        self.resumed_from: Path | None = None
        self.checkpoint_dir = Path(config.train.checkpoint_dir)
        self.logger = common.make_logger(config, self.accelerator)

    # ------------------------------------------------------------------ the loop
    def learn(self) -> None:
        train = self.config.train
        started = time.perf_counter()
        enabled = progress_enabled(train.progress_bar) and self.accelerator.is_main_process
        bar = progress_bar(train.total_steps, self.step, enabled, self.config.method.name)
        with StopOnSignal() as stop:
            if self.eval_prompts is not None and self.step == 0 and self.resumed_from is None:
                self.evaluate()
            while not self.done and not stop.requested(self.accelerator):
                batch = self.sampler.next(self)
                t0 = time.perf_counter()
                metrics = common.guarded(self, lambda batch=batch: self.update(batch))
                self.step += 1
                row = {"step": self.step, "epoch": self.sampler.epoch, **metrics, **self.faults.metrics()}
                row["time/optimize_s"] = time.perf_counter() - t0
                self.log(row)
                bar.update(1)
                if "loss/total" in metrics:
                    bar.set_postfix(loss=f"{metrics['loss/total']:.4f}")
                if self.eval_prompts is not None and self.step % train.eval_interval == 0:
                    self.evaluate()
                if self.step % train.checkpoint_interval == 0:
                    self.save(self.checkpoint_dir / checkpoint_name(self.step))
            bar.close()
            common.wind_up(self, stop)
        common.finish(self, started)

    @property
    def done(self) -> bool:
        return self.step >= self.config.train.total_steps or self.sampler.epoch >= self.config.train.epochs

    def update(self, batch: Any) -> dict[str, float]:
        """One optimizer step on the objective's loss, accumulated over micro-batches (`common.accumulated_step`)."""
        batch = batch.to(self.accelerator.device)
        total = self.objective.normalizer(batch).clamp(min=1)
        micros = common.micro_batches(batch, self.accelerator.gradient_accumulation_steps)
        metrics = common.accumulated_step(self, micros, lambda micro: self.objective.loss(self.policy, micro, total))
        self.objective.end_step(self, self.step + 1)
        return metrics

    # ------------------------------------------------------------------ evaluation, logging, checkpoints
    def evaluate(self) -> dict[str, float]:
        """Samples of the eval prompts, scored by reward_fn and metric_fn (`trlx.trainers.common.evaluate`)."""
        return common.evaluate(self, self.config.method.chunk_size)

    def generate(self, batch: PromptBatch) -> Generation:
        return common.sample(self, batch)

    generate_eval = generate

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best_reward": self.best_reward if math.isfinite(self.best_reward) else None,
            "faults": self.faults.state_dict(),
            "rollout": None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.best_reward = -math.inf if state["best_reward"] is None else float(state["best_reward"])
        self.faults.load_state_dict(state["faults"])

    # Shared with the online loop as they are (trlx.trainers.common).
    log = common.log
    save = common.save
    resume = common.resume
    save_pretrained = common.save_pretrained
    model = property(common.unwrapped_policy)
