"""Reward-model score scaling and per-token reward shaping for RLHF (Ziegler et al. 2019, eq. 2):

R(x, y)_t = -beta * KL_t  +  [t is the last response token] * score(x, y)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

ScaleMode = Literal["ignored", "running", "ref"]
SCALE_MODES: tuple[str | None, ...] = (None, "ignored", "running", "ref")


def scale_scores(
    scores: Tensor,
    mode: ScaleMode | None,
    running_std: float | None,
    ref_mean: float | None,
    ref_std: float | None,
    cliprange_reward: float | None,
) -> Tensor:
    """Normalise and clip sequence-level reward-model scores (trlX `scale_reward` / `cliprange_reward`).

    Order: subtract `ref_mean` (if given), divide by the chosen std, then clip. Clipping last makes
    `cliprange_reward` a bound in the units the policy actually sees. (trlX <= 0.6 scaled then clipped; later trlX
    clips the raw scores before scaling.)

    Args:
        scores: (B,) float scores.
        mode: None/"ignored" (no division), "running" (divide by `running_std`, the std of all scores seen so far),
            "ref" (divide by `ref_std`, the std of the first rollout's scores).
        running_std: required for mode "running".
        ref_mean: subtracted first when not None.
        ref_std: required for mode "ref".
        cliprange_reward: clamp to [-c, c] when given and > 0.

    Returns:
        (B,) float scaled scores (a new tensor; `scores` is not modified).
    """
    if mode not in SCALE_MODES:
        raise ValueError(f"scale_scores: mode must be one of {list(SCALE_MODES)}, got {mode!r}")
    if ref_mean is not None:
        scores = scores - ref_mean
    if mode == "running":
        if running_std is None:
            raise ValueError("scale_scores: mode 'running' needs running_std")
        scores = scores / running_std
    elif mode == "ref":
        if ref_std is None:
            raise ValueError("scale_scores: mode 'ref' needs ref_std")
        scores = scores / ref_std
    if cliprange_reward is not None and cliprange_reward > 0:
        scores = torch.clamp(scores, -cliprange_reward, cliprange_reward)
    return scores


def last_valid_index(mask: Tensor) -> Tensor:
    """Index of the last valid token in each row.

    Args:
        mask: (B, T) float/bool with 1 on valid tokens.

    Returns:
        (B,) long; -1 for rows without a valid token.
    """
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=-1).values


def shape_rewards(
    scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float, dense_scores: Tensor | None = None
) -> Tensor:
    """Per-token rewards: a KL penalty on every valid token plus the sequence score on the last one.

    The score goes on the last valid token because the reward model judges the finished response; GAE then
    propagates it back to earlier tokens.

    Args:
        scores: (B,) float sequence scores (already scaled/clipped). Pass zeros when only `dense_scores` apply.
        kl: (B, T) float per-token KL estimates (see `kl_penalty`).
        mask: (B, T) float/bool with 1 on valid response tokens.
        kl_coef: beta, the KL penalty coefficient.
        dense_scores: optional (B, T) float per-token scores, added on valid tokens.

    Returns:
        (B, T) float rewards, 0 at masked positions.

    Raises:
        ValueError: if a row has no valid token (there is nowhere to put its score).
    """
    valid = mask.bool()
    last = last_valid_index(mask)
    empty_rows = (last < 0).nonzero().flatten().tolist()
    if empty_rows:
        raise ValueError(f"shape_rewards: rows {empty_rows} have no valid response tokens")
    zero = torch.zeros((), dtype=kl.dtype, device=kl.device)
    rewards = torch.where(valid, -kl_coef * kl, zero)
    rewards = rewards.scatter_add(1, last.unsqueeze(1), scores.to(kl.dtype).unsqueeze(1))
    if dense_scores is not None:
        rewards = rewards + torch.where(valid, dense_scores.to(kl.dtype), zero)
    return rewards
