"""The online loop of every on-policy method (PPO, GRPO, RLOO, REINFORCE++), read top to bottom.

    learn():  evaluate → repeat { collect_rollout → ppo_epochs × minibatch updates → log / eval / checkpoint
              → KL controller update } → final eval and checkpoint

The methods share all of it and differ only in `estimate_advantages` (trlx.trainers.advantages) and in which
loss terms exist (a value loss for PPO's critic, a KL loss term when method.kl_loss_coef > 0). The RL math lives
in `trlx.algorithms` (pure functions); this file only moves tensors between them.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from trlx.algorithms.advantages import overlong_penalty
from trlx.algorithms.kl import kl_penalty, make_kl_controller
from trlx.algorithms.ppo import kl_loss, policy_loss, value_loss
from trlx.algorithms.rewards import place_scores, scale_token_scores
from trlx.algorithms.stats import RunningMoments, masked_mean
from trlx.checkpoint import (
    checkpoint_name,
    read_latest,
)
from trlx.config import ConfigError, TRLConfig
from trlx.data.prompts import PromptPipeline, PromptSampler, end_of_turn_ids
from trlx.distributed import (
    engine_owns_model,
    fast_cpu_kernels,
    global_max,
    global_mean,
    global_moments,
    make_accelerator,
    unwrap,
)
from trlx.faults import FaultCounter, NumericalFault, StopOnSignal, any_process, check_kl, nonfinite
from trlx.logging import MetricsLogger, progress_bar, progress_enabled
from trlx.models.policy import PolicyWithValueHead, model_eos_ids
from trlx.models.reference import Reference
from trlx.models.trunk import FrozenTrunk
from trlx.report import token_view
from trlx.rewards.scoring import NonFiniteRewardError, compute_scores
from trlx.rollout.options import SamplingParams, merge_eos_ids
from trlx.rollout.scoring import score_response
from trlx.trainers import common
from trlx.trainers.advantages import estimate_advantages, group_metrics
from trlx.types import Generation, PromptBatch, RolloutBatch, SampledChunk, right_pad_cat

MetricFn = Callable[..., dict[str, Any]]
# Dynamic sampling gives up after this many times the generate calls of a plain rollout (then tops the rollout up
# with groups whose rewards are all equal).
MAX_SAMPLING_ROUNDS = 4
TOKEN_VIEW_SAMPLES = 4  # samples of each rollout kept for the report's token view


# Largest log-prob (nats) and value gap between the sampler's records and the policy forward under which the
# sampler's are used (fp32 on CPU: ~1e-6; a ratio of exp(1e-3) is far inside any PPO clip range).
SAMPLING_TOLERANCE = 1e-3


def reuse_sampled_setting(setting: bool | None, accelerator: Accelerator, policy: nn.Module) -> bool | None:
    """`method.logprobs_from_sampling` for this run: True (use the sampler's records), False (score again) or
    None (decide on the first rollout). Refused where the sampler cannot record them: under DeepSpeed or FSDP
    (sharded weights) and for a policy that samples from something else than its LM (ILQL)."""
    unwrapped = unwrap(accelerator, policy)
    if engine_owns_model(accelerator) or unwrapped.sampling_lm is not unwrapped.lm:
        if setting:
            raise ConfigError(
                "method.logprobs_from_sampling=True needs trlx's sampler on the policy's own LM, without DeepSpeed "
                "or FSDP; set it to null or false"
            )
        return False
    precise = accelerator.mixed_precision == "no" and next(unwrapped.parameters()).dtype == torch.float32
    if setting is None:
        return None if precise else False
    return setting


def sampling_gap(generation: Generation, scored: RolloutBatch, critic: bool) -> Tensor:
    """(2,) largest |sampler - policy forward| differences of the log-probs and (with a `critic`) the values on
    response tokens; inf where the sampler recorded nothing (an engine without them), so that the sampler's
    records are used only where they exist."""
    mask = scored.response_mask

    def gap(recorded: Tensor | None, forward: Tensor) -> Tensor:
        return torch.tensor(math.inf) if recorded is None else ((recorded - forward).abs() * mask).max()

    value_gap = gap(generation.values, scored.values) if critic else torch.zeros(())
    return torch.stack([gap(generation.logprobs, scored.logprobs), value_gap])


class OnlineTrainer:
    """Owns the policy, the frozen reference (None when no KL is used), the reward function and the loop that ties
    them together."""

    def __init__(
        self,
        config: TRLConfig,
        policy: PolicyWithValueHead,
        reference: Reference | None,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: Callable[..., Any],
        train_prompts: PromptPipeline,
        eval_prompts: PromptPipeline | None = None,
        metric_fn: MetricFn | None = None,
        stop_sequences: Sequence[str] = (),
        accelerator: Accelerator | None = None,
        trunk: FrozenTrunk | None = None,
    ) -> None:
        self.config = config
        self.accelerator = accelerator or make_accelerator(config.train)
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.metric_fn = metric_fn
        self.stop_sequences = list(stop_sequences)
        # With a frozen bottom (model.num_layers_unfrozen), its output is recorded while sampling and replayed
        # in scoring and every update, so only the trainable top runs there.
        self.trunk = trunk
        self.train_prompts, self.eval_prompts = train_prompts, eval_prompts

        # Prepared by accelerate, with the fast CPU kernels (train.onednn_linear, fused_blocks), as offline.
        self.policy, self.optimizer, self.scheduler = common.prepare(config, self.accelerator, policy)
        # In the policy's device and dtype (DeepSpeed casts the policy itself to bf16/fp16).
        policy_dtype = next(common.unwrapped_policy(self).parameters()).dtype
        self.reference = None if reference is None else reference.to(self.accelerator.device, policy_dtype)
        # A frozen copy's or hydra's own layers (`.model`); the lora reference is the policy itself.
        fast_cpu_kernels(config.train, self.accelerator, getattr(self.reference, "model", None))

        method = config.method
        lm = common.unwrapped_policy(self).lm
        eos_ids = model_eos_ids(tokenizer, lm)
        if train_prompts.is_chat or (eval_prompts is not None and eval_prompts.is_chat):
            eos_ids = merge_eos_ids(eos_ids, end_of_turn_ids(tokenizer))  # the assistant's turn ends the response
        self.sampling = SamplingParams.from_gen_kwargs(method.gen_kwargs, eos_ids, tokenizer.pad_token_id)
        self.kl_ctl = make_kl_controller(method.init_kl_coef, method.target, method.horizon)
        self.reuse_sampled = reuse_sampled_setting(method.logprobs_from_sampling, self.accelerator, self.policy)
        self.reward_moments = RunningMoments()
        # scale_reward=ref without method.ref_std divides by the first rollout's score std (as trlX does).
        self.first_rollout_std: float | None = None
        self.sampler = PromptSampler(len(train_prompts), seed=config.train.seed)
        self.step = 0
        self.iteration = 0
        self.best_reward = -math.inf
        self.faults = FaultCounter(config.train.max_consecutive_faults)
        # The rollout being trained on lives on the trainer so a checkpoint can fall mid-rollout and resume exactly.
        self.rollout: RolloutBatch | None = None
        self.rollout_metrics: dict[str, float] = {}
        self.minibatch_index = 0
        self.resumed_from: Path | None = None
        self.checkpoint_dir = Path(config.train.checkpoint_dir)
        self.logger: MetricsLogger | None = common.make_logger(config, self.accelerator)

    # ------------------------------------------------------------------ the loop
    def learn(self) -> None:
        train = self.config.train
        started = time.perf_counter()
        bar = progress_bar(
            train.total_steps,
            self.step,
            progress_enabled(train.progress_bar) and self.is_main,
            self.config.method.name,
        )
        with StopOnSignal() as stop:
            if self.eval_prompts is not None and self.step == 0 and self.resumed_from is None:
                self.evaluate()
            while not self.done and not stop.requested(self.accelerator):
                if self.rollout is None:
                    self.start_rollout()
                else:
                    self.train_on_rollout(bar, stop)
            bar.close()
            common.wind_up(self, stop)
        common.finish(self, started)

    def start_rollout(self) -> None:
        """Collect the next rollout, or skip and count it when a non-finite reward or log-prob spoils it."""
        try:
            rollout, metrics = self.collect_rollout()
        except NumericalFault as fault:
            self.faults.record(fault, "rollout", self.step)
            self.log({"step": self.step, **self.faults.metrics()})
            return
        check_kl(metrics["kl/mean"], self.config.method.kl_max, self.step, read_latest(self.checkpoint_dir))
        self.rollout, self.rollout_metrics, self.minibatch_index = rollout, metrics, 0

    def train_on_rollout(self, bar: Any, stop: StopOnSignal) -> None:
        """PPO updates on the current rollout from `minibatch_index` on, with logging, evaluation and checkpoints."""
        train = self.config.train
        rollout, metrics = self.rollout, self.rollout_metrics
        per_rollout = self.config.method.ppo_epochs * math.ceil(len(rollout) / train.batch_size)
        for minibatch in self.minibatches(rollout, skip=self.minibatch_index):
            t0 = time.perf_counter()
            update_metrics = self.guarded_update(minibatch)
            self.step += 1
            self.minibatch_index += 1
            row = {"step": self.step, **metrics, **update_metrics, **self.faults.metrics()}
            row["time/optimize_s"] = time.perf_counter() - t0
            self.log(row)
            bar.update(1)
            bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", kl=f"{metrics['kl/mean']:.3f}")
            if self.minibatch_index == per_rollout:
                self.finish_rollout()
            if self.step % train.eval_interval == 0:
                self.evaluate()
            if self.step % train.checkpoint_interval == 0:
                self.save(self.checkpoint_dir / checkpoint_name(self.step))
            if self.done or stop.requested(self.accelerator):
                return

    def finish_rollout(self) -> None:
        """Adapt the KL coefficient to the rollout just used up, and move on to the next iteration."""
        n_samples = len(self.rollout) * self.accelerator.num_processes
        self.kl_ctl.update(self.rollout_metrics["kl/mean"], n_steps=n_samples)
        self.iteration += 1
        self.rollout, self.rollout_metrics, self.minibatch_index = None, {}, 0

    def score_std(self) -> float | None:
        """The std scores are divided by (`method.scale_reward`), or None for no scaling (also while every score
        seen so far was the same, whose std of 0 would blow the rewards up)."""
        method = self.config.method
        std = None
        if method.scale_reward == "running":
            std = self.reward_moments.std
        elif method.scale_reward == "ref":
            std = method.ref_std if method.ref_std is not None else self.first_rollout_std
        return std if std is not None and std > 1e-8 else None

    @property
    def done(self) -> bool:
        return self.step >= self.config.train.total_steps or self.iteration >= self.config.train.epochs

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    # ------------------------------------------------------------------ rollout
    def collect_rollout(self) -> tuple[RolloutBatch, dict[str, float]]:
        """Generate `num_rollouts` samples, score them, and turn scores into per-token advantages."""
        method = self.config.method
        t0 = time.perf_counter()
        chunks: list[SampledChunk] = []
        dropped: list[SampledChunk] = []  # groups without signal, set aside by dynamic sampling
        component_metrics: dict[str, list[float]] = {}
        collected, rounds, problem = 0, 0, None
        while self.need_more_samples(collected, rounds):
            n = (
                method.chunk_size
                if method.dynamic_sampling
                else min(method.chunk_size, method.num_rollouts - collected)
            )
            chunk = self.sample_chunk(n, component_metrics)
            problem = problem or chunk.problem
            rounds += 1
            if method.dynamic_sampling:
                chunk, degenerate = chunk.split_degenerate(method.num_generations)
                dropped.append(degenerate)
            chunks.append(chunk)
            collected += len(chunk.batch)
        # All processes agree before the next collective, or one skipping would leave the others waiting.
        if any_process(self.accelerator, problem is not None):
            raise NumericalFault(problem or "another process saw a non-finite reward or log-prob")
        # Dynamic sampling keeps the first num_rollouts informative samples, topped up with degenerate groups
        # when the rounds ran out; without it this is every sample.
        pieces = [c for c in chunks + dropped if len(c.batch)]
        rollout = RolloutBatch.concat([c.batch for c in pieces], self.tokenizer.pad_token_id)
        scores = torch.cat([c.scores for c in pieces])
        width = rollout.response_ids.shape[1]
        dense = None if pieces[0].dense is None else right_pad_cat([c.dense for c in pieces], width)
        sampled_mean = global_mean(self.accelerator, scores)  # every sample drawn, kept or not
        if len(rollout) > method.num_rollouts:
            keep = torch.arange(method.num_rollouts)
            rollout, scores, dense = rollout.select(keep), scores[keep], None if dense is None else dense[keep]
        mask = rollout.response_mask

        token_scores, score_metrics = self.scaled_token_scores(scores, dense, mask)
        kl = kl_penalty(rollout.logprobs, rollout.ref_logprobs, method.kl_estimator) * mask
        estimate = estimate_advantages(
            method, self.accelerator, token_scores, kl, mask, rollout.values, self.kl_ctl.value
        )
        scaled = token_scores.sum(-1)
        rollout.rewards, rollout.advantages, rollout.returns = estimate.rewards, estimate.advantages, estimate.returns
        rollout.scores = scaled
        if self.logger is not None:  # the report's token view: where the policy drifts from the reference
            self.logger.save_token_view(self.token_view(rollout, kl, scores))

        metrics = {
            **score_metrics,
            "reward/scaled_mean": global_mean(self.accelerator, scaled),
            "kl/mean": global_mean(self.accelerator, kl.sum(-1)),
            "kl/per_token": global_moments(self.accelerator, kl, mask)[0].item(),
            "kl/coef": self.kl_ctl.value,
            "response/length_mean": global_mean(self.accelerator, mask.sum(-1).float()),
            **estimate.metrics,
            **self.sampling_gap_metrics([c.gap for c in pieces if c.gap is not None]),
            "time/rollout_s": time.perf_counter() - t0,
        }
        if method.num_generations > 1:
            metrics.update(group_metrics(self.accelerator, scores, method.num_generations))
        if method.dynamic_sampling:
            # Dropped: set aside and not needed to top the rollout up. reward/mean covers the kept samples only.
            topped_up = max(method.num_rollouts - collected, 0)
            dropped_groups = (sum(len(c.batch) for c in dropped) - topped_up) // method.num_generations
            metrics["groups/dropped"] = global_mean(self.accelerator, torch.tensor([float(dropped_groups)]))
            metrics["groups/sampling_rounds"] = float(rounds)
            metrics["reward/sampled_mean"] = sampled_mean
        for key, values in sorted(component_metrics.items()):
            metrics[key] = global_mean(self.accelerator, torch.tensor(values, dtype=torch.float64))
        return rollout, metrics

    def sampling_gap_metrics(self, gaps: list[Tensor]) -> dict[str, float]:
        """The largest sampler-vs-policy-forward gaps of a rescored rollout; under `logprobs_from_sampling=None`
        the first such rollout decides whether the later ones use the sampler's log-probs and values."""
        if not gaps:
            return {}
        gap = torch.stack(gaps).amax(0)
        logprob_gap, value_gap = global_max(self.accelerator, gap[0]), global_max(self.accelerator, gap[1])
        if self.reuse_sampled is None:
            self.reuse_sampled = max(logprob_gap, value_gap) < SAMPLING_TOLERANCE
            if not self.reuse_sampled and self.is_main:
                warnings.warn(
                    f"the sampler's log-probs/values differ from the policy forward's by up to {logprob_gap:.2g} / "
                    f"{value_gap:.2g} (tolerance {SAMPLING_TOLERANCE}): every rollout is scored again",
                    stacklevel=2,
                )
        return {"rollout/logprob_gap_max": logprob_gap, "rollout/value_gap_max": value_gap}

    def token_view(self, rollout: RolloutBatch, kl: Tensor, scores: Tensor, n: int = TOKEN_VIEW_SAMPLES) -> dict:
        """The first `n` samples of `rollout` token by token: text, per-token KL and advantage (trlx.report)."""
        decode = self.tokenizer.decode
        prompts = [
            decode(ids[m.bool()], skip_special_tokens=True)
            for ids, m in zip(rollout.query_ids[:n], rollout.query_mask[:n])
        ]
        tokens = [
            [decode([t]) for t in ids[: int(m.sum())].tolist()]
            for ids, m in zip(rollout.response_ids[:n], rollout.response_mask[:n])
        ]
        return token_view(self.step, prompts, tokens, kl[:n], rollout.advantages[:n], scores[:n])

    def scaled_token_scores(
        self, scores: Tensor, dense: Tensor | None, mask: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """(B, R) per-token scores after `ref_mean`, `scale_reward` and `cliprange_reward` (scalar scores on the last
        token), with the reward statistics updated by this rollout's (B,) scores, and their metrics."""
        method = self.config.method
        # Population variance: RunningMoments applies the n-1 correction itself (as trlX does).
        score_mean, score_var, score_count = global_moments(
            self.accelerator, scores, torch.ones_like(scores), unbiased=False
        )
        self.reward_moments.update(score_mean.item(), score_var.item(), score_count.item())
        if self.first_rollout_std is None:
            n = score_count.item()
            self.first_rollout_std = math.sqrt(score_var.item() * n / max(n - 1, 1))
        std = self.score_std()
        token_scores = place_scores(scores, mask) if dense is None else dense
        token_scores = scale_token_scores(token_scores, mask, method.ref_mean, std, method.cliprange_reward)
        metrics = {
            "reward/mean": score_mean.item(),
            "reward/std": score_var.clamp(min=0).sqrt().item(),
            "reward/running_std": self.reward_moments.std,
        }
        if std is not None:
            metrics["reward/scale_std"] = std
        return token_scores, metrics

    def need_more_samples(self, collected: int, rounds: int) -> bool:
        """Whether rollout collection goes on. Under dynamic sampling every process keeps sampling while any one
        still lacks informative groups (generation can be collective), for at most MAX_SAMPLING_ROUNDS times the
        rounds a plain rollout takes."""
        method = self.config.method
        if not method.dynamic_sampling:
            return collected < method.num_rollouts
        if rounds >= MAX_SAMPLING_ROUNDS * math.ceil(method.num_rollouts / method.chunk_size):
            return False
        return any_process(self.accelerator, collected < method.num_rollouts)

    def sample_chunk(self, n: int, component_metrics: dict[str, list[float]]) -> SampledChunk:
        """Generate and score `n` samples: n / G prompts, each repeated G = num_generations times in a row.

        After a fault the loop goes on (the rollout is dropped by the caller): every process must make the same
        generate/forward calls, which gather parameters collectively under ZeRO-3 and FSDP.
        """
        method = self.config.method
        group = method.num_generations
        indices = [i for i in self.sampler.take(n // group) for _ in range(group)]
        reuse = self.reuse_sampled is True
        generation = self.generate(self.train_prompts.batch(indices), record_trunk=True, values=True)
        problem = None
        try:
            scores, dense = compute_scores(
                self.reward_fn, generation, self.tokenizer, self.config.train.reward_timeout_s
            )
        except NonFiniteRewardError as e:
            problem = str(e)
            scores, dense = torch.full((n,), math.nan), None
        # Combined rewards report their components (reward/<name>); average them over the chunks.
        for key, value in getattr(self.reward_fn, "last_metrics", {}).items():
            component_metrics.setdefault(key, []).append(float(value))
        if method.overlong_buffer:  # part of the reward from here on (dynamic sampling judges groups with it)
            mask = generation.response_mask
            penalty = overlong_penalty(
                mask.sum(-1), self.sampling.max_new_tokens, method.overlong_buffer, method.overlong_penalty
            )
            scores = scores + penalty
            dense = None if dense is None else dense + place_scores(penalty, mask).to(dense.dtype)
        batch = self.score(generation, from_sampling=reuse)
        critic = common.unwrapped_policy(self).value_head is not None
        gap = None if reuse else sampling_gap(generation, batch, critic)
        problem = problem or nonfinite(
            {"logprobs": batch.logprobs, "ref_logprobs": batch.ref_logprobs, "values": batch.values},
            batch.response_mask,
        )
        return SampledChunk(batch, scores, dense, gap, problem)

    def generate(self, batch: Any, record_trunk: bool = False, values: bool = False) -> Generation:
        return common.sample(self, batch, self.trunk if record_trunk else None, values)

    def replaying_trunk(self, trunk: Tensor | None) -> contextlib.AbstractContextManager:
        """Forwards inside skip the frozen trunk and use `trunk` (B, L, H), its recorded output, when there is one."""
        if self.trunk is None or trunk is None:
            return contextlib.nullcontext()
        return self.trunk.replay(trunk.to(self.accelerator.device))

    @torch.no_grad()
    def score(self, generation: Generation, from_sampling: bool = False) -> RolloutBatch:
        """Old log-probs and values from the policy (`from_sampling`: those the sampler recorded), reference
        log-probs, for the tokens just generated."""
        device = self.accelerator.device
        query_ids, query_mask = generation.prompt.input_ids.to(device), generation.prompt.attention_mask.to(device)
        response_ids, response_mask = generation.response_ids.to(device), generation.response_mask.to(device)
        # Under FSDP only the root's forward gathers the root's parameters; elsewhere the bare module avoids
        # DDP's per-forward buffer broadcast (a collective) outside the update.
        fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        policy = self.policy if fsdp else common.unwrapped_policy(self)
        args = (query_ids, query_mask, response_ids, response_mask)
        with self.replaying_trunk(generation.trunk):  # the hydra reference shares the trunk: replayed for both
            if from_sampling:
                logprobs = generation.logprobs.to(device)
                values = None if generation.values is None else generation.values.to(device)
            else:
                logprobs, values, _ = score_response(policy, *args, self.sampling)
            ref_logprobs = logprobs.clone()  # without a reference (no KL anywhere) the KL terms are exactly 0
            if self.reference is not None:
                with self.accelerator.autocast():  # the reference in the policy's precision, so KL starts at 0
                    ref = score_response(self.reference.forward_fn(), *args, self.sampling.for_reference())
                ref_logprobs = ref.logprobs
        width = query_ids.shape[1]
        trunk = (
            (None, None) if generation.trunk is None else (generation.trunk[:, :width], generation.trunk[:, width:])
        )

        # Separate tensors (not one shared zero tensor): safetensors refuses to save fields that share storage.
        def empty() -> Tensor:
            return torch.zeros_like(logprobs).cpu()

        return RolloutBatch(
            query_ids=query_ids.cpu(),
            query_mask=query_mask.cpu(),
            response_ids=response_ids.cpu(),
            response_mask=response_mask.float().cpu(),
            logprobs=logprobs.cpu(),
            ref_logprobs=ref_logprobs.cpu(),
            values=empty() if values is None else values.cpu(),  # critic-free methods have no values
            rewards=empty(),
            advantages=empty(),
            returns=empty(),
            scores=torch.zeros(len(query_ids)),
            query_trunk=trunk[0],
            response_trunk=trunk[1],
        )

    # ------------------------------------------------------------------ optimisation
    def minibatches(self, rollout: RolloutBatch, skip: int = 0):
        """`ppo_epochs` passes over the rollout in shuffled minibatches of `train.batch_size`.

        The shuffle is seeded by (seed, iteration, epoch) so a resumed run sees the same minibatches; `skip`
        drops the first ones (trained on before the checkpoint a run resumed from).
        """
        size = self.config.train.batch_size
        index = 0
        for epoch in range(self.config.method.ppo_epochs):
            seed = self.config.train.seed * 1_000_003 + self.iteration * 101 + epoch
            order = torch.randperm(len(rollout), generator=torch.Generator().manual_seed(seed))
            for start in range(0, len(rollout), size):
                if index >= skip:
                    yield rollout.select(order[start : start + size]).trimmed()
                index += 1

    def guarded_update(self, minibatch: RolloutBatch) -> dict[str, float]:
        """`update`, or no update (counted in faults/skipped_steps) when its loss or gradients are not finite."""
        return common.guarded(self, lambda: self.update(minibatch))

    def update(self, minibatch: RolloutBatch) -> dict[str, float]:
        """One optimizer step on the clipped policy loss (plus the value loss and the KL loss term, if any).

        The minibatch is split into `gradient_accumulation_steps` micro-batches whose gradients accumulate. Each
        micro-batch's terms are weighted by its share of what their reduction averages over (response tokens for
        token means, rows for the per-sequence and constant reductions of `method.loss_type`), so the step equals
        the one on the whole minibatch. Logged values are averaged over all processes.
        """
        mb = minibatch.to(self.accelerator.device)
        total_tokens = mb.response_mask.sum().clamp(min=1)

        def micro_loss(micro: RolloutBatch) -> tuple[Tensor, dict[str, float], float]:
            policy_term, value_term, stats = self.loss(micro)
            token_share = micro.response_mask.sum() / total_tokens
            policy_share = token_share if self.config.method.loss_type == "token_mean" else len(micro) / len(mb)
            return policy_term * policy_share + value_term * token_share, stats, token_share.item()

        micros = common.micro_batches(mb, self.accelerator.gradient_accumulation_steps)
        return common.accumulated_step(self, micros, micro_loss)

    def loss(self, mb: RolloutBatch) -> tuple[Tensor, Tensor, dict[str, float]]:
        """One (micro-)batch's policy terms (clipped surrogate + KL loss, reduced by `method.loss_type`), its
        value term (vf_coef * value loss, a token mean; 0 without a value head) and their statistics."""
        method = self.config.method
        mask = mb.response_mask
        with self.replaying_trunk(mb.trunk):
            scored = score_response(
                self.policy, mb.query_ids, mb.query_mask, mb.response_ids, mb.response_mask, self.sampling
            )
        reduce = {"loss_type": method.loss_type, "max_tokens": self.sampling.max_new_tokens}
        pg = policy_loss(
            scored.logprobs, mb.logprobs, mb.advantages, mask, method.cliprange, method.cliprange_high, **reduce
        )
        entropy = masked_mean(scored.entropy, mask)
        stats = {
            "policy/loss": pg.loss.item(),
            "policy/approx_kl": pg.approx_kl.item(),
            "policy/clipfrac": pg.clipfrac.item(),
            "policy/clip_low_frac": pg.clip_low_frac.item(),
            "policy/clip_high_frac": pg.clip_high_frac.item(),
            "policy/entropy": entropy.item(),
        }
        policy_term = pg.loss
        if method.kl_loss_coef > 0:
            kl_term = kl_loss(scored.logprobs, mb.ref_logprobs, mask, **reduce)
            policy_term = policy_term + method.kl_loss_coef * kl_term
            stats["policy/kl_loss"] = kl_term.item()
        value_term = torch.zeros((), device=policy_term.device)
        if scored.values is not None:
            vf = value_loss(scored.values, mb.values, mb.returns, mask, method.cliprange_value)
            value_term = method.vf_coef * vf.loss
            stats["value/loss"], stats["value/clipfrac"] = vf.loss.item(), vf.clipfrac.item()
        return policy_term, value_term, stats

    # ------------------------------------------------------------------ evaluation, logging, checkpoints
    def evaluate(self) -> dict[str, float]:
        """Mean reward and metric_fn results on the eval prompts (`trlx.trainers.common.evaluate`)."""
        return common.evaluate(self, self.config.method.chunk_size)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "iteration": self.iteration,
            "best_reward": self.best_reward if math.isfinite(self.best_reward) else None,
            "kl_controller": self.kl_ctl.state_dict(),
            "reward_moments": self.reward_moments.state_dict(),
            "first_rollout_std": self.first_rollout_std,
            "reuse_sampled": self.reuse_sampled,
            "faults": self.faults.state_dict(),
            "rollout": None
            if self.rollout is None
            else {"metrics": self.rollout_metrics, "minibatch_index": self.minibatch_index},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Counters and controllers from `state_dict()`; `trlx.checkpoint.load_trainer` restores the rest
        (weights, optimizer, and each process's RNG, prompt-sampler position and in-flight rollout)."""
        self.step, self.iteration = int(state["step"]), int(state["iteration"])
        self.best_reward = -math.inf if state["best_reward"] is None else float(state["best_reward"])
        self.kl_ctl.load_state_dict(state["kl_controller"])
        self.reward_moments.load_state_dict(state["reward_moments"])
        self.first_rollout_std = state.get("first_rollout_std")
        if self.reuse_sampled is None:  # still to be decided here: as the interrupted run decided it
            self.reuse_sampled = state.get("reuse_sampled")
        self.faults.load_state_dict(state["faults"])
        in_flight = state["rollout"]
        self.rollout_metrics = {} if in_flight is None else dict(in_flight["metrics"])
        self.minibatch_index = 0 if in_flight is None else int(in_flight["minibatch_index"])

    def generate_eval(self, prompts: PromptBatch) -> Generation:
        """Sample continuations of a PromptBatch as evaluation does (trlX's name; `self.eval_prompts.batch(...)`)."""
        return self.generate(prompts)

    # Shared with the offline loop as they are (trlx.trainers.common).
    log = common.log
    save = common.save
    resume = common.resume
    save_pretrained = common.save_pretrained
    model = property(common.unwrapped_policy)
