"""Per-token KL estimators and the KL-coefficient controllers of the RLHF reward penalty.

Estimators follow Schulman (2020), "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html): with
tokens sampled from the policy p and r = q(x) / p(x) for the reference q,

    k1 = -log r                  unbiased, high variance, can be negative per token
    k2 = 0.5 * (log r)^2         biased, low variance, always >= 0
    k3 = (r - 1) - log r         unbiased, low variance, always >= 0 (since log r <= r - 1)

Controllers follow Ziegler et al. (2019), "Fine-Tuning Language Models from Human Preferences", section 2.2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = get_args(KLEstimator)


def kl_penalty(logprobs: Tensor, ref_logprobs: Tensor, estimator: KLEstimator) -> Tensor:
    """Per-token estimate of KL(policy || reference) from tokens sampled by the policy.

    Args:
        logprobs: (B, T) float log p(x_t) of the sampled tokens under the policy.
        ref_logprobs: (B, T) float log q(x_t) of the same tokens under the frozen reference.
        estimator: "k1", "k2" or "k3" (see the module docstring).

    Returns:
        (B, T) float per-token estimates; the caller masks padding.

    Raises:
        ValueError: for an unknown estimator.
    """
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_penalty: estimator must be one of {list(KL_ESTIMATORS)}, got {estimator!r}")
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    # expm1 keeps (r - 1) accurate when r is close to 1, which is the common case early in training.
    return torch.expm1(log_ratio) - log_ratio


@dataclass
class FixedKLController:
    """A constant KL coefficient beta."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """No-op; kept so the trainer calls every controller the same way."""

    def state_dict(self) -> dict[str, float]:
        return {"value": float(self.value)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adapts beta so the observed KL tracks `target` (Ziegler et al. 2019, section 2.2):

        e_t     = clip(KL_t / target - 1, -0.2, 0.2)
        beta   <- beta * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    The clip bounds the per-update change to +-20% of the horizon-scaled step, so one outlier batch cannot
    collapse or explode the coefficient.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0:
            raise ValueError(f"AdaptiveKLController: target must be > 0, got {target}")
        if horizon <= 0:
            raise ValueError(f"AdaptiveKLController: horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move beta towards the target.

        Args:
            current_kl: the mean per-sequence KL of the latest rollouts.
            n_steps: number of samples (episodes) since the previous update.
        """
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": float(self.value)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value}, target={self.target}, horizon={self.horizon})"


def make_kl_controller(
    init_kl_coef: float, target: float | None, horizon: int
) -> FixedKLController | AdaptiveKLController:
    """A fixed controller when `target` is None, otherwise an adaptive one."""
    if target is None:
        return FixedKLController(value=float(init_kl_coef))
    return AdaptiveKLController(init_kl_coef=init_kl_coef, target=target, horizon=horizon)
