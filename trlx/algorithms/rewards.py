"""Reward-model score scaling and per-token reward shaping for RLHF (Ziegler et al. 2019, eq. 2):

R(x, y)_t = -beta * KL_t  +  s_t,     s_t = the score on the last response token (scalar rewards), or the
                                       reward function's per-token scores (dense rewards)

Scalar scores are first placed on the last token (`place_scores`), so scalar and dense rewards then take one
path: `scale_token_scores` (ref_mean, std, clip) and `shape_rewards` (KL penalty).
"""

from __future__ import annotations

import torch
from torch import Tensor


def last_valid_index(mask: Tensor) -> Tensor:
    """Index of the last valid token in each row.

    Args:
        mask: (B, T) float/bool with 1 on valid tokens.

    Returns:
        (B,) long; -1 for rows without a valid token.
    """
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=-1).values


def place_scores(scores: Tensor, mask: Tensor) -> Tensor:
    """Per-token scores with each sequence's score on its last valid token and 0 elsewhere.

    The score goes on the last valid token because the reward model judges the finished response; GAE then
    propagates it back to earlier tokens.

    Args:
        scores: (B,) float sequence scores.
        mask: (B, T) float/bool with 1 on valid response tokens.

    Returns:
        (B, T) float (the scores' dtype).

    Raises:
        ValueError: if a row has no valid token (there is nowhere to put its score).
    """
    last = last_valid_index(mask)
    empty_rows = (last < 0).nonzero().flatten().tolist()
    if empty_rows:
        raise ValueError(f"place_scores: rows {empty_rows} have no valid response tokens")
    placed = torch.zeros(mask.shape, dtype=scores.dtype, device=scores.device)
    return placed.scatter(1, last.unsqueeze(1), scores.unsqueeze(1))


def scale_token_scores(
    token_scores: Tensor,
    mask: Tensor,
    ref_mean: float | None,
    std: float | None,
    cliprange_reward: float | None,
) -> Tensor:
    """Normalise and clip per-token scores (trlX `scale_reward` / `cliprange_reward`), scalar or dense alike.

    Order: subtract `ref_mean` on the last valid token (so each sequence's total score s = sum_t s_t drops by
    ref_mean), divide every token by `std`, then clip every token to [-c, c]. For a scalar score, which sits on
    the last token alone, this is exactly (s - ref_mean) / std clipped. Clipping last makes `cliprange_reward`
    a bound in the units the policy actually sees. (trlX <= 0.6 scaled then clipped; later trlX clips the raw
    scores before scaling.)

    Args:
        token_scores: (B, T) float, e.g. `place_scores(scores, mask)` or a dense reward.
        mask: (B, T) float/bool with 1 on valid response tokens.
        ref_mean: subtracted when not None.
        std: divides when not None: the running std of all sequence scores so far (`scale_reward=running`) or
            the reference std (`scale_reward=ref`); the caller chooses.
        cliprange_reward: clamp to [-c, c] when given and > 0.

    Returns:
        (B, T) float, 0 on padding (a new tensor; the input is not modified).
    """
    x = token_scores
    if ref_mean is not None:
        x = x - ref_mean * place_scores(torch.ones(len(x), dtype=x.dtype, device=x.device), mask)
    if std is not None:
        x = x / std
    if cliprange_reward is not None and cliprange_reward > 0:
        x = torch.clamp(x, -cliprange_reward, cliprange_reward)
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def shape_rewards(token_scores: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """Per-token rewards: the (scaled) per-token scores minus the KL penalty, on valid tokens.

    Args:
        token_scores: (B, T) float scores per token (see `place_scores`, `scale_token_scores`).
        kl: (B, T) float per-token KL estimates (see `kl_penalty`).
        mask: (B, T) float/bool with 1 on valid response tokens.
        kl_coef: beta, the KL penalty coefficient.

    Returns:
        (B, T) float rewards, 0 at masked positions (padding may hold anything, even NaN).
    """
    zero = torch.zeros((), dtype=kl.dtype, device=kl.device)
    return torch.where(mask.bool(), token_scores.to(kl.dtype) - kl_coef * kl, zero)
