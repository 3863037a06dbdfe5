import pytest
import torch

from trlx.algorithms.gae import compute_gae


def test_gae_hand_computed_with_padding():
    # gamma = 0.9, lam = 0.5, so gamma * lam = 0.45.
    # Row 0, all 3 tokens valid, r = [1, 0, 2], V = [0.5, 1.0, 1.5]:
    #   t=2: delta = 2 + 0.9*0   - 1.5 = 0.5    A2 = 0.5
    #   t=1: delta = 0 + 0.9*1.5 - 1.0 = 0.35   A1 = 0.35 + 0.45*0.5   = 0.575
    #   t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4    A0 = 1.4  + 0.45*0.575 = 1.65875
    #   returns = A + V = [2.15875, 1.575, 2.0]
    # Row 1, same numbers but the last token is padding (its reward/value are garbage and must be ignored):
    #   t=1: delta = 0 + 0.9*0 - 1.0 = -1.0     A1 = -1.0   (episode ends after t=1, bootstrap 0)
    #   t=0: delta = 1 + 0.9*1.0 - 0.5 = 1.4    A0 = 1.4 + 0.45*(-1.0) = 0.95
    #   returns = [1.45, 0.0, 0]
    rewards = torch.tensor([[1.0, 0.0, 2.0], [1.0, 0.0, 7.0]])
    values = torch.tensor([[0.5, 1.0, 1.5], [0.5, 1.0, float("nan")]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=0.9, lam=0.5)
    torch.testing.assert_close(advantages, torch.tensor([[1.65875, 0.575, 0.5], [0.95, -1.0, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[2.15875, 1.575, 2.0], [1.45, 0.0, 0.0]]))


def _reference_gae(rewards, values, mask, gamma, lam):
    """Plain per-element loop over each row's valid positions, in Python floats."""
    batch_size, length = rewards.shape
    advantages = [[0.0] * length for _ in range(batch_size)]
    for b in range(batch_size):
        positions = [t for t in range(length) if mask[b, t]]
        next_value, next_adv = 0.0, 0.0
        for t in reversed(positions):
            delta = float(rewards[b, t]) + gamma * next_value - float(values[b, t])
            next_adv = delta + gamma * lam * next_adv
            next_value = float(values[b, t])
            advantages[b][t] = next_adv
    advantages = torch.tensor(advantages, dtype=torch.float64)
    returns = torch.where(mask.bool(), advantages + values, torch.zeros((), dtype=torch.float64))
    return advantages, returns


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 0.95), (0.9, 0.0), (0.5, 1.0)])
def test_gae_matches_per_element_loop_on_ragged_masks(gamma, lam):
    generator = torch.Generator().manual_seed(0)
    batch_size, length = 6, 9
    rewards = torch.randn(batch_size, length, generator=generator, dtype=torch.float64)
    values = torch.randn(batch_size, length, generator=generator, dtype=torch.float64)
    lengths = torch.tensor([9, 1, 4, 7, 2, 5])
    mask = torch.arange(length)[None, :] < lengths[:, None]
    mask[5] = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 0], dtype=torch.bool)  # holes are skipped, not episode ends
    advantages, returns = compute_gae(rewards, values, mask, gamma=gamma, lam=lam)
    expected_adv, expected_ret = _reference_gae(rewards, values, mask, gamma, lam)
    torch.testing.assert_close(advantages, expected_adv)
    torch.testing.assert_close(returns, expected_ret)
    assert (advantages[~mask] == 0).all() and (returns[~mask] == 0).all()


def test_gae_lambda_one_gamma_one_gives_reward_to_go():
    # With gamma = lam = 1 the advantages telescope to (sum of future rewards) - V_t, so returns = reward-to-go.
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    values = torch.tensor([[0.3, -0.2, 0.7, 1.1]])
    mask = torch.tensor([[1, 1, 1, 0]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(returns, torch.tensor([[6.0, 5.0, 3.0, 0.0]]))
    torch.testing.assert_close(advantages, torch.tensor([[5.7, 5.2, 2.3, 0.0]]))


def test_gae_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="share one"):
        compute_gae(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(2, 3), gamma=1.0, lam=1.0)
