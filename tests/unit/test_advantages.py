"""Critic-free advantage estimators, loss reductions and the clip-higher policy loss, against hand-computed values."""

import math

import pytest
import torch

from trlx.algorithms.advantages import (
    STD_EPS,
    broadcast_to_tokens,
    degenerate_groups,
    discounted_returns,
    group_std,
    grpo_advantages,
    overlong_penalty,
    rloo_advantages,
)
from trlx.algorithms.ppo import aggregate_loss, kl_loss, policy_loss

SCORES = torch.tensor([1.0, 0.0, 1.0, 1.0])  # two groups of 2: one informative, one all equal


def test_grpo_group_scale_by_hand():
    std = math.sqrt(0.5)  # unbiased std of [1, 0]
    expected = [0.5 / (std + STD_EPS), -0.5 / (std + STD_EPS), 0.0, 0.0]
    assert grpo_advantages(SCORES, 2, "group").tolist() == pytest.approx(expected)


def test_grpo_without_std_is_dr_grpo_and_batch_uses_the_given_std():
    assert grpo_advantages(SCORES, 2, "none").tolist() == [0.5, -0.5, 0.0, 0.0]
    batch = grpo_advantages(SCORES, 2, "batch", batch_std=0.5)
    assert batch.tolist() == pytest.approx([0.5 / (0.5 + STD_EPS), -0.5 / (0.5 + STD_EPS), 0.0, 0.0])
    with pytest.raises(ValueError, match="batch_std"):
        grpo_advantages(SCORES, 2, "batch")
    with pytest.raises(ValueError, match="scale must be one of"):
        grpo_advantages(SCORES, 2, "global")


def test_a_group_of_one_is_its_own_baseline():
    assert grpo_advantages(torch.tensor([3.0, -1.0]), 1).tolist() == [0.0, 0.0]
    assert group_std(torch.tensor([3.0, -1.0]), 1).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="at least 2"):
        rloo_advantages(torch.tensor([3.0, -1.0]), 1)


def test_rloo_leave_one_out_by_hand():
    # 1 - mean(2, 3) = -1.5; 2 - mean(1, 3) = 0; 3 - mean(1, 2) = 1.5
    assert rloo_advantages(torch.tensor([1.0, 2.0, 3.0]), 3).tolist() == [-1.5, 0.0, 1.5]
    assert rloo_advantages(torch.tensor([2.0, 2.0]), 2).tolist() == [0.0, 0.0]


def test_groups_must_divide_the_scores():
    with pytest.raises(ValueError, match="do not split into groups of 3"):
        grpo_advantages(SCORES, 3)


def test_vectorised_estimators_match_a_loop():
    torch.manual_seed(0)
    scores, group = torch.randn(24, dtype=torch.float64), 6
    grpo, rloo = grpo_advantages(scores, group, "group"), rloo_advantages(scores, group)
    for g in range(0, 24, group):
        members = scores[g : g + group].tolist()
        mean = sum(members) / group
        std = math.sqrt(sum((x - mean) ** 2 for x in members) / (group - 1))
        for i, x in enumerate(members):
            assert grpo[g + i].item() == pytest.approx((x - mean) / (std + STD_EPS))
            others = [y for j, y in enumerate(members) if j != i]
            assert rloo[g + i].item() == pytest.approx(x - sum(others) / len(others))


