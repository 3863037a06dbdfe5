"""PPO losses (Schulman et al. 2017, "Proximal Policy Optimization Algorithms") and token log-prob helpers.

All losses are token-level masked means over the valid response tokens of a minibatch, as in trlX.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from trlx.algorithms.stats import masked_mean


class PolicyLossOutput(NamedTuple):
    """Scalars from `policy_loss`. Only `loss` carries gradient."""

    loss: Tensor
    approx_kl: Tensor  # k3 estimate of KL(old || new) per token, for logging/early stopping
    clipfrac: Tensor  # fraction of valid tokens where the clipped branch of the objective is active


class ValueLossOutput(NamedTuple):
    """Scalars from `value_loss`. Only `loss` carries gradient."""

    loss: Tensor
    clipfrac: Tensor  # fraction of valid tokens where the clipped value prediction gives the larger loss


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, cliprange: float
) -> PolicyLossOutput:
    """Clipped surrogate objective, PPO paper eq. 7, negated into a loss:

        L = mean_t max(-A_t * r_t, -A_t * clip(r_t, 1 - eps, 1 + eps)),   r_t = exp(logprobs - old_logprobs)

    Args:
        logprobs: (B, T) float log-probs of the sampled tokens under the current policy (with gradient).
        old_logprobs: (B, T) float log-probs of the same tokens under the rollout policy.
        advantages: (B, T) float (usually whitened) advantages.
        mask: (B, T) float/bool with 1 on valid response tokens.
        cliprange: epsilon in eq. 7, e.g. 0.2.

    Returns:
        PolicyLossOutput(loss, approx_kl, clipfrac), all scalars. `approx_kl` is the k3 estimator
        mean((r - 1) - log r) (Schulman 2020, "Approximating KL Divergence"), which is unbiased and never negative;
        `clipfrac` follows trlX: the fraction of tokens where the clipped term is strictly larger.
    """
    # Zero the log-ratio on padding before exp: padded logprobs can be -inf, and exp(inf) would leak nan/inf into
    # the gradient through the masked mean.
    logratio = torch.where(
        mask.bool(), logprobs - old_logprobs, torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    )
    ratio = torch.exp(logratio)
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(pg_loss1, pg_loss2), mask)
    with torch.no_grad():
        approx_kl = masked_mean((ratio - 1.0) - logratio, mask)
        clipfrac = masked_mean((pg_loss2 > pg_loss1).to(logprobs.dtype), mask)
    return PolicyLossOutput(loss=loss, approx_kl=approx_kl, clipfrac=clipfrac)


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, cliprange_value: float
) -> ValueLossOutput:
    """Clipped value loss as in trlX / OpenAI baselines:

        L = 0.5 * mean_t max((V_t - R_t)^2, (clip(V_t, V_old - c, V_old + c) - R_t)^2)

    Clipping the prediction around the rollout value keeps the value head from moving far in one update, the
    value-side analogue of the policy ratio clip.

    Args:
        values: (B, T) float current value predictions (with gradient).
        old_values: (B, T) float value predictions recorded at rollout time.
        returns: (B, T) float GAE returns (targets).
        mask: (B, T) float/bool with 1 on valid response tokens.
        cliprange_value: c above, in value units.

    Returns:
        ValueLossOutput(loss, clipfrac), scalars.
    """
    # Padding is zeroed first: masking only the mean would still send NaN * 0 = NaN into the gradient of a padded
    # NaN value, through (values - returns) ** 2.
    valid = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    values, old_values, returns = (torch.where(valid, t, zero) for t in (values, old_values, returns))
    values_clipped = torch.clamp(values, old_values - cliprange_value, old_values + cliprange_value)
    vf_loss1 = (values - returns) ** 2
    vf_loss2 = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_loss1, vf_loss2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((vf_loss2 > vf_loss1).to(values.dtype), mask)
    return ValueLossOutput(loss=loss, clipfrac=clipfrac)


def logprobs_of_labels(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[label] for every position, without keeping a (B, T, V) log-softmax tensor alive.

    For float32/float64 logits this is `logits[label] - logsumexp(logits)`: autograd then saves only the logits
    (already alive) and a (B, T) result instead of a second (B, T, V) log-softmax output, which matters when V is
    50k-150k. Half-precision logits lose too much accuracy in logsumexp, so they are upcast to float32 one row at a
    time, bounding the extra memory to one (T, V) float32 slice.

    Args:
        logits: (B, T, V) float, where logits[:, t] predicts labels[:, t] (the caller does the one-token shift).
        labels: (B, T) long token ids.

    Returns:
        (B, T) log-probs; float32 for half-precision logits, otherwise the logits' dtype.
    """
    labels = labels.unsqueeze(-1)
    if logits.dtype in (torch.float32, torch.float64):
        picked = torch.gather(logits, dim=-1, index=labels).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    rows = []
    for row_logits, row_labels in zip(logits, labels, strict=True):
        row_logprobs = torch.log_softmax(row_logits.float(), dim=-1)
        rows.append(torch.gather(row_logprobs, dim=-1, index=row_labels).squeeze(-1))
    return torch.stack(rows)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at every position.

    Uses H = logsumexp(x) - sum_v softmax(x)_v * x_v, which equals -sum p log p without taking log of
    probabilities that underflow to 0. Tokens at -inf (outside a top-k/top-p cut) contribute 0, not 0 * -inf.

    Args:
        logits: (B, T, V) float.

    Returns:
        (B, T) float entropies in nats.
    """
    probs = torch.softmax(logits, dim=-1)
    weighted = torch.where(probs > 0, probs * logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    return torch.logsumexp(logits, dim=-1) - weighted.sum(dim=-1)
