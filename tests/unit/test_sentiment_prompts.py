"""Sentiment demo prompts: held-out split, determinism, bounded length."""

from __future__ import annotations

import pytest

from trlx.datasets import load_imdb
from trlx.demos.sentiment.prompts import build_prompts


def test_eval_prompts_are_held_out() -> None:
    train, evals = build_prompts(n_train=400, n_eval=100, seed=0)
    assert (len(train), len(evals)) == (400, 100)
    assert len(set(train)) == 400 and len(set(evals)) == 100
    assert not set(train) & set(evals)
    # Different reviews too: no review opens with both a train and an eval prompt.
    openings_of = {}
    for index, review in enumerate(load_imdb()):
        openings_of.setdefault(" ".join(review.text.split()[:8]), set()).add(index)
    train_reviews = set().union(*(openings_of[p] for p in train))
    eval_reviews = set().union(*(openings_of[p] for p in evals))
    assert not train_reviews & eval_reviews


def test_prompts_are_deterministic_per_seed() -> None:
    assert build_prompts(50, 20, seed=3) == build_prompts(50, 20, seed=3)
    assert build_prompts(50, 20, seed=3) != build_prompts(50, 20, seed=4)
    # The eval set does not move when the train set grows.
    assert build_prompts(10, 20, seed=3)[1] == build_prompts(200, 20, seed=3)[1]


@pytest.mark.parametrize("words", [4, 8])
def test_prompt_length_is_bounded(words: int) -> None:
    train, evals = build_prompts(n_train=300, n_eval=50, words=words, max_chars=10 * words)
    for prompt in train + evals:
        assert len(prompt.split()) == words
        assert 0 < len(prompt) <= 10 * words
        assert prompt == prompt.strip() and "  " not in prompt


def test_prompts_are_review_openings() -> None:
    openings = {" ".join(r.text.split()[:8]) for r in load_imdb()}
    train, evals = build_prompts(n_train=30, n_eval=10)
    assert set(train + evals) <= openings


def test_too_many_prompts_is_an_error() -> None:
    with pytest.raises(ValueError, match="distinct prompts"):
        build_prompts(n_train=30_000, n_eval=0, words=8)
