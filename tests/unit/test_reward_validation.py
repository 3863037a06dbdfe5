import math

import numpy as np
import pytest
import torch

from trlx.rewards.scoring import RewardError, call_with_accepted_kwargs, validate_rewards


def test_scalar_scores():
    scores, dense = validate_rewards([1, 0.5, np.float32(2.0)], lengths=[2, 3, 1], width=3)
    assert scores.tolist() == [1.0, 0.5, 2.0] and dense is None
    scores, _ = validate_rewards(torch.tensor([0.25, -1.0]), lengths=[1, 1], width=1)
    assert scores.tolist() == [0.25, -1.0]


def test_a_column_of_scores_is_one_score_per_sample():
    """A reward model's (B, 1) logits are B scores, even when every response has one token (where B one-token
    dense lists would also fit)."""
    for column in (torch.tensor([[0.5], [-1.0]]), np.array([[0.5], [-1.0]])):
        scores, dense = validate_rewards(column, lengths=[1, 1], width=1)
        assert scores.tolist() == [0.5, -1.0] and dense is None
    scores, dense = validate_rewards(torch.tensor([[0.5], [-1.0]]), lengths=[3, 2], width=3)
    assert scores.tolist() == [0.5, -1.0] and dense is None


def test_dense_scores_align_with_tokens():
    scores, dense = validate_rewards([[0.5, 0.5], [1.0, 0.0, 2.0]], lengths=[2, 3], width=3)
    assert dense.tolist() == [[0.5, 0.5, 0.0], [1.0, 0.0, 2.0]]
    assert scores.tolist() == [1.0, 3.0]


@pytest.mark.parametrize(
    "raw, message",
    [
        ([1.0], "returned 1 scores for 2 samples"),
        ([1.0, math.nan], "returned nan for score 1"),
        ([1.0, math.inf], "returned inf for score 1"),
        ([1.0, "good"], "non-number for score 1: 'good'"),
        ([1.0, None], "non-number for score 1"),
        ([True, 1.0], "non-number for score 0"),
        (0.5, "must return a list"),
        ([[1.0], 2.0], "mixed scalars and per-token lists"),
        ([[1.0], [1.0, 2.0, 3.0]], "dense reward for sample 1 has 3 entries but the response has 2 tokens"),
    ],
)
def test_bad_rewards_raise_clear_errors(raw, message):
    with pytest.raises(RewardError) as err:
        validate_rewards(raw, lengths=[1, 2], width=2)
    assert message in str(err.value)


def test_only_accepted_kwargs_are_passed():
    def narrow(samples, outputs):
        return (samples, outputs)

    def wide(samples, **kwargs):
        return sorted(kwargs)

    assert call_with_accepted_kwargs(narrow, samples=1, prompts=2, outputs=3, tokenizer=4) == (1, 3)
    assert call_with_accepted_kwargs(wide, samples=1, prompts=2, outputs=3) == ["outputs", "prompts"]


def test_dense_rewards_sized_without_the_closing_eos_as_trlx_users_size_them(tiny_tokenizer):
    """A response closed by EOS may get one entry per text token (trlX's `len(tokenizer(output).input_ids)`):
    entry t still lands on response token t and the EOS token gets 0. Without a closing EOS it must be exact."""
    from trlx.rewards.scoring import compute_scores
    from trlx.types import Generation, PromptBatch

    tok = tiny_tokenizer
    good, movie, eos, pad = (tok.convert_tokens_to_ids(w) for w in ("good", "movie", "[EOS]", "[PAD]"))
    prompt = PromptBatch(torch.ones(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), ["a", "b"], [{}, {}])
    generation = Generation(
        prompt=prompt,
        response_ids=torch.tensor([[good, movie, eos], [good, movie, good]]),
        response_mask=torch.ones(2, 3, dtype=torch.long),
        outputs=["good movie", "good movie good"],
    )

    def per_text_token(samples, outputs, tokenizer, **kwargs):
        return [[1.0 + t for t in range(len(tokenizer(o).input_ids))] for o in outputs]

    scores, dense = compute_scores(per_text_token, generation, tok)
    assert dense.tolist() == [[1.0, 2.0, 0.0], [1.0, 2.0, 3.0]] and scores.tolist() == [3.0, 6.0]
    with pytest.raises(RewardError, match=r"sample 1 has 2 entries but the response has 3 tokens$"):
        compute_scores(lambda samples, **kw: [[1.0, 1.0], [1.0, 1.0]], generation, tok)
