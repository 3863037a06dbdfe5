"""The sampling distribution (`sampling_logits`) against hand-computed values, and which gen_kwargs are refused."""

import math
import re

import pytest
import torch

from trlx.algorithms.ppo import entropy_from_logits, logprobs_of_labels
from trlx.algorithms.sampling import draw, eos_ban, sampling_logits
from trlx.rollout.options import SamplingParams, gen_kwargs_problem, merge_eos_ids

INF = float("inf")
# Probabilities 0.4, 0.3, 0.2, 0.1 (logits are their logs).
LOGITS = torch.tensor([0.4, 0.3, 0.2, 0.1]).log()


def probs(x):
    return torch.softmax(x, -1)


def test_no_options_is_the_identity_and_temperature_divides():
    assert torch.equal(sampling_logits(LOGITS), LOGITS)
    torch.testing.assert_close(sampling_logits(LOGITS, temperature=0.5), LOGITS / 0.5)
    # p^2 normalised: 0.16, 0.09, 0.04, 0.01 over 0.30
    torch.testing.assert_close(probs(sampling_logits(LOGITS, temperature=0.5)), torch.tensor([16, 9, 4, 1]) / 30.0)


def test_top_k_keeps_the_k_largest_and_renormalises():
    # top_k = 2: 0.4 and 0.3 survive, renormalised to 4/7 and 3/7.
    torch.testing.assert_close(probs(sampling_logits(LOGITS, top_k=2)), torch.tensor([4 / 7, 3 / 7, 0, 0]))
    assert torch.equal(sampling_logits(LOGITS, top_k=4), LOGITS)  # k >= V keeps all


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    # Sorted mass before each token: 0, 0.4, 0.7, 0.9. top_p = 0.65 keeps tokens whose preceding mass < 0.65: the
    # first two (0.4 + 0.3 = 0.7 >= 0.65). top_p = 0.7 also keeps two, top_p = 0.71 three, top_p = 0.3 one.
    torch.testing.assert_close(probs(sampling_logits(LOGITS, top_p=0.65)), torch.tensor([4 / 7, 3 / 7, 0, 0]))
    assert (probs(sampling_logits(LOGITS, top_p=0.71)) > 0).tolist() == [True, True, True, False]
    torch.testing.assert_close(probs(sampling_logits(LOGITS, top_p=0.3)), torch.tensor([1.0, 0, 0, 0]))


def test_top_p_applies_to_the_top_k_renormalised_distribution():
    # top_k = 3 renormalises to 4/9, 3/9, 2/9; top_p = 0.75 then keeps two (4/9 + 3/9 = 0.78 >= 0.75),
    # whereas on the full distribution top_p = 0.75 would keep three (0.4 + 0.3 = 0.7 < 0.75).
    torch.testing.assert_close(probs(sampling_logits(LOGITS, top_k=3, top_p=0.75)), torch.tensor([4 / 7, 3 / 7, 0, 0]))


def test_banned_tokens_get_no_mass():
    banned = torch.tensor([True, False, False, False])
    torch.testing.assert_close(probs(sampling_logits(LOGITS, banned=banned)), torch.tensor([0, 3, 2, 1]) / 6.0)


def test_keep_leaves_a_scored_token_in_the_support():
    # Token 3 (p = 0.1) is cut by top_k = 2; scoring it as an earlier-sampled token keeps it: 4/8, 3/8, 0, 1/8.
    x = sampling_logits(LOGITS[None], top_k=2, keep=torch.tensor([3]))
    torch.testing.assert_close(probs(x)[0], torch.tensor([4 / 8, 3 / 8, 0, 1 / 8]))
    assert logprobs_of_labels(x[None], torch.tensor([[3]])).item() == pytest.approx(math.log(1 / 8), abs=1e-6)


def test_entropy_ignores_cut_tokens():
    # top_k = 2: entropy of (4/7, 3/7), not nan from 0 * -inf.
    entropy = entropy_from_logits(sampling_logits(LOGITS, top_k=2)[None, None])
    expected = -(4 / 7 * math.log(4 / 7) + 3 / 7 * math.log(3 / 7))
    assert entropy.item() == pytest.approx(expected, abs=1e-6)


def test_eos_ban_marks_the_ids_inside_the_vocabulary():
    assert eos_ban((1, 3, 99), 5).tolist() == [False, True, False, True, False]


def test_merge_eos_ids_keeps_order_without_repeats():
    assert merge_eos_ids(2, [5, 2], None, 7) == (2, 5, 7)


