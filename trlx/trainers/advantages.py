"""Rollout step 3 for every online method: from scaled scores and per-token KL to per-token advantages.

This is the one place where the methods differ before the loss; each branch names its estimator in
`trlx.algorithms`. Statistics that span the batch (whitening, the batch std) are gathered across processes;
group statistics need no communication because a group's rows never leave their process.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from accelerate import Accelerator
from torch import Tensor

from trlx.algorithms.advantages import (
    broadcast_to_tokens,
    degenerate_groups,
    discounted_returns,
    group_std,
    grpo_advantages,
    rloo_advantages,
)
from trlx.algorithms.gae import compute_gae
from trlx.algorithms.rewards import shape_rewards
from trlx.algorithms.stats import masked_whiten
from trlx.config import PPOConfig
from trlx.distributed import global_explained_variance, global_mean, global_moments


class Advantages(NamedTuple):
    """Per-token tensors, (B, R) each, 0 on padding."""

    rewards: Tensor  # scaled score on the last token (or dense scores) minus kl_coef * KL
    advantages: Tensor  # what the policy loss multiplies the ratio by
    returns: Tensor  # value targets (ppo); the discounted returns (reinforce_pp); 0 for grpo and rloo
    metrics: dict[str, float]


def estimate_advantages(
    method: PPOConfig,
    accelerator: Accelerator,
    token_scores: Tensor,
    kl: Tensor,
    mask: Tensor,
    values: Tensor,
    kl_coef: float,
) -> Advantages:
    """Advantages of one rollout for `method.name`.

    Args:
        token_scores: (B, R) scaled scores (on the last token, or dense).
        kl: (B, R) per-token KL estimates to the reference, 0 on padding.
        mask: (B, R) float, 1 on response tokens.
        values: (B, R) the value head's estimates at rollout time (ppo; zeros otherwise).
        kl_coef: the current KL coefficient in the reward.
    """
    rewards = shape_rewards(token_scores, kl, mask, kl_coef)
    metrics: dict[str, float] = {}
    if method.name == "ppo":
        advantages, returns = compute_gae(rewards, values, mask, method.gamma, method.lam)
        metrics["value/explained_variance"] = global_explained_variance(accelerator, values, returns, mask)
        if method.whiten_advantages:
            advantages = whiten(accelerator, advantages, mask)
    elif method.name == "reinforce_pp":
        returns = discounted_returns(rewards, mask, method.gamma)
        advantages = whiten(accelerator, returns, mask)
    else:
        # The sequence reward of the group methods: its score minus the KL penalty summed over its tokens.
        sequence_rewards = (rewards * mask).sum(-1)
        group = method.num_generations
        if method.name == "grpo":
            batch_std = None
            if method.scale_rewards == "batch":
                _, var, _ = global_moments(accelerator, sequence_rewards, torch.ones_like(sequence_rewards))
                batch_std = var.clamp(min=0).sqrt().item()
            sequence_advantages = grpo_advantages(sequence_rewards, group, method.scale_rewards, batch_std)
        else:
            sequence_advantages = rloo_advantages(sequence_rewards, group)
        advantages = broadcast_to_tokens(sequence_advantages, mask)
        returns = torch.zeros_like(advantages)
    return Advantages(rewards, advantages, returns, metrics)


def whiten(accelerator: Accelerator, x: Tensor, mask: Tensor) -> Tensor:
    """`x` whitened over the valid tokens of every process's rollout."""
    mean, var, _ = global_moments(accelerator, x, mask)
    return masked_whiten(x, mask, mean=mean, var=var)


def group_metrics(accelerator: Accelerator, scores: Tensor, group_size: int) -> dict[str, float]:
    """How much signal the groups carry: the mean within-group std of the reward function's (B,) scores, and the
    share of groups whose scores are all equal (their group-relative advantages are 0)."""
    return {
        "reward/group_std_mean": global_mean(accelerator, group_std(scores, group_size)),
        "groups/zero_std_fraction": global_mean(accelerator, degenerate_groups(scores, group_size).double()),
    }
