"""Sentiment rewards: VADER and the learned MiniLM + logistic-head reward model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trlx.datasets import load_imdb
from trlx.demos.sentiment import rewards
from trlx.demos.sentiment.rewards import (
    LearnedSentimentReward,
    fit_logistic_head,
    train_or_load_sentiment_rm,
    vader_reward,
)

POSITIVE = [
    "This movie was wonderful, I loved every minute of it.",
    "A brilliant, moving film with superb acting. Highly recommended!",
]
NEGATIVE = [
    "This movie was terrible, a boring waste of time.",
    "Awful script, dreadful acting, I hated it and walked out.",
]

# Fast setting: 300 train / 200 held-out reviews at 64 tokens embeds in ~20-30 s on 2 CPU cores.
# Measured held-out accuracy on these 200 reviews: 0.655 (0.69 on 1000 others; chance is 0.5). The fit is
# deterministic on CPU, so the margin only absorbs BLAS differences between machines.
FAST = {"n_train": 300, "n_eval": 200, "max_length": 64}
FAST_ACCURACY_FLOOR = 0.62


def test_vader_scores_outputs_only_and_ranks_sentiment() -> None:
    prompts = ["I hated this film because"] * 4
    outputs = POSITIVE + NEGATIVE
    scores = vader_reward(
        samples=[p + o for p, o in zip(prompts, outputs, strict=True)], prompts=prompts, outputs=outputs
    )
    assert len(scores) == 4 and all(-1.0 <= s <= 1.0 for s in scores)
    assert min(scores[:2]) > 0.5 > -0.5 > max(scores[2:])
    # The (negative) prompt is not scored: a neutral continuation stays neutral.
    assert vader_reward(
        ["I hated this film. It is 90 minutes long."], ["I hated this film."], [" It is 90 minutes long."]
    ) == [0.0]


def test_logistic_head_separates_separable_data() -> None:
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 5, generator=generator)
    labels = (features[:, 0] - 0.5 * features[:, 3] > 0).long()
    weight, bias = fit_logistic_head(features, labels, l2=1e-4)
    assert ((features @ weight + bias > 0).long() == labels).float().mean().item() >= 0.98
    # The direction found is the true boundary's normal (1, 0, 0, -0.5, 0), up to scale.
    true_normal = torch.tensor([1.0, 0.0, 0.0, -0.5, 0.0])
    assert torch.nn.functional.cosine_similarity(weight, true_normal, dim=0).item() > 0.99


@pytest.fixture(scope="module")
def fast_rm(tmp_path_factory: pytest.TempPathFactory) -> tuple[LearnedSentimentReward, Path]:
    cache = tmp_path_factory.mktemp("trlx-cache")
    return train_or_load_sentiment_rm(cache, **FAST), cache


def test_learned_rm_ranks_positive_above_negative(fast_rm: tuple[LearnedSentimentReward, Path]) -> None:
    rm, _ = fast_rm
    scores = rm(samples=POSITIVE + NEGATIVE, prompts=[""] * 4, outputs=POSITIVE + NEGATIVE)
    assert all(-1.0 <= s <= 1.0 for s in scores)
    assert min(scores[:2]) > 0 > max(scores[2:])
    assert rm.score([]) == []


def test_learned_rm_held_out_accuracy(fast_rm: tuple[LearnedSentimentReward, Path]) -> None:
    rm, _ = fast_rm
    meta = rm.metadata
    assert (meta["n_train"], meta["n_eval"], meta["max_length"]) == (300, 200, 64)
    assert meta["eval_accuracy"] >= FAST_ACCURACY_FLOOR, meta


def test_learned_rm_is_cached_and_reloads_identically(
    fast_rm: tuple[LearnedSentimentReward, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rm, cache = fast_rm

    def must_not_fit(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached reward model was fitted again")

    monkeypatch.setattr(LearnedSentimentReward, "fit", must_not_fit)
    # Share the already-loaded encoder so the reload costs only the head.
    monkeypatch.setattr(rewards, "SentenceEncoder", lambda **kwargs: rm.encoder)
    again = train_or_load_sentiment_rm(cache, **FAST)
    assert again.metadata == rm.metadata
    assert again.score(POSITIVE + NEGATIVE) == pytest.approx(rm.score(POSITIVE + NEGATIVE), abs=1e-6)
    saved = list((cache / "reward_models").iterdir())
    assert [p.name for p in saved] == ["imdb-minilm-train300-eval200-len64"]
    assert {p.name for p in saved[0].iterdir()} == {"head.safetensors", "meta.json"}


def test_unfitted_rm_refuses_to_score(fast_rm: tuple[LearnedSentimentReward, Path], tmp_path: Path) -> None:
    rm, _ = fast_rm
    blank = LearnedSentimentReward(rm.encoder)
    with pytest.raises(RuntimeError, match="fit"):
        blank.score(["text"])
    with pytest.raises(RuntimeError, match="fitted"):
        blank.save(tmp_path)


@pytest.mark.slow
def test_default_rm_held_out_accuracy(tmp_path: Path) -> None:
    """The demo's reward model: 2000 train / 1000 held-out IMDB reviews at 128 tokens (~3 min on 2 cores)."""
    rm = train_or_load_sentiment_rm(tmp_path)
    # Measured: 0.747 held-out (train 0.790). A frozen sentence encoder caps a linear probe near 0.75 here.
    assert rm.metadata["eval_accuracy"] >= 0.71, rm.metadata
    reloaded = LearnedSentimentReward.load(next((tmp_path / "reward_models").iterdir()), rm.encoder)
    held_out = load_imdb(3000)[2000:]
    assert reloaded.accuracy(held_out) == pytest.approx(rm.metadata["eval_accuracy"], abs=1e-3)
