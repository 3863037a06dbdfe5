import math

import pytest
import torch
from conftest import vocab_sized_allocations

from trlx.algorithms.ppo import (
    entropy_from_logits,
    logprobs_and_entropy,
    logprobs_of_labels,
    policy_loss,
    value_loss,
)


def test_policy_loss_not_clipped():
    # ratio = 1.1 with advantage 1 and eps = 0.2: clip(1.1) = 1.1, both terms are -1.1, nothing is clipped.
    # approx_kl (k3) = (1.1 - 1) - log 1.1 = 0.1 - 0.0953102 = 0.0046898
    logprobs = torch.tensor([[math.log(1.1)]], requires_grad=True)
    out = policy_loss(logprobs, torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), cliprange=0.2)
    torch.testing.assert_close(out.loss, torch.tensor(-1.1))
    torch.testing.assert_close(out.approx_kl, torch.tensor(0.0046898), atol=1e-6, rtol=0)
    assert out.clipfrac.item() == 0.0
    out.loss.backward()
    # d/dlogp of -A * exp(logp - old) = -A * ratio = -1.1
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.1]]))


def test_policy_loss_clipping_active_and_padding_ignored():
    # eps = 0.2, three valid tokens plus one padded token whose logprob is -inf:
    #   ratio 1.1, A = +1: terms (-1.1, -1.1)  -> -1.1, not clipped
    #   ratio 1.5, A = +1: terms (-1.5, -1.2)  -> -1.2, clipped (pg_loss2 > pg_loss1)
    #   ratio 0.5, A = -1: terms ( 0.5,  0.8)  ->  0.8, clipped
    # loss = (-1.1 - 1.2 + 0.8) / 3 = -0.5, clipfrac = 2/3
    # approx_kl = mean(0.1 - log 1.1, 0.5 - log 1.5, -0.5 - log 0.5)
    #           = (0.0046898 + 0.0945349 + 0.1931472) / 3 = 0.0974573
    ratios = torch.tensor([1.1, 1.5, 0.5])
    logprobs = torch.cat([ratios.log(), torch.tensor([float("-inf")])]).unsqueeze(0).requires_grad_(True)
    old_logprobs = torch.zeros(1, 4)
    advantages = torch.tensor([[1.0, 1.0, -1.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    out = policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2)
    torch.testing.assert_close(out.loss, torch.tensor(-0.5))
    torch.testing.assert_close(out.clipfrac, torch.tensor(2 / 3))
    torch.testing.assert_close(out.approx_kl, torch.tensor(0.0974573), atol=1e-6, rtol=0)
    out.loss.backward()
    # Clipped tokens get no gradient; the unclipped one gets -A * ratio / n = -1.1 / 3; padding gets 0, not nan.
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.1 / 3, 0.0, 0.0, 0.0]]))


def test_policy_loss_pessimistic_branch_is_not_counted_as_clipped():
    # ratio 0.5 with A = +1: terms (-0.5, -0.8) -> max is the unclipped -0.5, so clipfrac is 0 even though
    # |ratio - 1| > eps.
    out = policy_loss(
        torch.tensor([[math.log(0.5)]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), cliprange=0.2
    )
    torch.testing.assert_close(out.loss, torch.tensor(-0.5))
    assert out.clipfrac.item() == 0.0


def test_value_loss_hand_computed():
    # cliprange_value = 0.5, old values all 0:
    #   v = 1.0, R = 1.0: (v-R)^2 = 0,    clip(v) = 0.5, (0.5-1)^2 = 0.25 -> 0.25, clipped branch active
    #   v = 0.2, R = 1.0: (v-R)^2 = 0.64, clip(v) = 0.2, same 0.64      -> 0.64, not active (equal)
    #   v = 2.0, R = 0.0: (v-R)^2 = 4,    clip(v) = 0.5, 0.25           -> 4,    not active
    # loss = 0.5 * (0.25 + 0.64 + 4) / 3 = 0.815, clipfrac = 1/3; the padded nan is ignored.
    values = torch.tensor([[1.0, 0.2, 2.0, float("nan")]], requires_grad=True)
    old_values = torch.zeros(1, 4)
    returns = torch.tensor([[1.0, 1.0, 0.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = value_loss(values, old_values, returns, mask, cliprange_value=0.5)
    torch.testing.assert_close(out.loss, torch.tensor(0.815))
    torch.testing.assert_close(out.clipfrac, torch.tensor(1 / 3))
    out.loss.backward()
    # Token 0's loss comes from the clipped prediction (constant in v): zero gradient. Token 1: torch.max splits
    # the gradient of tied terms, whose sum is (v - R) / 3 = -0.8 / 3. Token 2: (v - R) / 3 = 2 / 3. The padded
    # NaN value gets 0, not NaN (NaN * 0 through the square would poison the whole update).
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, -0.8 / 3, 2 / 3, 0.0]]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logprobs_of_labels_matches_log_softmax(dtype):
    generator = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 5, 11, generator=generator)).to(dtype)
    labels = torch.randint(0, 11, (2, 5), generator=generator)
    expected = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    got = logprobs_of_labels(logits, labels)
    assert got.shape == (2, 5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_logprobs_of_labels_gradient():
    logits = torch.randn(1, 2, 4, requires_grad=True)
    labels = torch.tensor([[1, 3]])
    logprobs_of_labels(logits, labels).sum().backward()
    # d log softmax(x)_y / dx = onehot(y) - softmax(x)
    expected = torch.nn.functional.one_hot(labels, 4).float() - torch.softmax(logits.detach(), dim=-1)
    torch.testing.assert_close(logits.grad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_logprobs_and_entropy_match_the_unfused_formulas(dtype):
    generator = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(2, 4, 9, generator=generator, dtype=torch.float64)
    logits[0, 1, [2, 5, 7]] = float("-inf")  # a top-k/top-p cut: these tokens carry no mass and no entropy
    labels = torch.randint(0, 9, (2, 4), generator=generator)
    labels[0, 1] = 0
    logprobs, entropy = logprobs_and_entropy(logits.to(dtype), labels)
    reference = logits.to(dtype).to(torch.float64)
    probs = torch.softmax(reference, dim=-1)
    expected_entropy = -(probs * torch.where(probs > 0, probs.log(), torch.zeros(()))).sum(-1)
    expected_logprobs = torch.log_softmax(reference, dim=-1).gather(-1, labels[..., None]).squeeze(-1)
    assert logprobs.dtype == entropy.dtype == (torch.float32 if dtype == torch.bfloat16 else dtype)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(logprobs.double(), expected_logprobs, atol=tol, rtol=tol)
    torch.testing.assert_close(entropy.double(), expected_entropy, atol=tol, rtol=tol)
    assert torch.isfinite(entropy).all()
    torch.testing.assert_close(entropy, entropy_from_logits(logits.to(dtype).to(entropy.dtype)))


def test_fused_logprobs_gradient_is_weighted_onehot_minus_softmax():
    logits = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    logits.data[1, 2, :2] = float("-inf")
    labels = torch.tensor([[0, 4, 2], [1, 3, 4]])
    weights = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]], dtype=torch.float64)
    logprobs, entropy = logprobs_and_entropy(logits, labels)
    assert not entropy.requires_grad  # a statistic: no gradient flows through it
    (logprobs * weights).sum().backward()
    onehot = torch.nn.functional.one_hot(labels, 5).double()
    expected = weights[..., None] * (onehot - torch.softmax(logits.detach(), dim=-1))
    torch.testing.assert_close(logits.grad, expected)
    finite = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: logprobs_and_entropy(x, labels)[0], (finite,))


