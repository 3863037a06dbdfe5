"""A learned reward: a Hugging Face trunk plus a scalar head, normalised as in Ziegler et al. 2019.

Pooling. A causal trunk (GPT-2, Llama, ...) attends only leftwards, so only the last real token has read the whole
text: we score its hidden state (the paper's reward model is the policy trunk with a head on the final token). A
bidirectional encoder (BERT, MiniLM, ...) lets every position see everything, and sentence encoders are trained to
be mean-pooled, so we average the hidden states over real tokens. The kind is taken from the config: a model type
that has a masked-LM head in transformers and is not configured as a decoder is an encoder; anything else is causal.
Pass ``pooling=`` to override.

Normalisation (paper sec. 2.2): after training, the reward is shifted and scaled so that on a reference set of
samples it has mean 0 and standard deviation 1: ``reward = gain * raw + bias``. gain and bias travel with the
checkpoint, so PPO hyperparameters (KL coefficient, clipping) mean the same thing whichever reward model is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

__all__ = ["RewardModel", "infer_pooling", "tokenizer_fingerprint"]

Pooling = Literal["last", "mean"]
HEAD_FILE = "reward_head.safetensors"
META_FILE = "reward_model.json"
FORMAT_VERSION = 1


def infer_pooling(config: Any) -> Pooling:
    """ "mean" for bidirectional encoders, "last" for causal trunks (see the module docstring)."""
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"encoder-decoder backbones ({config.model_type}) are not supported as reward models; "
            "use an encoder (e.g. BERT, MiniLM) or a causal LM"
        )
    is_encoder = config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    return "mean" if is_encoder else "last"


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """Name, vocabulary size and a hash of the token->id map: what must match for saved weights to make sense."""
    vocab = sorted(tokenizer.get_vocab().items())
    digest = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
    return {"name": tokenizer.name_or_path, "vocab_size": len(tokenizer), "vocab_sha256": digest}


def pool(hidden: Tensor, attention_mask: Tensor, pooling: Pooling) -> Tensor:
    """Reduce token states to one vector per text.

    hidden: (B, T, H) float; attention_mask: (B, T) {0, 1}; returns (B, H).
    "last" finds the last position whose mask is 1, so it works for left- and right-padded batches alike.
    """
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (attention_mask.long() * positions).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


class RewardModel(nn.Module):
    """score(text) = gain * head(pool(backbone(text))) + bias, one float per text."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooling: Pooling | None = None,
        max_length: int = 512,
    ):
        super().__init__()
        if pooling not in (None, "last", "mean"):
            raise ValueError(f"pooling must be 'last', 'mean' or None (infer), got {pooling!r}")
        num_embeddings = backbone.get_input_embeddings().num_embeddings
        if len(tokenizer) > num_embeddings:
            raise ValueError(
                f"tokenizer {tokenizer.name_or_path!r} has {len(tokenizer)} tokens but the backbone embeds only "
                f"{num_embeddings}: they do not belong together; load the tokenizer saved with the backbone"
            )
        if tokenizer.pad_token is None:
            # Causal LMs often ship without a pad token; padded positions are masked out of pooling anyway.
            tokenizer.pad_token = tokenizer.eos_token
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling or infer_pooling(backbone.config)
        self.max_length = max_length
        self.head = nn.Linear(backbone.config.hidden_size, 1)
        # Buffers, not parameters: they move with .to(device) but no optimiser touches them.
        self.register_buffer("reward_gain", torch.ones(()))
        self.register_buffer("reward_bias", torch.zeros(()))

    @classmethod
    def from_backbone(
        cls, path: str | os.PathLike[str], pooling: Pooling | None = None, max_length: int = 512, **model_kwargs: Any
    ) -> RewardModel:
        """A fresh (untrained head) reward model on the pretrained trunk at ``path``."""
        backbone = AutoModel.from_pretrained(path, **model_kwargs)
        return cls(backbone, AutoTokenizer.from_pretrained(path), pooling=pooling, max_length=max_length)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def encode(self, texts: Sequence[str]) -> dict[str, Tensor]:
        # Right padding keeps position ids starting at 0 for every text; pooling reads the mask, not the side.
        enc = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            padding_side="right",
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"].to(self.device), "attention_mask": enc["attention_mask"].to(self.device)}

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Raw (unnormalised) rewards. input_ids, attention_mask: (B, T); returns (B,) float32."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = pool(hidden, attention_mask, self.pooling)
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1).float()

    def normalized(self, raw: Tensor) -> Tensor:
        return self.reward_gain * raw + self.reward_bias

    @torch.no_grad()
    def raw_scores(self, texts: Sequence[str], batch_size: int = 32) -> Tensor:
        """Raw rewards of ``texts`` in eval mode (dropout off); returns (N,) float32 on CPU."""
        was_training = self.training
        self.eval()
        try:
            chunks = [self(**self.encode(texts[i : i + batch_size])) for i in range(0, len(texts), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(chunks).cpu() if chunks else torch.zeros(0)

    def score(self, texts: Sequence[str], batch_size: int = 32) -> Tensor:
        """Normalised rewards of ``texts``: (N,) float32 on CPU."""
        return self.normalized(self.raw_scores(texts, batch_size).to(self.device)).cpu()

    def normalize(self, reference_texts: Sequence[str], batch_size: int = 32) -> dict[str, float]:
        """Set gain and bias so the rewards of ``reference_texts`` have mean 0 and (population) std 1.

        The reference set should be samples like the ones PPO will score: the paper uses samples from the initial
        policy. Returns the raw mean and std it normalised away.
        """
        if len(reference_texts) < 2:
            raise ValueError("normalize needs at least 2 reference texts")
        raw = self.raw_scores(reference_texts, batch_size).double()
        mean, std = raw.mean().item(), raw.std(unbiased=False).item()
        if not std > 1e-8:
            raise ValueError(f"raw rewards on the reference set are constant ({mean:.6g}); cannot scale to std 1")
        self.reward_gain.fill_(1.0 / std)
        self.reward_bias.fill_(-mean / std)
        return {"raw_mean": mean, "raw_std": std}

    def as_reward_fn(self, batch_size: int = 32) -> RewardModelScorer:
        """The ``RewardFn`` PPO calls: normalised score of each full sample (prompt + continuation)."""
        return RewardModelScorer(self, batch_size)

    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write an HF-format trunk + tokenizer, ``reward_head.safetensors`` and ``reward_model.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.backbone.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        head = {"weight": self.head.weight.detach().cpu().contiguous(), "bias": self.head.bias.detach().cpu()}
        save_file(head, str(directory / HEAD_FILE))
        meta = {
            "format_version": FORMAT_VERSION,
            "pooling": self.pooling,
            "backbone_kind": "encoder" if self.pooling == "mean" else "causal",
            "model_type": self.backbone.config.model_type,
            "max_length": self.max_length,
            "normalization": {"gain": self.reward_gain.item(), "bias": self.reward_bias.item()},
            "tokenizer": tokenizer_fingerprint(self.tokenizer),
        }
        # Written last and atomically: a directory with reward_model.json is a complete checkpoint.
        tmp = directory / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, directory / META_FILE)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        device: str | torch.device | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> RewardModel:
        """Load what ``save_pretrained`` wrote, in eval mode; refuses a tokenizer other than the saved one."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path} not found: {directory} is not a saved RewardModel")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format_version {meta.get('format_version')!r}")
        tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(directory)
        _check_tokenizer(tokenizer, meta["tokenizer"], directory)
        model = cls(AutoModel.from_pretrained(directory), tokenizer, meta["pooling"], meta["max_length"])
        model.head.load_state_dict(load_file(str(directory / HEAD_FILE)))
        model.reward_gain.fill_(meta["normalization"]["gain"])
        model.reward_bias.fill_(meta["normalization"]["bias"])
        return model.to(device or "cpu").eval()


def _check_tokenizer(tokenizer: PreTrainedTokenizerBase, saved: dict[str, Any], directory: Path) -> None:
    # A tokenizer with different ids feeds the trunk the wrong embeddings and still returns confident-looking
    # numbers, so refuse it loudly instead.
    found = tokenizer_fingerprint(tokenizer)
    problem = None
    if found["vocab_size"] != saved["vocab_size"]:
        problem = f"vocab size {found['vocab_size']} != {saved['vocab_size']} saved with the model"
    elif found["vocab_sha256"] != saved["vocab_sha256"]:
        problem = "same vocab size but a different token->id map (vocab hash differs)"
    if problem:
        raise ValueError(
            f"tokenizer {found['name']!r} does not match the reward model in {directory} "
            f"(trained with {saved['name']!r}): {problem}. Use the tokenizer saved in that directory."
        )


class RewardModelScorer:
    """``RewardFn`` over a ``RewardModel``: scores ``samples`` in batches, no gradients, eval mode, python floats.

    Every process of a distributed run holds its own copy and scores its own samples; nothing here depends on rank.
    """

    def __init__(self, model: RewardModel, batch_size: int = 32):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.batch_size = batch_size

    def __call__(self, samples: list[str], prompts: list[str], outputs: list[str], **metadata: Any) -> list[float]:
        return self.model.score(samples, self.batch_size).tolist()
