"""Rollout step 3: call the user's reward function and check what it returns before it reaches the math."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from trlx.types import Generation


class RewardError(ValueError):
    """The reward function returned something PPO cannot use."""


def call_with_accepted_kwargs(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call `fn` with the keyword arguments it accepts (all of them if it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return fn(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


def reward_kwargs(generation: Generation, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """samples, prompts, outputs, tokenizer, and each metadata field as a list aligned with the samples."""
    metadata = generation.prompt.metadata
    fields = {key: [m[key] for m in metadata] for key in (metadata[0] if metadata else {})}
    return {
        "samples": generation.samples,
        "prompts": generation.prompt.prompts,
        "outputs": generation.outputs,
        "tokenizer": tokenizer,
        **fields,
    }


def compute_scores(
    reward_fn: Callable[..., Any], generation: Generation, tokenizer: PreTrainedTokenizerBase
) -> tuple[Tensor, Tensor | None]:
    """Scores (B,) and, for dense rewards, per-token scores (B, R) aligned with `generation.response_mask`.

    A dense reward is one list of floats per sample with one entry per response token; its per-sample
    score is the sum of those entries.
    """
    raw = call_with_accepted_kwargs(reward_fn, **reward_kwargs(generation, tokenizer))
    lengths = generation.response_mask.sum(-1).tolist()
    return validate_rewards(raw, lengths, width=generation.response_ids.shape[1])


def validate_rewards(raw: Any, lengths: Sequence[int], width: int) -> tuple[Tensor, Tensor | None]:
    if isinstance(raw, Tensor):
        raw = raw.tolist()
    elif hasattr(raw, "tolist") and not isinstance(raw, (list, tuple)):  # numpy arrays
        raw = raw.tolist()
    if not isinstance(raw, (list, tuple)):
        raise RewardError(f"reward_fn must return a list of floats (or of per-token lists), got {type(raw).__name__}")
    if len(raw) != len(lengths):
        raise RewardError(f"reward_fn returned {len(raw)} scores for {len(lengths)} samples; return one per sample")
    dense = any(isinstance(r, (list, tuple)) or hasattr(r, "__len__") and not isinstance(r, str) for r in raw)
    if not dense:
        return torch.tensor([_number(r, f"score {i}") for i, r in enumerate(raw)], dtype=torch.float32), None
    per_token = torch.zeros((len(raw), width), dtype=torch.float32)
    for i, (row, n) in enumerate(zip(raw, lengths)):
        if not hasattr(row, "__len__") or isinstance(row, str):
            raise RewardError(f"reward_fn mixed scalars and per-token lists: sample {i} is {row!r}")
        row = list(row.tolist() if hasattr(row, "tolist") else row)
        if len(row) != n:
            raise RewardError(f"dense reward for sample {i} has {len(row)} entries but the response has {n} tokens")
        per_token[i, :n] = torch.tensor([_number(v, f"sample {i} token {t}") for t, v in enumerate(row)])
    return per_token.sum(-1), per_token


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RewardError(f"reward_fn returned a non-number for {where}: {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise RewardError(f"reward_fn returned {value} for {where}; rewards must be finite")
    return value