def test_entropy_from_logits():
    # Uniform over V = 8 has entropy log 8; a one-hot-ish distribution has entropy near 0.
    logits = torch.zeros(1, 3, 8)
    logits[0, 1, 2] = 100.0
    logits[0, 2] = torch.tensor([0.0, 1.0, 2.0, 3.0, -1.0, 0.5, 0.0, 2.5])
    probs = torch.softmax(logits[0, 2], dim=-1)
    expected_row2 = -(probs * probs.log()).sum()
    entropy = entropy_from_logits(logits)
    assert entropy.shape == (1, 3)
    torch.testing.assert_close(entropy[0, 0], torch.tensor(math.log(8)))
    assert abs(entropy[0, 1].item()) < 1e-6
    torch.testing.assert_close(entropy[0, 2], expected_row2)


def test_fused_logprobs_allocate_one_vocabulary_sized_buffer_in_forward_and_one_in_backward():
    # (B, T, V) buffers are the largest tensors of an update (48 MiB each on W1); the unfused formulas, and an
    # earlier version of this function, allocated 3 in forward (logsumexp's, x - lse, its exp) and 2 in backward.
    logits = torch.randn(2, 3, 20_000, requires_grad=True)
    labels = torch.randint(0, 20_000, (2, 3))
    out = []
    assert len(vocab_sized_allocations(lambda: out.append(logprobs_and_entropy(logits, labels)), logits.shape)) == 1
    assert len(vocab_sized_allocations(lambda: out[0][0].sum().backward(), logits.shape)) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_ban_inside_the_fused_logprobs_equals_masking_the_logits_first(dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 7, generator=g).to(dtype)
    logits[0, 1, 4] = float("-inf")  # a top-k/top-p cut as well
    labels = torch.tensor([[1, 2, 3], [0, 6, 5]])
    banned = torch.zeros(3, 7, dtype=torch.bool)
    banned[:2, 0] = True  # EOS (id 0) banned at the first two positions: the label at [1, 0] is banned
    grads = []
    results = []
    for ban_inside in (False, True):
        x = logits.clone().requires_grad_(True)
        inputs = (x, labels, banned) if ban_inside else (x.masked_fill(banned, float("-inf")), labels)
        logprobs, entropy = logprobs_and_entropy(*inputs)
        weights = torch.tensor([[1.0, 2.0, 3.0], [0.0, 5.0, 6.0]])  # no weight on the -inf log-prob
        (torch.where(weights > 0, logprobs, 0.0) * weights).sum().backward()
        results.append((logprobs.detach(), entropy))
        grads.append(x.grad)
    assert results[1][0][1, 0] == float("-inf")
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)  # the same ops on the same values
    torch.testing.assert_close(results[1][1], results[0][1], rtol=0, atol=0)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)
    assert (grads[1][:, :2, 0] == 0).all()
