"""`RewardModelConfig`: what `trlx train-rm CONFIG.yml field=value ...` reads (no torch here, so `--help`,
which lists these fields, answers at once)."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from trlx.config import doc, numbers_from_strings, yaml_problem

__all__ = ["RewardModelConfig", "fields_help"]


@dataclass
class RewardModelConfig:
    """Everything ``trlx train-rm`` needs; load with ``from_yaml`` and override with ``field=value``."""

    backbone: str = doc(
        "Path or name of the Hugging Face model whose trunk is fine-tuned (an encoder or a causal LM).", ""
    )
    comparisons: str = doc(
        "JSONL file of comparisons written by ``trlx label`` (or trlx.feedback.append_comparison).", ""
    )
    output_dir: str = doc(
        "Where the checkpoint (HF format + reward_head.safetensors + reward_model.json) and metrics.jsonl go.",
        "reward_model",
    )
    eval_fraction: float = doc(
        "Share of comparisons held out for eval accuracy; split by comparison so no prompt straddles the split.", 0.1
    )
    lr: float = doc("AdamW learning rate for trunk and head.", 1e-5)
    weight_decay: float = doc("AdamW weight decay.", 0.0)
    batch_size: int = doc("Pairs per optimiser step.", 16)
    epochs: int = doc(
        "Passes over the training pairs; the paper trains a single epoch because reward models overfit fast.", 1
    )
    max_length: int = doc("Tokens kept per text (prompt + candidate); longer texts are truncated.", 512)
    grad_clip: float = doc("Max global gradient norm; 0 disables clipping.", 1.0)
    seed: int = doc("Seeds head initialisation, the train/eval split and batch order.", 0)
    normalize_on: Literal["train"] | None = doc(
        "'train': set reward mean 0 / std 1 over all training samples; None: keep raw scores.", "train"
    )
    pooling: Literal["last", "mean"] | None = doc(
        "Override the pooling inferred from the backbone ('last' for causal, 'mean' for encoders).", None
    )
    device: str | None = doc("Torch device; None picks cuda when available, else cpu.", None)
    skip_malformed: bool = doc(
        "Warn about and skip malformed lines in the comparisons file instead of stopping.", False
    )
    log_every: int = doc("Optimiser steps between lines in metrics.jsonl.", 10)

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


def fields_help() -> str:
    """The fields as `name (default): doc` lines, for `trlx train-rm --help`."""
    lines = []
    for f in dataclasses.fields(RewardModelConfig):
        default = "required" if f.name in ("backbone", "comparisons") else repr(f.default)
        lines.append(f"  {f.name} ({default}): {f.metadata['doc']}")
    return "\n".join(lines)


def reference_markdown() -> str:
    """The README's table of RewardModelConfig fields, generated from the docs so it cannot drift."""
    rows = ["| field | default | meaning |", "| --- | --- | --- |"]
    for f in dataclasses.fields(RewardModelConfig):
        default = "required" if f.name in ("backbone", "comparisons") else f"`{f.default!r}`"
        rows.append(f"| `{f.name}` | {default} | {f.metadata['doc']} |")
    return "\n".join(rows)
