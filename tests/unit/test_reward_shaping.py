import pytest
import torch

from trlx.algorithms.rewards import last_valid_index, place_scores, scale_token_scores, shape_rewards

NAN = float("nan")


def test_place_scores_puts_each_score_on_the_last_valid_token():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    placed = place_scores(torch.tensor([1.0, 2.0]), mask)
    torch.testing.assert_close(placed, torch.tensor([[0.0, 0.0, 1.0, 0.0], [2.0, 0.0, 0.0, 0.0]]))


def test_place_scores_rejects_rows_without_valid_tokens():
    mask = torch.tensor([[1, 1], [0, 0], [1, 0]])
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        place_scores(torch.zeros(3), mask)


def test_scalar_scores_subtract_then_scale_then_clip():
    # ref_mean = 1, std = 2, clip 0.75, one valid token each:
    #   3.0 -> (3 - 1)/2 = 1.0  -> 0.75
    #   0.5 -> (0.5 - 1)/2      = -0.25
    #  -1.0 -> (-1 - 1)/2 = -1  -> -0.75
    # (Clipping the raw scores first would turn 3.0 into (0.75 - 1)/2 = -0.125 instead.)
    mask = torch.ones(3, 1)
    scores = place_scores(torch.tensor([3.0, 0.5, -1.0]), mask)
    original = scores.clone()
    out = scale_token_scores(scores, mask, ref_mean=1.0, std=2.0, cliprange_reward=0.75)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.75, -0.25, -0.75]))
    assert torch.equal(scores, original)
    torch.testing.assert_close(scale_token_scores(scores, mask, None, None, None), scores)
    torch.testing.assert_close(
        scale_token_scores(scores, mask, None, 4.0, 0.0)[:, 0], torch.tensor([0.75, 0.125, -0.25])
    )


def test_dense_scores_are_scaled_and_clipped_per_token_with_ref_mean_on_the_last_token():
    # Row 0: 3 valid tokens [1, 2, 5] (sequence score 8), row 1: 1 valid token [3]; padding holds garbage.
    # ref_mean = 1 comes off the last valid token: [1, 2, 4] and [2]; std 2: [0.5, 1, 2] and [1];
    # clip 1.5: [0.5, 1, 1.5] and [1]. Sequence scores actually used: 3.0 and 1.0.
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    dense = torch.tensor([[1.0, 2.0, 5.0, 100.0], [3.0, NAN, 7.0, 7.0]])
    out = scale_token_scores(dense, mask, ref_mean=1.0, std=2.0, cliprange_reward=1.5)
    torch.testing.assert_close(out, torch.tensor([[0.5, 1.0, 1.5, 0.0], [1.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(out.sum(-1), torch.tensor([3.0, 1.0]))


def test_shape_rewards_subtracts_the_kl_penalty_on_valid_tokens():
    # kl_coef = 0.5. Row 0 has 3 valid tokens, row 1 has 1; padded KL values are garbage.
    #   row 0: -0.5 * [0.1, 0.2, 0.3] = [-0.05, -0.1, -0.15], + score 1 on t=2 -> [-0.05, -0.1, 0.85, 0]
    #   row 1: -0.5 * 0.5 = -0.25, + score 2 on t=0                            -> [1.75, 0, 0, 0]
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.5, NAN, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    rewards = shape_rewards(place_scores(torch.tensor([1.0, 2.0]), mask), kl, mask, kl_coef=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.1, 0.85, 0.0], [1.75, 0.0, 0.0, 0.0]]))


def test_last_valid_index():
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
    assert last_valid_index(mask).tolist() == [2, 0, 3, -1]
