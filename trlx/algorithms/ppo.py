"""PPO losses (Schulman et al. 2017, "Proximal Policy Optimization Algorithms") and token log-prob helpers.

The policy loss is aggregated over tokens as `loss_type` says (`aggregate_loss`); the value loss is always the
token-level masked mean over the valid response tokens of a minibatch, as in trlX.
"""

from __future__ import annotations

from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from trlx.algorithms.kl import kl_penalty
from trlx.algorithms.stats import masked_mean

LossType = Literal["token_mean", "sequence_mean", "constant"]
LOSS_TYPES: tuple[str, ...] = get_args(LossType)


def aggregate_loss(per_token: Tensor, mask: Tensor, loss_type: LossType, max_tokens: int | None = None) -> Tensor:
    """Reduce a (B, T) per-token loss to a scalar over the valid tokens.

        token_mean     sum_{i,t} l / sum_{i,t} 1          every token weighs the same (trlX, DAPO eq. 8)
        sequence_mean  mean_i (sum_t l / |y_i|)           every sequence weighs the same (GRPO, DeepSeekMath eq. 3)
        constant       sum_{i,t} l / (B * max_tokens)     no length bias at all (Dr.GRPO, Liu et al. 2025 eq. 2)

    Args:
        per_token: (B, T) float.
        mask: (B, T) float/bool with 1 on valid response tokens.
        loss_type: one of LOSS_TYPES.
        max_tokens: the constant normaliser per sequence for "constant" (the generation limit).

    Returns:
        A scalar. Rows without a valid token count as empty sequences (0) for sequence_mean and constant.
    """
    valid = mask.bool()
    summed = torch.where(valid, per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device))
    if loss_type == "token_mean":
        return summed.sum() / valid.sum().clamp(min=1)
    if loss_type == "sequence_mean":
        return (summed.sum(-1) / valid.sum(-1).clamp(min=1)).mean()
    if loss_type == "constant":
        if not max_tokens or max_tokens < 1:
            raise ValueError(f"aggregate_loss: loss_type='constant' needs a positive max_tokens, got {max_tokens}")
        return summed.sum() / (per_token.shape[0] * max_tokens)
    raise ValueError(f"aggregate_loss: loss_type must be one of {list(LOSS_TYPES)}, got {loss_type!r}")


class PolicyLossOutput(NamedTuple):
    """Scalars from `policy_loss`. Only `loss` carries gradient."""

    loss: Tensor
    approx_kl: Tensor  # k3 estimate of KL(old || new) per token, for logging/early stopping
    clipfrac: Tensor  # fraction of valid tokens where the clipped branch of the objective is active
    clip_low_frac: Tensor  # ... where A < 0 and the ratio fell below 1 - eps_low (its gradient is cut)
    clip_high_frac: Tensor  # ... where A > 0 and the ratio rose above 1 + eps_high


