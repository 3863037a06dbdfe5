"""PPO for language models (Ziegler et al. 2019), as one loop you can read top to bottom.

    learn():  evaluate → repeat { collect_rollout → ppo_epochs × minibatch updates → log / eval / checkpoint
              → KL controller update } → final eval and checkpoint

The RL math lives in `trlx.algorithms` (pure functions); this file only moves tensors between them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import Tensor
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trlx.algorithms.gae import compute_gae
from trlx.algorithms.kl import kl_penalty, make_kl_controller
from trlx.algorithms.ppo import entropy_from_logits, policy_loss, value_loss
from trlx.algorithms.rewards import scale_scores, shape_rewards
from trlx.algorithms.stats import RunningMoments, explained_variance, masked_mean, masked_whiten
from trlx.checkpoint import checkpoint_name, save_checkpoint
from trlx.config import TRLConfig
from trlx.data.prompts import PromptPipeline, PromptSampler
from trlx.distributed import global_mean, global_moments
from trlx.logging import MetricsLogger, progress_bar, progress_enabled
from trlx.models.policy import PolicyWithValueHead
from trlx.rewards.scoring import call_with_accepted_kwargs, compute_scores, reward_kwargs
from trlx.rollout.generation import generate, generation_config
from trlx.rollout.scoring import reference_forward, score_response
from trlx.types import Generation, RolloutBatch

MetricFn = Callable[..., dict[str, Any]]


class PPOTrainer:
    """Owns the policy, the frozen reference, the reward function and the loop that ties them together."""

    def __init__(
        self,
        config: TRLConfig,
        policy: PolicyWithValueHead,
        reference: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        reward_fn: Callable[..., Any],
        train_prompts: PromptPipeline,
        eval_prompts: PromptPipeline | None = None,
        metric_fn: MetricFn | None = None,
        stop_sequences: Sequence[str] = (),
        accelerator: Accelerator | None = None,
    ) -> None:
        from trlx.trainers.optim import make_optimizer, make_scheduler

        self.config = config
        self.accelerator = accelerator or Accelerator()
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.metric_fn = metric_fn
        self.stop_sequences = list(stop_sequences)
        self.train_prompts, self.eval_prompts = train_prompts, eval_prompts

        optimizer = make_optimizer(config.optimizer, policy.parameters())
        scheduler = make_scheduler(config.scheduler, optimizer)
        self.policy, self.optimizer, self.scheduler = self.accelerator.prepare(policy, optimizer, scheduler)
        self.reference = reference.to(self.accelerator.device)

        method = config.method
        self.gen_config = generation_config(tokenizer, method.gen_kwargs)
        self.temperature = float(self.gen_config.temperature or 1.0)
        self.kl_ctl = make_kl_controller(method.init_kl_coef, method.target, method.horizon)
        self.reward_moments = RunningMoments()
        self.sampler = PromptSampler(len(train_prompts), seed=config.train.seed)
        self.step = 0
        self.iteration = 0
        self.best_reward = -math.inf
        self.checkpoint_dir = Path(config.train.checkpoint_dir)
        self.logger: MetricsLogger | None = None
        if self.accelerator.is_main_process:
            tb_dir = None
            if config.train.tracker == "tensorboard":
                tb_dir = config.train.logging_dir or self.checkpoint_dir / "tensorboard"
            self.logger = MetricsLogger(self.checkpoint_dir, tb_dir)

    # ------------------------------------------------------------------ the loop
    def learn(self) -> None:
        train = self.config.train
        bar = progress_bar(train.total_steps, self.step, progress_enabled(train.progress_bar) and self.is_main)
        if self.eval_prompts is not None and self.step == 0:
            self.evaluate()
        while not self.done:
            rollout, rollout_metrics = self.collect_rollout()
            for minibatch in self.minibatches(rollout):
                t0 = time.perf_counter()
                update_metrics = self.update(minibatch)
                self.step += 1
                row = {"step": self.step, **rollout_metrics, **update_metrics}
                row["time/optimize_s"] = time.perf_counter() - t0
                self.log(row)
                bar.update(1)
                bar.set_postfix(reward=f"{rollout_metrics['reward/mean']:.3f}", kl=f"{rollout_metrics['kl/mean']:.3f}")
                if self.step % train.eval_interval == 0:
                    self.evaluate()
                if self.step % train.checkpoint_interval == 0:
                    self.save(self.checkpoint_dir / checkpoint_name(self.step))
                if self.done:
                    break
            self.kl_ctl.update(rollout_metrics["kl/mean"], n_steps=len(rollout) * self.accelerator.num_processes)
            self.iteration += 1
        bar.close()
        if self.eval_prompts is not None and self.step % train.eval_interval != 0:
            self.evaluate()
        if self.step % train.checkpoint_interval != 0:
            self.save(self.checkpoint_dir / checkpoint_name(self.step))
        if self.logger is not None:
            self.logger.close()

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
        chunks, raw_scores, dense_scores = [], [], []
        collected = 0
        while collected < method.num_rollouts:
            n = min(method.chunk_size, method.num_rollouts - collected)
            generation = self.generate(self.train_prompts.batch(self.sampler.take(n)))
            scores, dense = compute_scores(self.reward_fn, generation, self.tokenizer)
            chunks.append(self.score(generation))
            raw_scores.append(scores)
            dense_scores.append(dense)
            collected += n
        rollout = concat_padded(chunks, self.tokenizer.pad_token_id)
        scores = torch.cat(raw_scores)
        dense = None if dense_scores[0] is None else pad_cat([d for d in dense_scores], rollout.response_ids.shape[1])
        mask = rollout.response_mask

        # Population variance: RunningMoments applies the n-1 correction itself (as trlX does).
        score_mean, score_var, score_count = global_moments(
            self.accelerator, scores, torch.ones_like(scores), unbiased=False
        )
        running_std = None
        if method.scale_reward == "running":
            _, running_std = self.reward_moments.update(score_mean.item(), score_var.item(), score_count.item())
        scaled = scale_scores(
            scores, method.scale_reward, running_std, method.ref_mean, method.ref_std, method.cliprange_reward
        )
        kl = kl_penalty(rollout.logprobs, rollout.ref_logprobs, method.kl_estimator) * mask
        if dense is not None:
            rewards = shape_rewards(torch.zeros_like(scaled), kl, mask, self.kl_ctl.value, dense_scores=dense)
        else:
            rewards = shape_rewards(scaled, kl, mask, self.kl_ctl.value)
        advantages, returns = compute_gae(rewards, rollout.values, mask, method.gamma, method.lam)
        if method.whiten_advantages:
            adv_mean, adv_var, _ = global_moments(self.accelerator, advantages, mask)
            advantages = masked_whiten(advantages, mask, mean=adv_mean, var=adv_var)
        rollout.rewards, rollout.advantages, rollout.returns, rollout.scores = rewards, advantages, returns, scaled

        metrics = {
            "reward/mean": score_mean.item(),
            "reward/std": score_var.clamp(min=0).sqrt().item(),
            "reward/scaled_mean": global_mean(self.accelerator, scaled),
            "kl/mean": global_mean(self.accelerator, kl.sum(-1)),
            "kl/per_token": global_moments(self.accelerator, kl, mask)[0].item(),
            "kl/coef": self.kl_ctl.value,
            "response/length_mean": global_mean(self.accelerator, mask.sum(-1).float()),
            "value/explained_variance": explained_variance(rollout.values, returns, mask).item(),
            "time/rollout_s": time.perf_counter() - t0,
        }
        return rollout, metrics

    def generate(self, batch: Any) -> Generation:
        lm = self.accelerator.unwrap_model(self.policy).lm
        return generate(lm, batch, self.tokenizer, self.gen_config, self.stop_sequences)

    @torch.no_grad()
    def score(self, generation: Generation) -> RolloutBatch:
        """Old log-probs and values from the policy, reference log-probs, for the tokens just generated."""
        device = self.accelerator.device
        query_ids, query_mask = generation.prompt.input_ids.to(device), generation.prompt.attention_mask.to(device)
        response_ids, response_mask = generation.response_ids.to(device), generation.response_mask.to(device)
        policy = self.accelerator.unwrap_model(self.policy)
        logprobs, values = score_response(policy, query_ids, query_mask, response_ids, response_mask, self.temperature)
        ref_logprobs, _ = score_response(
            reference_forward(self.reference), query_ids, query_mask, response_ids, response_mask, self.temperature
        )
        empty = torch.zeros_like(logprobs)
        return RolloutBatch(
            query_ids=query_ids.cpu(),
            query_mask=query_mask.cpu(),
            response_ids=response_ids.cpu(),
            response_mask=response_mask.float().cpu(),
            logprobs=logprobs.cpu(),
            ref_logprobs=ref_logprobs.cpu(),
            values=values.cpu(),
            rewards=empty.cpu(),
            advantages=empty.cpu(),
            returns=empty.cpu(),
            scores=torch.zeros(len(query_ids)),
        )

    # ------------------------------------------------------------------ optimisation
    def minibatches(self, rollout: RolloutBatch):
        """`ppo_epochs` passes over the rollout in shuffled minibatches of `train.batch_size`.

        The shuffle is seeded by (seed, iteration, epoch) so a resumed run sees the same minibatches.
        """
        size = self.config.train.batch_size
        for epoch in range(self.config.method.ppo_epochs):
            seed = self.config.train.seed * 1_000_003 + self.iteration * 101 + epoch
            order = torch.randperm(len(rollout), generator=torch.Generator().manual_seed(seed))
            for start in range(0, len(rollout), size):
                yield rollout.select(order[start : start + size])

    def update(self, minibatch: RolloutBatch) -> dict[str, float]:
        """One gradient step on the clipped policy loss plus the clipped value loss."""
        method = self.config.method
        mb = minibatch.to(self.accelerator.device)
        mask = mb.response_mask
        logits_holder: dict[str, Tensor] = {}

        def forward(input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
            logits, values = self.policy(input_ids, attention_mask, position_ids)
            logits_holder["logits"] = logits
            return logits, values

        logprobs, values = score_response(
            forward, mb.query_ids, mb.query_mask, mb.response_ids, mb.response_mask, self.temperature
        )
        pg = policy_loss(logprobs, mb.logprobs, mb.advantages, mask, method.cliprange)
        vf = value_loss(values, mb.values, mb.returns, mask, method.cliprange_value)
        loss = pg.loss + method.vf_coef * vf.loss

        self.optimizer.zero_grad()
        self.accelerator.backward(loss)
        grad_norm = math.nan
        if self.config.train.max_grad_norm is not None:
            grad_norm = float(
                self.accelerator.clip_grad_norm_(self.policy.parameters(), self.config.train.max_grad_norm)
            )
        self.optimizer.step()
        self.scheduler.step()

        with torch.no_grad():
            start = mb.query_ids.shape[1] - 1
            logits = logits_holder["logits"][:, start : start + mb.response_ids.shape[1]]
            entropy = masked_mean(entropy_from_logits(logits.float() / self.temperature), mask)
        return {
            "loss/total": loss.item(),
            "policy/loss": pg.loss.item(),
            "policy/approx_kl": pg.approx_kl.item(),
            "policy/clipfrac": pg.clipfrac.item(),
            "policy/entropy": entropy.item(),
            "value/loss": vf.loss.item(),
            "value/clipfrac": vf.clipfrac.item(),
            "optim/grad_norm": grad_norm,
            "optim/lr": self.scheduler.get_last_lr()[0],
        }

    # ------------------------------------------------------------------ evaluation, logging, checkpoints
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean reward and metric_fn results on the eval prompts, with the same sampling noise every time.

        A forked RNG with a fixed seed makes evaluations comparable across steps without disturbing the
        training RNG stream (so resume stays exact).
        """
        assert self.eval_prompts is not None
        devices = [self.accelerator.device] if self.accelerator.device.type == "cuda" else []
        scores, rows, metric_values = [], [], {}
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.config.train.seed + self.accelerator.process_index)
            chunk = self.config.method.chunk_size
            for start in range(0, len(self.eval_prompts), chunk):
                indices = range(start, min(start + chunk, len(self.eval_prompts)))
                generation = self.generate(self.eval_prompts.batch(list(indices)))
                batch_scores, _ = compute_scores(self.reward_fn, generation, self.tokenizer)
                scores.append(batch_scores)
                rows += [
                    {"prompt": p, "output": o, "reward": float(s)}
                    for p, o, s in zip(generation.prompt.prompts, generation.outputs, batch_scores)
                ]
                if self.metric_fn is not None:
                    kwargs = reward_kwargs(generation, self.tokenizer)
                    for key, value in call_with_accepted_kwargs(self.metric_fn, **kwargs).items():
                        metric_values.setdefault(key, []).extend(value if isinstance(value, list) else [value])
        all_scores = torch.cat(scores)
        metrics = {"eval/reward_mean": global_mean(self.accelerator, all_scores)}
        metrics["eval/reward_std"] = (
            global_moments(self.accelerator, all_scores, torch.ones_like(all_scores))[1].sqrt().item()
        )
        for key, values in metric_values.items():
            metrics[f"eval/{key}"] = global_mean(self.accelerator, torch.tensor(values, dtype=torch.float64))
        self.log({"step": self.step, **metrics})
        if self.logger is not None:
            self.logger.log_samples(self.step, rows)
        if self.config.train.save_best and metrics["eval/reward_mean"] > self.best_reward:
            self.best_reward = metrics["eval/reward_mean"]
            self.save(self.checkpoint_dir / "best_checkpoint")
        return metrics

    def log(self, row: dict[str, Any]) -> None:
        if self.logger is not None:
            self.logger.log(row)

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "iteration": self.iteration,
            "best_reward": self.best_reward if math.isfinite(self.best_reward) else None,
            "kl_controller": self.kl_ctl.state_dict(),
            "reward_moments": self.reward_moments.state_dict(),
            "sampler": self.sampler.state_dict(),
        }

    def save(self, dest: Path) -> None:
        self.accelerator.wait_for_everyone()
        if self.is_main:
            policy = self.accelerator.unwrap_model(self.policy)
            save_checkpoint(dest, policy, self.tokenizer, self.state_dict(), self.config.to_dict())
        self.accelerator.wait_for_everyone()


