"""Critic-free advantage estimators: a baseline from the other samples instead of a learned value function.

Groups are G = `num_generations` consecutive rows that answer the same prompt (`trlx.trainers.online` lays them
out that way), so a (N,) score vector reshapes to (N / G, G).

    GRPO         A_i = (r_i - mean_g r) / (std_g r + eps)     Shao et al. 2024, "DeepSeekMath", section 4.1.2
                 Dr.GRPO drops the std division (Liu et al. 2025, "Understanding R1-Zero-Like Training");
                 `scale="batch"` divides by the std of the whole batch instead (as TRL's scale_rewards=batch).
    RLOO         A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_g r)
                 Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization", eq. 6.
    REINFORCE++  A_t = whiten_batch(sum_{s >= t} gamma^(s - t) r_s) with the KL penalty in the per-token r_s
                 Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large Language Models".

Sequence-level advantages apply to every response token (`broadcast_to_tokens`).
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from trlx.algorithms.gae import compute_gae

GroupScale = Literal["group", "batch", "none"]
GROUP_SCALES: tuple[str, ...] = get_args(GroupScale)
# Keeps a group whose rewards are all equal at advantage 0 instead of 0 / 0 (TRL and OpenRLHF use 1e-4 too).
STD_EPS = 1e-4


def grouped(scores: Tensor, group_size: int) -> Tensor:
    """(N,) scores as (N / G, G), one row per prompt; refuses an N that G does not divide."""
    if scores.dim() != 1 or group_size < 1 or scores.shape[0] % group_size:
        raise ValueError(f"{tuple(scores.shape)} scores do not split into groups of {group_size}")
    return scores.view(-1, group_size)


def group_std(scores: Tensor, group_size: int) -> Tensor:
    """(N / G,) unbiased std of each group's scores (0 for a group of one)."""
    groups = grouped(scores, group_size)
    if group_size == 1:
        return torch.zeros(groups.shape[0], dtype=scores.dtype, device=scores.device)
    return groups.std(dim=1)


def grpo_advantages(
    scores: Tensor, group_size: int, scale: GroupScale = "group", batch_std: float | None = None
) -> Tensor:
    """GRPO's group-relative advantage of each sample.

    Args:
        scores: (N,) float sequence rewards, G = `group_size` consecutive rows per prompt.
        group_size: G >= 1. A group of one has advantage 0 (it is its own baseline).
        scale: "group" divides by each group's std (+ eps), "batch" by `batch_std` (+ eps), "none" not at all.
        batch_std: the std of all N scores (across processes), needed for scale="batch".

    Returns:
        (N,) float advantages; 0 for every member of a group whose rewards are all equal.
    """
    if scale not in GROUP_SCALES:
        raise ValueError(f"grpo_advantages: scale must be one of {list(GROUP_SCALES)}, got {scale!r}")
    groups = grouped(scores, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (group_std(scores, group_size)[:, None] + STD_EPS)
    elif scale == "batch":
        if batch_std is None:
            raise ValueError("grpo_advantages: scale='batch' needs batch_std")
        centred = centred / (batch_std + STD_EPS)
    return centred.reshape(-1)


def rloo_advantages(scores: Tensor, group_size: int) -> Tensor:
    """REINFORCE leave-one-out: each sample's reward minus the mean reward of the other G - 1 in its group.

    Args:
        scores: (N,) float sequence rewards, G = `group_size` consecutive rows per prompt.
        group_size: G >= 2 (with one sample there is no other to form the baseline).

    Returns:
        (N,) float advantages (unscaled; the group's advantages sum to 0).
    """
    if group_size < 2:
        raise ValueError(f"rloo_advantages: needs at least 2 samples per group, got {group_size}")
    groups = grouped(scores, group_size)
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).reshape(-1)


def discounted_returns(rewards: Tensor, mask: Tensor, gamma: float) -> Tensor:
    """REINFORCE++'s per-token return G_t = sum_{s >= t} gamma^(s - t) r_s over each row's valid tokens.

    This is GAE with no critic (V = 0) and lambda = 1, so padding is skipped exactly as `compute_gae` skips it.

    Args:
        rewards: (B, T) float per-token rewards (score on the last token minus the per-token KL penalty).
        mask: (B, T) float/bool with 1 on valid response tokens.
        gamma: discount factor in [0, 1].

    Returns:
        (B, T) float returns, 0 on padding. The caller whitens them over the global batch into advantages.
    """
    values = torch.zeros_like(rewards, dtype=torch.promote_types(rewards.dtype, torch.float32))
    return compute_gae(rewards, values, mask, gamma, 1.0)[1]


def broadcast_to_tokens(advantages: Tensor, mask: Tensor) -> Tensor:
    """(N,) sequence advantages on every valid token of (N, T) `mask`, 0 on padding."""
    return advantages[:, None].to(torch.float32) * mask.float()


def degenerate_groups(scores: Tensor, group_size: int, tol: float = 1e-6) -> Tensor:
    """(N / G,) bool: groups whose rewards are all equal, so their group-relative advantages carry no signal
    (DAPO's dynamic sampling drops them; Yu et al. 2025, "DAPO", section 3.2)."""
    groups = grouped(scores, group_size)
    return (groups.max(dim=1).values - groups.min(dim=1).values) <= tol


def overlong_penalty(lengths: Tensor, max_length: int, buffer: int, factor: float = 1.0) -> Tensor:
    """DAPO's soft overlong punishment (section 3.4, eq. 13), added to the reward of each sample.

        0                                      if |y| <= L_max - L_cache
        factor * ((L_max - L_cache) - |y|) / L_cache   if L_max - L_cache < |y| <= L_max

    (Responses never exceed L_max = max_new_tokens here: generation stops there, so the -1 branch is reached
    only at |y| = L_max.)

    Args:
        lengths: (N,) response lengths in tokens.
        max_length: L_max, the generation limit.
        buffer: L_cache > 0, the length of the ramp before L_max.
        factor: the penalty at |y| = L_max.

    Returns:
        (N,) float penalties <= 0.
    """
    if buffer <= 0 or buffer > max_length:
        raise ValueError(f"overlong_penalty: buffer must be in [1, {max_length}], got {buffer}")
    start = max_length - buffer
    over = (lengths.float() - start).clamp(min=0)
    return -factor * over / buffer
