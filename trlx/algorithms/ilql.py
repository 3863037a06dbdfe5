"""Implicit Language Q-Learning (Snell et al. 2022, "Offline RL for Natural Language Generation with Implicit
Language Q-Learning"), as trlX implements it: the losses, the target-head sync and the sampling policy.

Token t of a response is action a_t taken in state s_t (everything before it); s_A follows the last action and is
terminal. Q heads map a state's hidden state to one value per vocabulary token, a V head to one value.

- Q loss (eq. 2): (Q(s_t, a_t) - (r_t + gamma * V(s_{t+1})))^2, V(terminal) = 0, the target not differentiated.
- V loss (eq. 3): expectile regression of V(s_t) towards min_i Qhat_i(s_t, a_t) of the *target* Q heads: weight
  tau where the target is above V, 1 - tau below (tau = 0.5 is the mean square, tau -> 1 a max).
- CQL (eq. 4): cross-entropy of each Q head's values as logits against the data's action, which pushes Q down
  on actions the data did not take.
- AWAC: the LM's cross-entropy on the data's actions weighted by exp(beta * (Qhat - V)) (trlX's extra term; the
  paper instead trains the LM as plain behaviour cloning, beta = 0).
Every term is a mean over the valid (non-padding) actions of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ILQLLossOutput(NamedTuple):
    loss: Tensor  # () the total: q + v + cql_scale * cql + awac_scale * awac
    q: Tensor  # () summed over the Q heads
    v: Tensor
    cql: Tensor  # () summed over the Q heads
    awac: Tensor
    advantage: Tensor  # () mean of min target Q - V over the valid actions (detached)


def masked_sum_mean(x: Tensor, mask: Tensor) -> Tensor:
    """sum(x * mask) / max(sum(mask), 1): a mean over the valid positions of the whole batch."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def ilql_loss(
    action_logits: Tensor,
    qs: Sequence[Tensor],
    target_qs: Sequence[Tensor],
    values: Tensor,
    actions: Tensor,
    rewards: Tensor,
    mask: Tensor,
    gamma: float,
    tau: float,
    cql_scale: float,
    awac_scale: float,
    beta: float,
) -> ILQLLossOutput:
    """ILQL's loss on a batch of A action positions.

    action_logits: (B, A, V) the LM's logits in each state (predicting a_t)
    qs, target_qs: one (B, A, V) tensor per Q head (two_qs: two), the trained and the target heads
    values: (B, A + 1) V(s_t) for t = 0..A, where s_A (and any state after a row's last action) is terminal
    actions: (B, A) long, the data's tokens; rewards: (B, A) float r_t (a sample's score on its last action)
    mask: (B, A) float 1/0, 1 on the row's actions (0 on padding)
    """
    values = values.float()
    q_taken = [q.float().gather(-1, actions[..., None]).squeeze(-1) for q in qs]
    target_q = reduce(torch.minimum, [q.float().gather(-1, actions[..., None]).squeeze(-1) for q in target_qs])
    target_q = target_q.detach()
    # V(s_{t+1}) is 0 where s_{t+1} is terminal: past a row's last action (the mask shifted left by one).
    next_valid = torch.cat([mask[:, 1:], torch.zeros_like(mask[:, :1])], dim=1)
    v, v_next = values[:, :-1], values[:, 1:] * next_valid
    q_target = (rewards + gamma * v_next).detach()
    loss_q = sum(masked_sum_mean((q - q_target) ** 2, mask) for q in q_taken)

    weight = torch.where(target_q >= v, tau, 1 - tau)
    loss_v = masked_sum_mean(weight * (target_q - v) ** 2, mask)

    def cross_entropy(logits: Tensor) -> Tensor:  # (B, A)
        flat = F.cross_entropy(logits.float().flatten(0, 1), actions.flatten(), reduction="none")
        return flat.view_as(actions).float()

    loss_cql = sum(masked_sum_mean(cross_entropy(q), mask) for q in qs)
    with torch.no_grad():
        awac_weight = torch.exp(beta * (target_q - v))
    loss_awac = masked_sum_mean(cross_entropy(action_logits) * awac_weight, mask)
    loss = loss_q + loss_v + cql_scale * loss_cql + awac_scale * loss_awac
    advantage = masked_sum_mean((target_q - v).detach(), mask)
    return ILQLLossOutput(loss, loss_q, loss_v, loss_cql, loss_awac, advantage)


@torch.no_grad()
def sync_target_heads(heads: nn.Module, target_heads: nn.Module, alpha: float) -> None:
    """Polyak averaging, in place: target <- alpha * head + (1 - alpha) * target (alpha = 1 copies)."""
    for target, source in zip(target_heads.parameters(), heads.parameters(), strict=True):
        target.mul_(1 - alpha).add_(source, alpha=alpha)


def ilql_policy_logits(logits: Tensor, target_qs: Sequence[Tensor], value: Tensor, beta: float) -> Tensor:
    """The ILQL sampling policy's unnormalised log-probs in one state: log pi_beta(a|s) + beta * (Qhat(s, a) - V(s)).

    logits: (B, V) the LM's logits; target_qs: one (B, V) per target Q head (their minimum is used);
    value: (B,) V(s); returns (B, V), to be truncated (top-k/top-p) and divided by the temperature as usual.
    """
    advantage = reduce(torch.minimum, [q.float() for q in target_qs]) - value.float()[:, None]
    return F.log_softmax(logits.float(), dim=-1) + beta * advantage
