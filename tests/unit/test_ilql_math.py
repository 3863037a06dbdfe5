"""ILQL's losses, target sync and sampling policy (trlx.algorithms.ilql), by hand on a 2-sample toy batch."""

import math

import pytest
import torch
from torch import nn

from trlx.algorithms.ilql import ilql_loss, ilql_policy_logits, sync_target_heads

JUNK = 100.0  # padding positions hold values that would dominate every term if the mask leaked


def lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


def toy_batch():
    # Row 0: two actions (1, 0), reward 1 on the last. Row 1: one action (0), reward 2, then padding.
    actions = torch.tensor([[1, 0], [0, 0]])
    rewards = torch.tensor([[0.0, 1.0], [2.0, JUNK]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    q = torch.tensor([[[0.2, 0.4], [0.6, 0.1]], [[0.5, 0.0], [JUNK, JUNK]]])
    target_q = torch.tensor([[[0.3, 0.5], [0.2, 0.9]], [[0.1, 0.3], [JUNK, JUNK]]])
    values = torch.tensor([[0.1, 0.3, 0.8], [0.4, JUNK, JUNK]])  # V of the terminal states is never used
    action_logits = torch.tensor([[[1.0, 2.0], [0.0, 0.0]], [[0.5, -0.5], [JUNK, JUNK]]])
    return action_logits, q, target_q, values, actions, rewards, mask


def test_ilql_loss_terms_by_hand():
    action_logits, q, target_q, values, actions, rewards, mask = toy_batch()
    out = ilql_loss(action_logits, [q], [target_q], values, actions, rewards, mask, 0.5, 0.7, 0.1, 1.0, 1.0)
    # Q targets r + gamma V(next): 0 + 0.5 * 0.3, 1 + 0 (terminal next), 2 + 0 (terminal next).
    assert out.q.item() == pytest.approx(((0.4 - 0.15) ** 2 + (0.6 - 1.0) ** 2 + (0.5 - 2.0) ** 2) / 3)
    # Expectile: target-Q 0.5 >= V 0.1 (weight tau), 0.2 < 0.3 and 0.1 < 0.4 (weight 1 - tau).
    assert out.v.item() == pytest.approx((0.7 * 0.4**2 + 0.3 * 0.1**2 + 0.3 * 0.3**2) / 3)
    cql = ((lse(0.2, 0.4) - 0.4) + (lse(0.6, 0.1) - 0.6) + (lse(0.5, 0.0) - 0.5)) / 3
    assert out.cql.item() == pytest.approx(cql)
    awac = (
        (lse(1.0, 2.0) - 2.0) * math.exp(0.4) + math.log(2) * math.exp(-0.1) + (lse(0.5, -0.5) - 0.5) * math.exp(-0.3)
    ) / 3
    assert out.awac.item() == pytest.approx(awac)
    assert out.loss.item() == pytest.approx(out.q.item() + out.v.item() + 0.1 * cql + awac)
    assert out.advantage.item() == pytest.approx((0.4 - 0.1 - 0.3) / 3, abs=1e-7)


def test_two_q_heads_sum_their_losses_and_the_target_is_their_minimum():
    action_logits, q, target_q, values, actions, rewards, mask = toy_batch()
    one = ilql_loss(action_logits, [q], [target_q], values, actions, rewards, mask, 0.5, 0.7, 0.1, 1.0, 1.0)
    higher = target_q + 1.0  # the minimum of the two targets is the original one
    two = ilql_loss(action_logits, [q, q], [target_q, higher], values, actions, rewards, mask, 0.5, 0.7, 0.1, 1.0, 1.0)
    assert two.q.item() == pytest.approx(2 * one.q.item()) and two.cql.item() == pytest.approx(2 * one.cql.item())
    assert two.v.item() == pytest.approx(one.v.item()) and two.awac.item() == pytest.approx(one.awac.item())


def test_gradients_reach_q_v_and_the_lm_but_not_the_targets():
    action_logits, q, target_q, values, actions, rewards, mask = toy_batch()
    tensors = [t.clone().requires_grad_(True) for t in (action_logits, q, target_q, values)]
    out = ilql_loss(
        tensors[0], [tensors[1]], [tensors[2]], tensors[3], actions, rewards, mask, 0.5, 0.7, 0.1, 1.0, 1.0
    )
    out.loss.backward()
    assert tensors[0].grad.abs().sum() > 0 and tensors[1].grad.abs().sum() > 0 and tensors[3].grad.abs().sum() > 0
    assert tensors[2].grad is None or tensors[2].grad.abs().sum() == 0
    assert tensors[1].grad[1, 1].abs().sum() == 0 and tensors[0].grad[1, 1].abs().sum() == 0  # padding: no gradient


def test_polyak_sync_moves_the_target_alpha_of_the_way():
    head, target = nn.Linear(2, 2), nn.Linear(2, 2)
    before = [p.clone() for p in target.parameters()]
    sync_target_heads(head, target, alpha=0.25)
    for t, b, h in zip(target.parameters(), before, head.parameters()):
        assert torch.allclose(t, 0.75 * b + 0.25 * h)
    sync_target_heads(head, target, alpha=1.0)
    assert all(torch.equal(t, h) for t, h in zip(target.parameters(), head.parameters()))


def test_policy_logits_shift_log_pi_by_beta_times_the_advantage():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # pi = (0.25, 0.75)
    q1, q2 = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 3.0]])  # min: (0.5, 2.0)
    shifted = ilql_policy_logits(logits, [q1, q2], torch.tensor([1.0]), beta=2.0)
    expected = [math.log(0.25) + 2 * (0.5 - 1.0), math.log(0.75) + 2 * (2.0 - 1.0)]
    assert shifted[0].tolist() == pytest.approx(expected)
    assert ilql_policy_logits(logits, [q1], torch.tensor([1.0]), beta=0.0).softmax(-1)[0].tolist() == pytest.approx(
        [0.25, 0.75]
    )  # beta 0: the behaviour policy itself