class ValueLossOutput(NamedTuple):
    """Scalars from `value_loss`. Only `loss` carries gradient."""

    loss: Tensor
    clipfrac: Tensor  # fraction of valid tokens where the clipped value prediction gives the larger loss


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    cliprange: float,
    cliprange_high: float | None = None,
    loss_type: LossType = "token_mean",
    max_tokens: int | None = None,
) -> PolicyLossOutput:
    """Clipped surrogate objective, PPO paper eq. 7, negated into a loss:

        L = agg_t max(-A_t * r_t, -A_t * clip(r_t, 1 - eps_low, 1 + eps_high)),   r_t = exp(logprobs - old_logprobs)

    with eps_low = `cliprange` and eps_high = `cliprange_high` (DAPO's clip-higher, Yu et al. 2025 section 3.1;
    None: the symmetric PPO clip) and `agg` the `loss_type` reduction (`aggregate_loss`).

    Args:
        logprobs: (B, T) float log-probs of the sampled tokens under the current policy (with gradient).
        old_logprobs: (B, T) float log-probs of the same tokens under the rollout policy.
        advantages: (B, T) float (usually whitened) advantages.
        mask: (B, T) float/bool with 1 on valid response tokens.
        cliprange: epsilon in eq. 7, e.g. 0.2 (the lower one when `cliprange_high` is given).
        cliprange_high: the upper epsilon, e.g. 0.28; None: `cliprange`.
        loss_type, max_tokens: how the per-token terms are reduced (`aggregate_loss`).

    Returns:
        PolicyLossOutput, all scalars; the statistics are token means whatever the loss_type. `approx_kl` is the k3 estimator
        mean((r - 1) - log r) (Schulman 2020, "Approximating KL Divergence"), which is unbiased and never negative;
        `clipfrac` follows trlX: the fraction of tokens where the clipped term is strictly larger.
    """
    # Zero the log-ratio on padding before exp: padded logprobs can be -inf, and exp(inf) would leak nan/inf into
    # the gradient through the masked mean.
    logratio = torch.where(
        mask.bool(), logprobs - old_logprobs, torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    )
    ratio = torch.exp(logratio)
    high = cliprange if cliprange_high is None else cliprange_high
    pg_loss1 = -advantages * ratio
    pg_loss2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + high)
    loss = aggregate_loss(torch.max(pg_loss1, pg_loss2), mask, loss_type, max_tokens)
    with torch.no_grad():
        dtype = logprobs.dtype
        approx_kl = masked_mean((ratio - 1.0) - logratio, mask)
        clipfrac = masked_mean((pg_loss2 > pg_loss1).to(dtype), mask)
        clip_low = masked_mean(((ratio < 1.0 - cliprange) & (advantages < 0)).to(dtype), mask)
        clip_high = masked_mean(((ratio > 1.0 + high) & (advantages > 0)).to(dtype), mask)
    return PolicyLossOutput(loss, approx_kl, clipfrac, clip_low, clip_high)


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


class _LogprobsAndEntropy(torch.autograd.Function):
    """Fused log softmax(x)[label] and entropy for float32/float64 logits (see `logprobs_and_entropy`)."""

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor, banned: Tensor | None) -> tuple[Tensor, Tensor]:
        # logsumexp by hand, so that its exp(x - max) is the one (B, T, V) buffer the entropy needs as well.
        # Banned tokens are -inf in that buffer only; the logits themselves are left as they are.
        if banned is None:
            peak = logits.amax(dim=-1, keepdim=True)  # (B, T, 1), finite: a row keeps at least its label's token
            unnormalised = logits - peak
        else:
            unnormalised = logits.masked_fill(banned, float("-inf"))
            peak = unnormalised.amax(dim=-1, keepdim=True)
            unnormalised.sub_(peak)
        unnormalised.exp_()  # (B, T, V): softmax times `total`
        total = unnormalised.sum(dim=-1, keepdim=True)  # (B, T, 1)
        lse = (peak + total.log()).squeeze(-1)  # (B, T)
        logprobs = torch.gather(logits, -1, labels[..., None]).squeeze(-1) - lse
        if banned is not None:  # a banned label has probability 0
            logprobs = logprobs.masked_fill(_at_labels(banned, logits, labels), float("-inf"))
        # H = lse - sum_v p_v x_v; nansum drops 0 * -inf from tokens cut by top-k/top-p.
        entropy = lse - unnormalised.mul_(logits).nansum(dim=-1) / total.squeeze(-1)
        del unnormalised
        ctx.save_for_backward(logits, lse, labels, banned)
        ctx.mark_non_differentiable(entropy)
        return logprobs, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logprobs: Tensor, _grad_entropy: Tensor | None) -> tuple[Tensor, None, None]:
        logits, lse, labels, banned = ctx.saved_tensors
        # d logprob_t / d x_tv = onehot(label_t)_v - softmax(x_t)_v, built in one (B, T, V) buffer.
        grad = (logits - lse[..., None]).exp_().mul_(-grad_logprobs[..., None])
        grad.scatter_add_(-1, labels[..., None], grad_logprobs[..., None])
        if banned is not None:  # banned logits do not reach the distribution: no gradient (as after masked_fill)
            grad.masked_fill_(banned, 0.0)
        return grad, None, None


def _at_labels(banned: Tensor, logits: Tensor, labels: Tensor) -> Tensor:
    """(B, T) bool: whether each label is banned. banned: broadcastable to logits' (B, T, V)."""
    return banned.expand(logits.shape).gather(-1, labels[..., None]).squeeze(-1)


