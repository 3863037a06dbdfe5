"""Masked statistics for padded token batches, plus running moments of reward scores.

Every function here is pure: tensors in, tensors out. Masks mark valid (response) tokens with 1/True; padded
positions may hold anything (even `inf`/`nan` from padded logits), so values are selected with `torch.where`
rather than multiplied by the mask, because `nan * 0 == nan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


def _valid(x: Tensor, mask: Tensor) -> Tensor:
    """`x` with masked-out entries replaced by 0 (safe even when the padding holds inf/nan)."""
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over entries where `mask` is set.

    Args:
        x: (B, T) float (any shape works; `mask` must broadcast to it).
        mask: same shape as `x`, float/bool with 1 on valid entries.
        dim: reduce over this dimension only (e.g. `dim=1` for a per-sequence mean); `None` reduces everything.

    Returns:
        Scalar when `dim is None`, otherwise `x` reduced over `dim`. An empty mask (or an empty row with `dim`)
        gives `nan`, like `torch.mean` of an empty tensor; checking it here would force a device sync.
    """
    count = mask.to(x.dtype).sum() if dim is None else mask.to(x.dtype).sum(dim)
    total = _valid(x, mask).sum() if dim is None else _valid(x, mask).sum(dim)
    return total / count


def masked_var(x: Tensor, mask: Tensor, unbiased: bool = True) -> Tensor:
    """Variance of `x` over all entries where `mask` is set (a scalar).

    Args:
        x: (B, T) float.
        mask: (B, T) float/bool with 1 on valid entries.
        unbiased: apply Bessel's correction n / (n - 1).

    Raises:
        ValueError: if no entry is valid, or only one is and `unbiased=True` (the estimate would be inf/nan and
            silently poison whitened advantages).
    """
    count = int(mask.bool().sum().item())
    if count == 0:
        raise ValueError("masked_var: mask has no valid entries")
    if unbiased and count == 1:
        raise ValueError("masked_var: unbiased variance needs at least 2 valid entries, got 1")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        var = var * (count / (count - 1))
    return var


def masked_whiten(
    x: Tensor,
    mask: Tensor,
    shift_mean: bool = True,
    mean: Tensor | None = None,
    var: Tensor | None = None,
    eps: float = 1e-8,
) -> Tensor:
    """Normalise `x` to zero mean and unit variance over its valid entries.

    Whitening advantages per batch is the standard PPO trick (trlX `whiten`, cleanrl `norm_adv`) that keeps the
    policy-gradient scale independent of the reward scale.

    Args:
        x: (B, T) float.
        mask: (B, T) float/bool with 1 on valid entries.
        shift_mean: if False, add the mean back after scaling, as trlX's `whiten(shift_mean=False)` does (used
            there for rewards, whose sign matters).
        mean, var: scalar statistics to use instead of the local ones, e.g. computed across processes by the
            caller via `masked_sums` + all-reduce + `moments_from_sums`. Either may be given independently.
        eps: added to the variance before the square root.

    Returns:
        (B, T) float; masked-out entries are 0.
    """
    if mean is None:
        mean = masked_mean(x, mask)
    if var is None:
        var = masked_var(x, mask)
    mean = mean.to(x.dtype)
    var = var.to(x.dtype)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return _valid(whitened, mask)


def masked_sums(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sufficient statistics of the valid entries, for combining across processes.

    float64 because the variance is later recovered as E[x^2] - E[x]^2, which cancels catastrophically in
    float32 when the mean is large relative to the spread.

    Args:
        x: (B, T) float.
        mask: (B, T) float/bool with 1 on valid entries.

    Returns:
        (sum, sum of squares, count): three float64 scalars, suitable for a SUM all-reduce.
    """
    v = _valid(x, mask).to(torch.float64)
    return v.sum(), (v * v).sum(), mask.bool().sum().to(torch.float64)


def moments_from_sums(total: Tensor, total_sq: Tensor, count: Tensor, unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """Mean and variance from (possibly all-reduced) `masked_sums` outputs.

    Args:
        total, total_sq, count: float64 scalars, as returned by `masked_sums` (after summing over processes).
        unbiased: apply Bessel's correction n / (n - 1).

    Returns:
        (mean, var) as float64 scalars. The variance is clamped at 0 against rounding.
    """
    mean = total / count
    sq_dev = (total_sq - count * mean * mean).clamp(min=0.0)
    var = sq_dev / (count - 1) if unbiased else sq_dev / count
    return mean, var


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[returns - values] / Var[returns] over valid entries: how much of the return variance the value
    head predicts (1 = perfect, 0 = no better than a constant, negative = worse).

    Args:
        values: (B, T) float value predictions.
        returns: (B, T) float targets.
        mask: (B, T) float/bool with 1 on valid entries.

    Returns:
        Scalar. `nan`/`-inf` if the returns are constant, as in cleanrl; the logger shows it rather than hiding it.
    """
    # The Bessel factor cancels in the ratio, so the biased estimate also works for a single valid entry.
    var_returns = masked_var(returns, mask, unbiased=False)
    var_residual = masked_var(returns - values, mask, unbiased=False)
    return 1.0 - var_residual / var_returns


@dataclass
class RunningMoments:
    """Running mean/variance of a stream of scalars (trlX's `RunningMoments`, after stable-baselines3).

    Used for `scale_reward="running"`: scores are divided by the running std of all scores seen so far.
    `var` is the population (biased) variance of everything seen; `std` applies Bessel's correction, as trlX does.
    The tiny initial `count` makes the first update take the batch statistics almost exactly.
    """

    mean: float = 0.0
    var: float = 1.0
    count: float = 1e-24

    @property
    def std(self) -> float:
        """Sample (Bessel-corrected) standard deviation of everything seen; sqrt(var) before 2 samples."""
        if self.count <= 1:
            return math.sqrt(self.var)
        return math.sqrt(self.var * self.count / (self.count - 1))

    def update(self, batch_mean: float, batch_var: float, batch_count: float) -> tuple[float, float]:
        """Fold in a batch by Chan et al.'s parallel algorithm (1979, "Updating formulae and a pairwise algorithm
        for computing sample variances").

        Args:
            batch_mean: mean of the batch.
            batch_var: POPULATION (biased, divide-by-n) variance of the batch, e.g. `moments_from_sums(...,
                unbiased=False)`; the running variance is a population variance, so the batch must be too.
            batch_count: number of samples in the batch (> 0).

        Returns:
            (batch_mean, batch_std) with the batch std Bessel-corrected, like trlX, for logging.
        """
        if batch_count <= 0:
            raise ValueError(f"RunningMoments.update: batch_count must be > 0, got {batch_count}")
        batch_mean, batch_var, batch_count = float(batch_mean), float(batch_var), float(batch_count)
        delta = batch_mean - self.mean
        total = self.count + batch_count
        # Sum of squared deviations of the union = both parts' own sums + the between-group term.
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean += delta * batch_count / total
        self.var = m2 / total
        self.count = total
        batch_std = math.sqrt(batch_var * batch_count / (batch_count - 1)) if batch_count > 1 else math.sqrt(batch_var)
        return batch_mean, batch_std

    def state_dict(self) -> dict[str, float]:
        return {"mean": float(self.mean), "var": float(self.var), "count": float(self.count)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean = float(state["mean"])
        self.var = float(state["var"])
        self.count = float(state["count"])
