"""Generalized Advantage Estimation (Schulman et al. 2016, "High-Dimensional Continuous Control Using
Generalized Advantage Estimation", eq. 16).

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
    A_t     = delta_t + gamma * lam * A_{t+1}          (A = 0 and V = 0 after the episode ends)
    R_t     = A_t + V(s_t)                            (the value-function target, a TD(lambda) return)
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """GAE advantages and returns for a batch of right-padded token trajectories.

    Each row is one episode whose actions are the valid response tokens; the episode ends after the last valid
    token, so the value after it bootstraps to 0 (the response is complete when the reward model scores it).
    Masked positions are skipped rather than treated as episode ends: the recursion carries V(s_{t+1}) and
    A_{t+1} across them unchanged, so a row's valid tokens form its trajectory in order whatever the padding
    layout (for the usual right padding this is exactly the textbook recursion).

    Args:
        rewards: (B, T) float per-token rewards.
        values: (B, T) float value estimates V(s_t) from the rollout (no gradient needed).
        mask: (B, T) float/bool with 1 on valid response tokens.
        gamma: discount factor in [0, 1].
        lam: GAE lambda in [0, 1]; 0 gives one-step TD errors, 1 gives Monte-Carlo returns minus values.

    Returns:
        (advantages, returns), both (B, T) float, 0 at masked positions. Not whitened: the caller whitens the
        advantages, possibly with statistics gathered across processes.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape or rewards.dim() != 2:
        raise ValueError(
            f"compute_gae: rewards, values and mask must share one (B, T) shape, got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}"
        )
    valid = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    rewards = torch.where(valid, rewards.to(values.dtype), zero)
    values = torch.where(valid, values, zero)

    batch_size, length = values.shape
    advantages = torch.zeros_like(values)
    next_value = torch.zeros(batch_size, dtype=values.dtype, device=values.device)
    next_advantage = torch.zeros_like(next_value)
    # A reverse scan: A_t depends on A_{t+1}, so T is inherently sequential; B is vectorised.
    for t in reversed(range(length)):
        valid_t = valid[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage_t = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(valid_t, advantage_t, zero)
        next_value = torch.where(valid_t, values[:, t], next_value)
        next_advantage = torch.where(valid_t, advantage_t, next_advantage)

    returns = torch.where(valid, advantages + values, zero)
    return advantages, returns