def test_action_positions_pack_each_rows_learned_tokens_in_order():
    from trlx.trainers.objectives import action_positions

    # Row 0: a two-turn sample (learned, prompt, learned, learned); row 1: one learned token, then padding.
    loss_mask = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]])
    positions, valid = action_positions(loss_mask)
    assert positions[0].tolist() == [0, 2, 3] and positions[1, 0].item() == 0
    assert valid.tolist() == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]]


def test_the_sampling_model_decodes_the_ilql_policy_of_the_full_forward(tiny_gpt2_path):
    """Step-by-step decoding through ILQLSamplingLM (KV cache, last position only) gives, at every step, the ILQL
    policy computed from one full forward of the whole sequence; beta 0 is the LM's own log-softmax."""
    from trlx.data.prompts import position_ids_from_mask
    from trlx.models.ilql import ILQLPolicy
    from trlx.models.policy import load_causal_lm
    from trlx.rollout.generation import _Decoder

    torch.manual_seed(0)
    policy = ILQLPolicy(load_causal_lm(str(tiny_gpt2_path)), two_qs=True, beta=2.0)
    ids = torch.tensor([[5, 6, 7, 8, 9], [3, 4, 5, 6, 7]])
    mask = torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]])  # left padding on row 0
    positions = position_ids_from_mask(mask)
    with torch.no_grad():
        full = policy(ids, mask, positions, 5, torch.arange(5).expand(2, 5))
        decoder = _Decoder(policy.sampling_lm)  # the decode loop's own caller: KV cache, last position only
        stepped = [decoder(ids[:, :3], mask[:, :3], positions[:, :3])]
        stepped += [decoder(ids[:, t : t + 1], mask[:, : t + 1], positions[:, t : t + 1]) for t in (3, 4)]
        for step, t in zip(stepped, (2, 3, 4)):
            expected = ilql_policy_logits(
                full.logits[:, t], [q[:, t] for q in full.target_qs], full.values[:, t], beta=2.0
            )
            assert torch.allclose(step, expected, atol=1e-5)
        policy.beta = 0.0
        plain = _Decoder(policy.sampling_lm)(ids, mask, positions)
        assert torch.allclose(plain, torch.log_softmax(full.logits[:, 4], -1), atol=1e-5)
