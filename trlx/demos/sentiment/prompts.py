"""Prompts for the sentiment demo: the opening words of IMDB reviews, which the policy learns to continue positively."""

from __future__ import annotations

import random

from trlx.datasets.imdb import load_imdb

DEFAULT_WORDS = 8


def review_opening(text: str, words: int) -> str:
    """The first `words` whitespace-separated words of `text`, joined by single spaces."""
    return " ".join(text.split()[:words])


def build_prompts(
    n_train: int, n_eval: int, words: int = DEFAULT_WORDS, seed: int = 0, max_chars: int | None = None
) -> tuple[list[str], list[str]]:
    """Train and held-out eval prompts: openings of `words` words from distinct, randomly chosen IMDB reviews.

    * Eval prompts come from other reviews than train prompts, and no prompt string occurs twice in either
      list or in both (common openings such as "This is one of the worst movies" are kept once).
    * The eval list is drawn first, so it depends only on `seed` (and `words`), not on `n_train`.
    * Only reviews longer than `words` words are used, so every prompt is a genuine opening the review
      continues; openings longer than `max_chars` (default 12 characters per word: URLs, run-on tokens)
      are skipped, which bounds the prompt length in both words and characters.
    * Reviews of both labels are drawn alike, so prompts start as many negative reviews as positive ones.
    """
    if n_train < 0 or n_eval < 0:
        raise ValueError(f"n_train and n_eval must be >= 0, got {n_train} and {n_eval}")
    if words < 1:
        raise ValueError(f"words must be >= 1, got {words}")
    max_chars = 12 * words if max_chars is None else max_chars
    reviews = load_imdb()
    order = list(range(len(reviews)))
    random.Random(seed).shuffle(order)

    chosen: list[str] = []
    seen: set[str] = set()
    for index in order:
        if len(chosen) == n_eval + n_train:
            break
        text = reviews[index].text
        prompt = review_opening(text, words)
        if len(text.split()) <= words or len(prompt) > max_chars or prompt in seen:
            continue
        seen.add(prompt)
        chosen.append(prompt)
    if len(chosen) < n_eval + n_train:
        raise ValueError(
            f"only {len(chosen)} distinct prompts of {words} words and <= {max_chars} characters exist, "
            f"asked for n_train + n_eval = {n_train + n_eval}"
        )
    return chosen[n_eval:], chosen[:n_eval]
