"""Train a reward model on human comparisons (Ziegler et al. 2019, sec. 2.2), top to bottom:

load comparisons -> split by comparison into train / held-out -> expand choices into (chosen, rejected) pairs ->
Bradley-Terry updates -> held-out loss and accuracy -> normalise on the training samples -> save.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import yaml

from trlx.algorithms.preference import bradley_terry_loss, pairs_from_choice, preference_accuracy
from trlx.config import numbers_from_strings, yaml_problem
from trlx.feedback.store import Comparison, append_json_line, read_comparisons
from trlx.rewards.reward_model import RewardModel

__all__ = ["RewardModelConfig", "train_reward_model"]

Pair = tuple[str, str]
"""(chosen text, rejected text); each text is prompt + candidate, the same string PPO passes as a sample."""


@dataclass
class RewardModelConfig:
    """Everything ``trlx train-rm`` needs; load with ``from_yaml`` and override with ``field=value``."""

    backbone: str = ""
    """Path or name of the Hugging Face model whose trunk is fine-tuned (an encoder or a causal LM)."""
    comparisons: str = ""
    """JSONL file of comparisons written by ``trlx label`` (or trlx.feedback.append_comparison)."""
    output_dir: str = "reward_model"
    """Where the checkpoint (HF format + reward_head.safetensors + reward_model.json) and metrics.jsonl go."""
    eval_fraction: float = 0.1
    """Share of comparisons held out for eval accuracy; split by comparison so no prompt straddles the split."""
    lr: float = 1e-5
    """AdamW learning rate for trunk and head."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    batch_size: int = 16
    """Pairs per optimiser step."""
    epochs: int = 1
    """Passes over the training pairs; the paper trains a single epoch because reward models overfit fast."""
    max_length: int = 512
    """Tokens kept per text (prompt + candidate); longer texts are truncated."""
    grad_clip: float = 1.0
    """Max global gradient norm; 0 disables clipping."""
    seed: int = 0
    """Seeds head initialisation, the train/eval split and batch order."""
    normalize_on: Literal["train"] | None = "train"
    """'train': set reward mean 0 / std 1 over all training samples; None: keep raw scores."""
    pooling: Literal["last", "mean"] | None = None
    """Override the pooling inferred from the backbone ('last' for causal, 'mean' for encoders)."""
    device: str | None = None
    """Torch device; None picks cuda when available, else cpu."""
    skip_malformed: bool = False
    """Warn about and skip malformed lines in the comparisons file instead of stopping."""
    log_every: int = 10
    """Optimiser steps between lines in metrics.jsonl."""

    def __post_init__(self) -> None:
        for name in ("backbone", "comparisons", "output_dir"):
            if not getattr(self, name):
                raise ValueError(f"RewardModelConfig.{name} is required (a path), got {getattr(self, name)!r}")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"RewardModelConfig.eval_fraction must be in [0, 1), got {self.eval_fraction}")
        for name in ("batch_size", "epochs", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"RewardModelConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"RewardModelConfig.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("RewardModelConfig.weight_decay and grad_clip must be >= 0")
        if self.normalize_on not in ("train", None):
            raise ValueError(f"RewardModelConfig.normalize_on must be 'train' or None, got {self.normalize_on!r}")
        if self.pooling not in ("last", "mean", None):
            raise ValueError(f"RewardModelConfig.pooling must be 'last', 'mean' or None, got {self.pooling!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardModelConfig:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ValueError(f"unknown RewardModelConfig field(s) {unknown}; allowed: {known}")
        hints = typing.get_type_hints(cls)
        floats = {name for name, hint in hints.items() if hint is float or float in typing.get_args(hint)}
        return cls(**{k: numbers_from_strings(v) if k in floats else v for k, v in data.items()})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: typing.Sequence[str] = ()) -> RewardModelConfig:
        """Read a YAML mapping of fields, then apply ``field=value`` overrides (values typed by the field)."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of RewardModelConfig fields")
        hints = typing.get_type_hints(cls)
        for override in overrides:
            name, sep, value = override.partition("=")
            if not sep or name not in hints:
                raise ValueError(f"override {override!r} must be field=value with a field of {sorted(hints)}")
            data[name] = _parse_value(value, hints[name], name)
        return cls.from_dict(data)


def _parse_value(text: str, hint: Any, name: str) -> Any:
    # Typed by the field, not by YAML: YAML 1.1 reads "1e-4" as a string and "no" as False.
    args = set(typing.get_args(hint)) if typing.get_origin(hint) in (typing.Union, types.UnionType) else {hint}
    if type(None) in args and text.strip().lower() in ("none", "null", "~", ""):
        return None
    args.discard(type(None))
    (kind,) = args if len(args) == 1 else (str,)
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return lowered in ("true", "1", "yes")
        if kind in (int, float):
            return kind(text)
    except ValueError as err:
        raise ValueError(f"override {name}={text!r}: {err}") from err
    return text


def split_comparisons(
    comparisons: list[Comparison], eval_fraction: float, seed: int
) -> tuple[list[Comparison], list[Comparison]]:
    """Shuffle and split; keeps at least one comparison on each side when both sides are asked for."""
    shuffled = list(comparisons)
    random.Random(seed).shuffle(shuffled)
    n_eval = round(len(shuffled) * eval_fraction)
    if eval_fraction > 0 and len(shuffled) >= 2:
        n_eval = min(max(n_eval, 1), len(shuffled) - 1)
    return shuffled[n_eval:], shuffled[:n_eval]


def comparisons_to_pairs(comparisons: list[Comparison]) -> list[Pair]:
    pairs = []
    for c in comparisons:
        for chosen, rejected in pairs_from_choice(len(c.candidates), c.choice):
            pairs.append((c.prompt + c.candidates[chosen], c.prompt + c.candidates[rejected]))
    return pairs


def pair_rewards(model: RewardModel, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw rewards of a batch of pairs: (B,), (B,). One forward over 2B texts keeps batch statistics shared."""
    texts = [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]
    rewards = model(**model.encode(texts))
    return rewards[: len(pairs)], rewards[len(pairs) :]


@torch.no_grad()
def evaluate(model: RewardModel, pairs: list[Pair], batch_size: int) -> dict[str, float]:
    if not pairs:
        return {"eval_loss": math.nan, "eval_accuracy": math.nan}
    model.eval()
    batches = [pair_rewards(model, pairs[i : i + batch_size]) for i in range(0, len(pairs), batch_size)]
    chosen_all = torch.cat([chosen for chosen, _ in batches])
    rejected_all = torch.cat([rejected for _, rejected in batches])
    return {
        "eval_loss": bradley_terry_loss(chosen_all, rejected_all).item(),
        "eval_accuracy": preference_accuracy(chosen_all, rejected_all).item(),
    }


def train_reward_model(config: RewardModelConfig) -> tuple[RewardModel, dict[str, float]]:
    """Fit a reward model to the comparisons in ``config.comparisons``; returns it with its final metrics.

    metrics: train_loss (mean over the last epoch), eval_loss, eval_accuracy (NaN without a held-out split),
    num_train_pairs, num_eval_pairs. ``output_dir/metrics.jsonl`` gets ``rm/*`` lines as training goes.
    """
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    comparisons = read_comparisons(config.comparisons, skip_malformed=config.skip_malformed)
    train_set, eval_set = split_comparisons(comparisons, config.eval_fraction, config.seed)
    train_pairs, eval_pairs = comparisons_to_pairs(train_set), comparisons_to_pairs(eval_set)
    if not train_pairs:
        raise ValueError(f"{config.comparisons}: no training pairs (every comparison is a tie, a skip, or held out)")

    torch.manual_seed(config.seed)
    model = RewardModel.from_backbone(config.backbone, pooling=config.pooling, max_length=config.max_length)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = output_dir / "metrics.jsonl"
    order = random.Random(config.seed)

    step, epoch_losses = 0, []
    for epoch in range(config.epochs):
        model.train()
        shuffled = order.sample(train_pairs, len(train_pairs))
        epoch_losses = []
        for start in range(0, len(shuffled), config.batch_size):
            chosen, rejected = pair_rewards(model, shuffled[start : start + config.batch_size])
            loss = bradley_terry_loss(chosen, rejected)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            epoch_losses.append(loss.item())
            if step % config.log_every == 0:
                accuracy = preference_accuracy(chosen.detach(), rejected.detach()).item()
                append_json_line(metrics_path, {"step": step, "rm/loss": loss.item(), "rm/accuracy": accuracy})
        evaluation = evaluate(model, eval_pairs, config.batch_size)
        append_json_line(
            metrics_path,
            {
                "step": step,
                "epoch": epoch + 1,
                "rm/epoch_loss": sum(epoch_losses) / len(epoch_losses),
                # JSON has no NaN: an absent held-out split is logged as null.
                **{f"rm/{k}": None if math.isnan(v) else v for k, v in evaluation.items()},
            },
        )

    if config.normalize_on == "train":
        # The paper normalises over samples from the initial policy; the training candidates are exactly those.
        reference = list(dict.fromkeys(c.prompt + text for c in train_set for text in c.candidates))
        stats = model.normalize(reference, batch_size=config.batch_size)
        append_json_line(
            metrics_path, {"step": step, "rm/raw_mean": stats["raw_mean"], "rm/raw_std": stats["raw_std"]}
        )
    model.eval()
    model.save_pretrained(output_dir)
    (output_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    metrics = {
        "train_loss": sum(epoch_losses) / len(epoch_losses),
        **evaluation,
        "num_train_pairs": float(len(train_pairs)),
        "num_eval_pairs": float(len(eval_pairs)),
    }
    return model, metrics
