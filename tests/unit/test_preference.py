import math

import pytest
import torch

from trlx.algorithms.preference import bradley_terry_loss, pairs_from_choice, preference_accuracy


def test_bradley_terry_loss_hand_computed():
    # -log sigmoid(1 - 0) = log(1 + e^-1)
    loss = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]))
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert loss.item() == pytest.approx(0.3133, abs=1e-4)


def test_bradley_terry_loss_is_mean_over_pairs_and_symmetric_at_zero_margin():
    chosen = torch.tensor([2.0, 0.5, -1.0])
    rejected = torch.tensor([0.0, 0.5, 1.0])
    # margins 2, 0, -2 -> log(1+e^-2), log 2, log(1+e^2)
    expected = (math.log1p(math.exp(-2)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert bradley_terry_loss(chosen, rejected).item() == pytest.approx(expected, abs=1e-6)


def test_bradley_terry_loss_stays_finite_for_huge_margins():
    loss = bradley_terry_loss(torch.tensor([-1000.0]), torch.tensor([1000.0]))
    assert loss.item() == pytest.approx(2000.0)
    grad_in = torch.tensor([5.0], requires_grad=True)
    bradley_terry_loss(grad_in, torch.tensor([0.0])).backward()
    # d/dc -log sigmoid(c - r) = -(1 - sigmoid(c - r))
    assert grad_in.grad.item() == pytest.approx(-(1 - torch.sigmoid(torch.tensor(5.0)).item()), abs=1e-6)


def test_bradley_terry_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"\(B,\)"):
        bradley_terry_loss(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError):
        bradley_terry_loss(torch.zeros(2, 1), torch.zeros(2, 1))


def test_preference_accuracy_counts_ties_as_wrong():
    chosen = torch.tensor([1.0, 0.0, 3.0, 2.0])
    rejected = torch.tensor([0.0, 1.0, 3.0, -1.0])
    assert preference_accuracy(chosen, rejected).item() == pytest.approx(0.5)


def test_pairs_from_choice():
    assert pairs_from_choice(2, 0) == [(0, 1)]
    assert pairs_from_choice(2, 1) == [(1, 0)]
    assert pairs_from_choice(4, 2) == [(2, 0), (2, 1), (2, 3)]
    assert pairs_from_choice(3, None) == []
    with pytest.raises(ValueError):
        pairs_from_choice(3, 3)
    with pytest.raises(ValueError):
        pairs_from_choice(1, 0)