def test_discounted_returns_by_hand_and_padding_is_zero():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 5.0], [2.0, -1.0, 7.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    returns = discounted_returns(rewards, mask, gamma=0.5)
    assert returns.tolist() == [[0.25, 0.5, 1.0, 0.0], [1.5, -1.0, 0.0, 0.0]]


def test_broadcast_and_degenerate_groups():
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert broadcast_to_tokens(torch.tensor([2.0, -1.0]), mask).tolist() == [[2.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]
    assert degenerate_groups(SCORES, 2).tolist() == [False, True]


def test_overlong_penalty_ramps_over_the_buffer():
    penalty = overlong_penalty(torch.tensor([4, 6, 7, 8, 10]), max_length=10, buffer=4, factor=1.0)
    assert penalty.tolist() == [0.0, 0.0, -0.25, -0.5, -1.0]
    with pytest.raises(ValueError, match="buffer"):
        overlong_penalty(torch.tensor([1]), max_length=10, buffer=0)


# ---------------------------------------------------------------------------------------------- loss reductions
PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
RAGGED = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # lengths 3 and 1; 9s are padding


def test_loss_types_on_ragged_lengths_by_hand():
    assert aggregate_loss(PER_TOKEN, RAGGED, "token_mean").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert aggregate_loss(PER_TOKEN, RAGGED, "sequence_mean").item() == pytest.approx((6 / 3 + 4 / 1) / 2)
    assert aggregate_loss(PER_TOKEN, RAGGED, "constant", max_tokens=4).item() == pytest.approx(10 / (2 * 4))
    with pytest.raises(ValueError, match="loss_type must be one of"):
        aggregate_loss(PER_TOKEN, RAGGED, "seq_mean")
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate_loss(PER_TOKEN, RAGGED, "constant")


def test_padding_nan_does_not_leak_into_any_reduction():
    per_token = PER_TOKEN.clone()
    per_token[1, 1:] = math.nan
    for loss_type in ("token_mean", "sequence_mean", "constant"):
        assert math.isfinite(aggregate_loss(per_token, RAGGED, loss_type, max_tokens=3).item())


def test_clip_higher_by_hand():
    # Token 1: A = +1, ratio 1.5 -> clipped at 1 + 0.28; token 2: A = -1, ratio 0.5 -> clipped at 1 - 0.2.
    logprobs = torch.log(torch.tensor([[1.5, 0.5]]))
    old, adv, mask = torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2)
    asym = policy_loss(logprobs, old, adv, mask, cliprange=0.2, cliprange_high=0.28)
    assert asym.loss.item() == pytest.approx((-1.28 + 0.8) / 2)
    assert asym.clip_low_frac.item() == 0.5 and asym.clip_high_frac.item() == 0.5
    symmetric = policy_loss(logprobs, old, adv, mask, cliprange=0.2)
    assert symmetric.loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    # Inside the clip range nothing counts as clipped.
    inside = policy_loss(torch.log(torch.tensor([[1.1, 0.9]])), old, adv, mask, cliprange=0.2)
    assert inside.clip_low_frac.item() == 0.0 and inside.clip_high_frac.item() == 0.0


def test_policy_loss_sequence_mean_weighs_sequences_equally():
    # Unclipped (ratio 1): the per-token loss is -A. Row 1 has 3 tokens at A=1, row 2 one token at A=-3.
    adv = torch.tensor([[1.0, 1.0, 1.0], [-3.0, 0.0, 0.0]])
    zeros = torch.zeros(2, 3)
    token = policy_loss(zeros, zeros, adv, RAGGED, 0.2, loss_type="token_mean").loss.item()
    sequence = policy_loss(zeros, zeros, adv, RAGGED, 0.2, loss_type="sequence_mean").loss.item()
    assert token == pytest.approx((-3 + 3) / 4) and sequence == pytest.approx((-1 + 3) / 2)


def test_kl_loss_is_k3_and_its_gradient_pulls_toward_the_reference():
    logprobs = torch.tensor([[0.0, math.log(0.5), 0.0]], requires_grad=True)
    ref = torch.tensor([[math.log(0.5), math.log(0.5), -math.inf]])  # the last token is padding
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss = kl_loss(logprobs, ref, mask)
    assert loss.item() == pytest.approx((-0.5 - math.log(0.5)) / 2)
    loss.backward()
    # d/dlogp [exp(ref - logp) - (ref - logp) - 1] = 1 - exp(ref - logp), halved by the token mean
    assert logprobs.grad[0].tolist() == pytest.approx([0.25, 0.0, 0.0])