def test_sampling_params_from_gen_kwargs():
    params = SamplingParams.from_gen_kwargs({"max_new_tokens": 8, "top_p": 0.9, "min_new_tokens": 2}, (2, 5), 0)
    assert params == SamplingParams(8, 2, 1.0, 0, 0.9, (2, 5), 0)
    assert params.for_reference() == SamplingParams(8, 2, 1.0, 0, 1.0, (2, 5), 0)
    explicit = SamplingParams.from_gen_kwargs({"max_new_tokens": 8, "eos_token_id": [9]}, (2, 5), 0)
    assert explicit.eos_token_ids == (9,)


@pytest.mark.parametrize(
    ("gen_kwargs", "field", "message"),
    [
        ({"max_new_tokens": 8, "repetition_penalty": 1.2}, "repetition_penalty", "does not score"),
        ({"max_new_tokens": 8, "no_repeat_ngram_size": 3}, "no_repeat_ngram_size", "does not score"),
        ({"max_new_tokens": 8, "num_beams": 4}, "num_beams", "not sampling"),
        ({"max_new_tokens": 8, "typical_p": 0.9}, "typical_p", "use top_k or top_p"),
        ({"max_new_tokens": 8, "stop_strings": ["\n"]}, "stop_strings", "task.stop_sequences"),
        ({"max_new_tokens": 8, "tempreature": 0.7}, "tempreature", "unknown sampling option"),
        ({"max_new_tokens": 8, "do_sample": False}, "do_sample", "greedy decoding is not a stochastic policy"),
        ({"max_new_tokens": 8, "top_p": 0.0}, "top_p", r"must be in \(0, 1\]"),
        ({"max_new_tokens": 8, "top_k": -1}, "top_k", "non-negative"),
        ({"max_new_tokens": 8, "min_new_tokens": 9}, "min_new_tokens", "must not exceed max_new_tokens"),
        ({"max_new_tokens": 8, "eos_token_id": "eos"}, "eos_token_id", "token id"),
        ({}, "max_new_tokens", "positive integer"),
    ],
)
def test_refused_gen_kwargs_name_the_option_and_why(gen_kwargs, field, message):
    problem = gen_kwargs_problem(gen_kwargs)
    assert problem is not None and problem[0] == field
    assert re.search(message, problem[1]), problem[1]


def test_supported_gen_kwargs_pass():
    gen_kwargs = {"max_new_tokens": 8, "min_new_tokens": 2, "temperature": 0.7, "top_k": 5, "top_p": 0.9}
    assert gen_kwargs_problem({**gen_kwargs, "do_sample": True, "use_cache": True, "eos_token_id": [1, 2]}) is None


def test_sampled_frequencies_match_the_processed_distribution():
    # Draw 20000 tokens from the processed logits the way the decode loop does; compare with the exact distribution.
    torch.manual_seed(0)
    x = sampling_logits(LOGITS.expand(20000, 4), temperature=0.8, top_k=3)
    draws = draw(x)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    p = torch.tensor([0.4, 0.3, 0.2, 0.0]) ** (1 / 0.8)
    torch.testing.assert_close(freq, p / p.sum(), atol=0.015, rtol=0)


def test_draw_never_picks_a_token_outside_the_support():
    # Zero-probability tokens first, in the middle and last: a uniform landing on a flat CDF step must skip them.
    logits = torch.tensor([[-INF, 0.0, -INF, 1.0, -INF]]).expand(5000, 5)
    torch.manual_seed(1)
    draws = draw(logits)
    assert set(draws.tolist()) == {1, 3}
    assert abs((draws == 3).float().mean().item() - math.e / (1 + math.e)) < 0.02
    torch.manual_seed(1)
    assert torch.equal(draw(logits), draws)  # the torch RNG drives it: seeded runs repeat


def test_draw_across_blocks_matches_the_distribution():
    # Mass 0.2, 0.3, 0.5 on tokens 3, 300 and 999 of 1000 (three different 256-token blocks, the last one partial).
    logits = torch.full((1, 1000), -INF)
    logits[0, [3, 300, 999]] = torch.tensor([0.2, 0.3, 0.5]).log()
    torch.manual_seed(0)
    draws = draw(logits.expand(20000, 1000))
    freq = torch.bincount(draws, minlength=1000).float() / len(draws)
    assert freq.nonzero().flatten().tolist() == [3, 300, 999]
    torch.testing.assert_close(freq[[3, 300, 999]], torch.tensor([0.2, 0.3, 0.5]), atol=0.015, rtol=0)
