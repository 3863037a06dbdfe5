"""Hand-computed SFT and DPO/IPO losses (trlx.algorithms.sft, trlx.algorithms.preference.dpo_loss)."""

import math

import pytest
import torch

from trlx.algorithms.preference import dpo_loss
from trlx.algorithms.sft import sft_loss


def test_sft_loss_is_the_mean_nll_of_the_learned_tokens_only():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -4.0, 0.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert sft_loss(logprobs, mask).item() == pytest.approx((2 + 3 + 0.5) / 3)
    # Prompt tokens (mask 0) contribute nothing: neither their values nor a gradient.
    changed = logprobs.clone().requires_grad_(True)
    with torch.no_grad():
        changed[0, 0], changed[1, 1] = -100.0, -100.0
    loss = sft_loss(changed, mask)
    loss.backward()
    assert loss.item() == pytest.approx((2 + 3 + 0.5) / 3)
    assert changed.grad[0, 0] == 0 and changed.grad[1, 1] == 0 and changed.grad[0, 1] == pytest.approx(-1 / 3)


# Two pairs: log-ratios to the reference are chosen (0.5, 0) and rejected (-0.5, 0.5), so h = (1.0, -0.5).
CHOSEN, REJECTED = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.0])
REF_CHOSEN, REF_REJECTED = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -1.5])


def softplus(x):
    return math.log1p(math.exp(x))


def test_dpo_loss_and_implicit_rewards_by_hand():
    out = dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.5)
    # -log sigmoid(beta h) = softplus(-beta h), with beta h = (0.5, -0.25)
    assert out.losses.tolist() == pytest.approx([softplus(-0.5), softplus(0.25)])
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, 0.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25, 0.25])


def test_conservative_dpo_mixes_in_the_flipped_label():
    out = dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.5, label_smoothing=0.1)
    expected = [0.9 * softplus(-x) + 0.1 * softplus(x) for x in (0.5, -0.25)]
    assert out.losses.tolist() == pytest.approx(expected)


def test_ipo_regresses_the_margin_to_one_over_two_beta():
    out = dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.5, variant="ipo")
    assert out.losses.tolist() == pytest.approx([(1.0 - 1.0) ** 2, (-0.5 - 1.0) ** 2])


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    chosen, rejected = CHOSEN.clone().requires_grad_(True), REJECTED.clone().requires_grad_(True)
    dpo_loss(chosen, rejected, REF_CHOSEN, REF_REJECTED, beta=0.5).losses.sum().backward()
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises chosen, lowers rejected


def test_dpo_rejects_mismatched_shapes_and_unknown_variants():
    with pytest.raises(ValueError, match=r"must both have shape \(B,\)"):
        dpo_loss(CHOSEN, REJECTED[:1], REF_CHOSEN, REF_REJECTED, beta=0.5)
    with pytest.raises(ValueError, match="variant must be 'dpo' or 'ipo'"):
        dpo_loss(CHOSEN, REJECTED, REF_CHOSEN, REF_REJECTED, beta=0.5, variant="kto")


def test_rft_thresholds_are_per_prompt_percentiles_clipped_like_trlx():
    from trlx.trainers.rft import percentile_thresholds, select

    scores = [[0.0, 1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
    # Quantile 0.5 per prompt: 2, 0, 1; clipped to [0 + 1e-3, 2 - 1e-3].
    assert percentile_thresholds(scores, 0.5).tolist() == pytest.approx([2 - 1e-3, 1e-3, 1.0])
    completions = [[(f"p{i}-{j}", s) for j, s in enumerate(row)] for i, row in enumerate(scores)]
    completions[2].append(("p2-4", 1.0))  # a duplicate completion is kept once
    selected, stats = select(completions, 0.5)
    # Prompt 0 keeps its 2, 3, 4 (the threshold is just under 2); prompt 1 (all at the minimum) keeps none;
    # prompt 2 (all equal, not the minimum) keeps all.
    assert selected == [(0, "p0-2"), (0, "p0-3"), (0, "p0-4"), *[(2, f"p2-{j}") for j in range(5)]]
    assert stats["rft/percentile"] == 0.5 and stats["rft/completions"] == 16