def concat_padded(chunks: list[RolloutBatch], pad_id: int) -> RolloutBatch:
    """Concatenate rollout chunks whose prompts (left-padded) and responses (right-padded) differ in length."""
    if len(chunks) == 1:
        return chunks[0]
    p = max(c.query_ids.shape[1] for c in chunks)
    r = max(c.response_ids.shape[1] for c in chunks)

    def left(t: Tensor, value: float) -> Tensor:
        return torch.nn.functional.pad(t, (p - t.shape[1], 0), value=value)

    def right(t: Tensor, value: float = 0.0) -> Tensor:
        return torch.nn.functional.pad(t, (0, r - t.shape[1]), value=value)

    return RolloutBatch(
        query_ids=torch.cat([left(c.query_ids, pad_id) for c in chunks]),
        query_mask=torch.cat([left(c.query_mask, 0) for c in chunks]),
        response_ids=torch.cat([right(c.response_ids, pad_id) for c in chunks]),
        response_mask=torch.cat([right(c.response_mask) for c in chunks]),
        logprobs=torch.cat([right(c.logprobs) for c in chunks]),
        ref_logprobs=torch.cat([right(c.ref_logprobs) for c in chunks]),
        values=torch.cat([right(c.values) for c in chunks]),
        rewards=torch.cat([right(c.rewards) for c in chunks]),
        advantages=torch.cat([right(c.advantages) for c in chunks]),
        returns=torch.cat([right(c.returns) for c in chunks]),
        scores=torch.cat([c.scores for c in chunks]),
    )


def pad_cat(tensors: list[Tensor], width: int) -> Tensor:
    """Right-pad (B_i, R_i) tensors with zeros to (B_i, width) and stack them into (sum B_i, width)."""
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors])