def logprobs_and_entropy(logits: Tensor, labels: Tensor, banned: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """log softmax(logits)[label] and the entropy at every position, with one (B, T, V) buffer at a time.

    The entropy is a statistic (no gradient flows through it). For float32/float64 logits both come from one
    autograd Function: the forward needs one temporary (B, T, V) buffer (exp(x - max), shared by logsumexp and
    the entropy), autograd keeps only the logits (already alive in the graph) and (B, T) tensors, and the
    backward writes onehot - softmax straight into its one gradient buffer, instead of logsumexp's and gather's
    separate (B, T, V) gradients plus the softmax/product/where copies of a separate entropy pass. Half-precision logits lose too much accuracy in
    logsumexp, so they are upcast to float32 one row at a time, bounding the extra memory to one (T, V) slice.

    Entropy uses H = logsumexp(x) - sum_v softmax(x)_v x_v (no log of probabilities that underflow to 0); tokens at
    -inf (outside a top-k/top-p cut) contribute 0, not 0 * -inf.

    Args:
        logits: (B, T, V) float, where logits[:, t] predicts labels[:, t] (the caller does the one-token shift).
        labels: (B, T) long token ids.
        banned: bool, broadcastable to (B, T, V), or None: tokens taken out of the distribution, exactly as
            `logits.masked_fill(banned, -inf)` would (EOS before `min_new_tokens`), without that (B, T, V) copy
            in forward and its masked gradient in backward.

    Returns:
        (logprobs, entropy), each (B, T); float32 for half-precision logits, otherwise the logits' dtype.
    """
    if logits.dtype in (torch.float32, torch.float64):
        return _LogprobsAndEntropy.apply(logits, labels, banned)
    logprobs, entropies = [], []
    for i, (row_logits, row_labels) in enumerate(zip(logits, labels, strict=True)):
        row = row_logits.float()
        if banned is not None:
            row = row.masked_fill(banned.expand(logits.shape)[i], float("-inf"))
        logprobs.append(torch.log_softmax(row, dim=-1).gather(-1, row_labels[:, None]).squeeze(-1))
        with torch.no_grad():
            entropies.append(entropy_from_logits(row.detach()))
    return torch.stack(logprobs), torch.stack(entropies)


def logprobs_of_labels(logits: Tensor, labels: Tensor) -> Tensor:
    """log softmax(logits)[label] at every position: the first half of `logprobs_and_entropy`.

    Args:
        logits: (B, T, V) float, where logits[:, t] predicts labels[:, t].
        labels: (B, T) long token ids.

    Returns:
        (B, T) log-probs; float32 for half-precision logits, otherwise the logits' dtype.
    """
    return logprobs_and_entropy(logits, labels)[0]


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of the categorical distribution at every position.

    Uses H = logsumexp(x) - sum_v softmax(x)_v * x_v, which equals -sum p log p without taking log of
    probabilities that underflow to 0. Tokens at -inf (outside a top-k/top-p cut) contribute 0, not 0 * -inf.

    Args:
        logits: (..., V) float.

    Returns:
        (...) float entropies in nats.
    """
    probs = torch.softmax(logits, dim=-1)
    weighted = torch.where(probs > 0, probs * logits, torch.zeros((), dtype=logits.dtype, device=logits.device))
    return torch.logsumexp(logits, dim=-1) - weighted.sum(dim=-1)


def kl_loss(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    mask: Tensor,
    loss_type: LossType = "token_mean",
    max_tokens: int | None = None,
) -> Tensor:
    """GRPO's KL term (DeepSeekMath eq. 4): the k3 estimate of KL(policy || reference) per token, reduced like the
    policy loss. Its gradient, 1 - exp(ref - logp) per token, pulls each token's log-prob toward the reference's.

    Args:
        logprobs: (B, T) float current log-probs (with gradient).
        ref_logprobs: (B, T) float reference log-probs of the same tokens.
        mask: (B, T) float/bool with 1 on valid response tokens.
        loss_type, max_tokens: the reduction (`aggregate_loss`).

    Returns:
        A scalar >= 0.
    """
    # Both log-probs are zeroed on padding before exp, as in policy_loss, so no inf reaches the gradient.
    valid, zero = mask.bool(), torch.zeros((), dtype=logprobs.dtype, device=logprobs.device)
    per_token = kl_penalty(torch.where(valid, logprobs, zero), torch.where(valid, ref_logprobs, zero), "k3")
    return aggregate_loss(per_token, mask, loss_type, max_tokens)
