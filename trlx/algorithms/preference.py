"""Preference-learning math: the Bradley-Terry loss a reward model is trained with, and how choices become pairs.

Ziegler et al. 2019 (sec. 2.2) fit the reward model r to human choices among candidates y_0..y_{n-1} with
    loss(r) = -E[ log( exp r(x, y_b) / sum_i exp r(x, y_i) ) ],
where b is the chosen index. For n = 2 this is exactly the Bradley-Terry pairwise loss
    -log sigmoid(r(x, y_chosen) - r(x, y_rejected)).
We train on pairs for every n (chosen vs each of the others; see ``pairs_from_choice``), which keeps one loss for
pairwise and best-of-n data; both losses are minimised by the same reward ordering.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ["DPOLossOutput", "bradley_terry_loss", "dpo_loss", "pairs_from_choice", "preference_accuracy"]


def _check_pair_shapes(chosen_rewards: Tensor, rejected_rewards: Tensor) -> None:
    if chosen_rewards.ndim != 1 or chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(
            "chosen_rewards and rejected_rewards must both have shape (B,), got "
            f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}"
        )
    if chosen_rewards.numel() == 0:
        raise ValueError("need at least one pair")


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Mean negative log-likelihood that each chosen sample beats its rejected one under Bradley-Terry.

    chosen_rewards: (B,) float, reward of the preferred sample of each pair
    rejected_rewards: (B,) float, reward of the other sample of the same pair
    returns: () float, -mean_b log sigmoid(chosen_b - rejected_b)

    logsigmoid instead of log(sigmoid(.)) so a large margin does not underflow to log(0) = -inf.
    """
    _check_pair_shapes(chosen_rewards, rejected_rewards)
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def preference_accuracy(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Fraction of pairs the reward ranks the human's way.

    chosen_rewards, rejected_rewards: (B,) float
    returns: () float in [0, 1]. An exact tie counts as wrong: a reward that cannot separate the pair has not
    learned the preference.
    """
    _check_pair_shapes(chosen_rewards, rejected_rewards)
    return (chosen_rewards > rejected_rewards).float().mean()


def pairs_from_choice(n_candidates: int, choice: int | None) -> list[tuple[int, int]]:
    """(chosen, rejected) index pairs implied by picking ``choice`` among ``n_candidates``.

    Best-of-n only says the chosen candidate beats every other one; it says nothing about how the others rank
    among themselves, so we emit exactly the n - 1 pairs (choice, j) for j != choice.

    ``choice=None`` (a tie or a skip) yields no pairs. A skip carries no information. A tie could be modelled as
    a 0.5 target, but under Bradley-Terry that pulls every tied pair's rewards together, and the paper's loss
    (a softmax over the chosen one) has no term for it; labellers also use "tie" for "both bad", which is not
    the same as "equally good".
    """
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be >= 2, got {n_candidates}")
    if choice is None:
        return []
    if not 0 <= choice < n_candidates:
        raise ValueError(f"choice must be in 0..{n_candidates - 1}, got {choice}")
    return [(choice, j) for j in range(n_candidates) if j != choice]


class DPOLossOutput(NamedTuple):
    """Per-pair terms of `dpo_loss`, (B,) each, and their implicit rewards."""

    losses: Tensor  # (B,) the loss of each pair
    chosen_rewards: Tensor  # (B,) beta * (log pi(y_w|x) - log pi_ref(y_w|x)), detached
    rejected_rewards: Tensor  # (B,) beta * (log pi(y_l|x) - log pi_ref(y_l|x)), detached


def dpo_loss(
    chosen_logps: Tensor,
    rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
    label_smoothing: float = 0.0,
    variant: Literal["dpo", "ipo"] = "dpo",
) -> DPOLossOutput:
    """Direct preference optimisation (Rafailov et al. 2023, eq. 7) and IPO (Azar et al. 2023, eq. 17).

    chosen_logps, rejected_logps: (B,) float, the policy's summed log-probs of the chosen / rejected completion
    ref_chosen_logps, ref_rejected_logps: (B,) float, the same under the frozen reference
    With h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)):
    - dpo: -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h), where eps = label_smoothing is the assumed
      probability that a label is flipped (conservative DPO; eps = 0 is the paper's loss);
    - ipo: (h - 1 / (2 beta))^2, which regresses the margin to a finite target instead of pushing it to infinity.
    """
    _check_pair_shapes(chosen_logps, rejected_logps)
    chosen = chosen_logps - ref_chosen_logps
    rejected = rejected_logps - ref_rejected_logps
    h = chosen - rejected
    if variant == "dpo":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif variant == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"variant must be 'dpo' or 'ipo', got {variant!r}")
    return DPOLossOutput(losses, beta * chosen.detach(), beta * rejected.detach())
