import pytest
import torch

from trlx.algorithms.rewards import last_valid_index, scale_scores, shape_rewards

NAN = float("nan")


def test_scale_scores_subtracts_then_scales_then_clips():
    # ref_mean = 1, ref_std = 2, clip 0.75:
    #   3.0 -> (3 - 1)/2 = 1.0  -> 0.75
    #   0.5 -> (0.5 - 1)/2      = -0.25
    #  -1.0 -> (-1 - 1)/2 = -1  -> -0.75
    # (Clipping the raw scores first would turn 3.0 into (0.75 - 1)/2 = -0.125 instead.)
    scores = torch.tensor([3.0, 0.5, -1.0])
    original = scores.clone()
    out = scale_scores(scores, "ref", running_std=None, ref_mean=1.0, ref_std=2.0, cliprange_reward=0.75)
    torch.testing.assert_close(out, torch.tensor([0.75, -0.25, -0.75]))
    assert torch.equal(scores, original)


def test_scale_scores_modes():
    scores = torch.tensor([3.0, 0.5, -1.0])
    running = scale_scores(scores, "running", running_std=4.0, ref_mean=None, ref_std=9.0, cliprange_reward=None)
    torch.testing.assert_close(running, torch.tensor([0.75, 0.125, -0.25]))
    for mode in (None, "ignored"):
        unchanged = scale_scores(scores, mode, running_std=4.0, ref_mean=None, ref_std=2.0, cliprange_reward=0.0)
        torch.testing.assert_close(unchanged, scores)
    clipped_only = scale_scores(scores, None, running_std=None, ref_mean=None, ref_std=None, cliprange_reward=1.0)
    torch.testing.assert_close(clipped_only, torch.tensor([1.0, 0.5, -1.0]))


def test_scale_scores_errors():
    scores = torch.zeros(2)
    with pytest.raises(ValueError, match="ref_std"):
        scale_scores(scores, "ref", running_std=1.0, ref_mean=0.0, ref_std=None, cliprange_reward=None)
    with pytest.raises(ValueError, match="running_std"):
        scale_scores(scores, "running", running_std=None, ref_mean=None, ref_std=1.0, cliprange_reward=None)
    with pytest.raises(ValueError, match="'running'.*'bogus'"):
        scale_scores(scores, "bogus", running_std=None, ref_mean=None, ref_std=None, cliprange_reward=None)


def test_shape_rewards_puts_score_on_last_valid_token():
    # kl_coef = 0.5. Row 0 has 3 valid tokens, row 1 has 1; padded KL values are garbage.
    #   row 0: -0.5 * [0.1, 0.2, 0.3] = [-0.05, -0.1, -0.15], + score 1 on t=2 -> [-0.05, -0.1, 0.85, 0]
    #   row 1: -0.5 * 0.5 = -0.25, + score 2 on t=0                            -> [1.75, 0, 0, 0]
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.5, NAN, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    rewards = shape_rewards(torch.tensor([1.0, 2.0]), kl, mask, kl_coef=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.1, 0.85, 0.0], [1.75, 0.0, 0.0, 0.0]]))


def test_shape_rewards_dense_scores():
    # Dense mode: sequence scores are zero and per-token scores are added on valid tokens only.
    #   row 0: [-0.1 + 1, -0.1 + 2, 0] = [0.9, 1.9, 0];  row 1: [-0.1 + 3, 0, 0] = [2.9, 0, 0]
    kl = torch.full((2, 3), 0.2)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    dense = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, NAN]])
    rewards = shape_rewards(torch.zeros(2), kl, mask, kl_coef=0.5, dense_scores=dense)
    torch.testing.assert_close(rewards, torch.tensor([[0.9, 1.9, 0.0], [2.9, 0.0, 0.0]]))


def test_shape_rewards_rejects_rows_without_valid_tokens():
    mask = torch.tensor([[1, 1], [0, 0], [1, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        shape_rewards(torch.zeros(3), torch.zeros(3, 2), mask, kl_coef=0.1)


def test_last_valid_index():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert last_valid_index(mask).tolist() == [2, 0, 3, -1]
