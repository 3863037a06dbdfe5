"""Rollout step 3: call the user's reward function and check what it returns before it reaches the math."""

from __future__ import annotations

import inspect
import math
import numbers
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from trlx.types import Generation


class RewardError(ValueError):
    """The reward function returned something PPO cannot use."""


class NonFiniteRewardError(RewardError):
    """reward_fn returned NaN or inf: the trainer skips that rollout and counts it (see `trlx.faults`)."""

    def __init__(self, message: str, sample: int) -> None:
        super().__init__(message)
        self.sample = sample


class RewardFunctionError(RuntimeError):
    """reward_fn raised; the message lists the batch's prompts and the original exception is chained."""


class RewardTimeoutError(TimeoutError):
    """One reward_fn call took longer than `train.reward_timeout_s`."""


def call_with_accepted_kwargs(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """Call `fn` with the keyword arguments it accepts (all of them if it takes **kwargs)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return fn(**kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**kwargs)
    return fn(**{k: v for k, v in kwargs.items() if k in params})


PASSED_BY_NAME = ("samples", "prompts", "outputs", "tokenizer")


def check_signature(fn: Callable[..., Any], what: str, metadata: dict[str, Sequence[str]]) -> None:
    """Refuse, before any model loads, a reward_fn/metric_fn that needs an argument trlx will not pass.

    trlx passes arguments by name: samples, prompts, outputs, tokenizer and each prompt metadata key.
    `metadata` maps each prompt set's name ("prompts", "eval_prompts") to the metadata keys its prompts have.
    """
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return
    for p in params:
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is p.empty:
            raise TypeError(
                f"{what} takes {p.name!r} positional-only, but trlx passes arguments by name ("
                f"{', '.join(PASSED_BY_NAME)} and prompt metadata keys): drop the '/' from its signature"
            )
        if p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.default is not p.empty:
            continue
        if p.name in PASSED_BY_NAME:
            continue
        missing = [name for name, keys in metadata.items() if p.name not in keys]
        if missing:
            raise TypeError(
                f"{what} requires {p.name!r}, which trlx does not pass: arguments are {', '.join(PASSED_BY_NAME)} "
                f"and the metadata keys of dict prompts; {' and '.join(missing)} have no {p.name!r} key "
                f"(give every prompt a {p.name!r} key, or a default in {what})"
            )


def call_metric_fn(metric_fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """metric_fn's {name: value or one value per sample}; anything else is a RewardError saying what is wanted."""
    result = call_with_accepted_kwargs(metric_fn, **kwargs)
    if not isinstance(result, dict):
        raise RewardError(
            f"metric_fn must return a dict of metric name -> one number per sample (or one number), got "
            f"{type(result).__name__}{' (did it forget to return?)' if result is None else ''}"
        )
    return result


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
    reward_fn: Callable[..., Any],
    generation: Generation,
    tokenizer: PreTrainedTokenizerBase,
    timeout_s: float | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Scores (B,) and, for dense rewards, per-token scores (B, R) aligned with `generation.response_mask`.

    A dense reward is one list of floats per sample with one entry per response token; its per-sample
    score is the sum of those entries. Entry t lands on response token t. A response that ends with a special
    token (EOS, end of turn) may also get one entry fewer, sized as trlX users size them
    (`len(tokenizer(output).input_ids)`: the output text has no EOS): the closing token then gets 0.
    """
    raw = call_reward_fn(reward_fn, reward_kwargs(generation, tokenizer), timeout_s)
    lengths = generation.response_mask.sum(-1).tolist()
    special = set(tokenizer.all_special_ids) if tokenizer is not None else set()
    last_ids = [int(ids[n - 1]) if n else -1 for ids, n in zip(generation.response_ids.tolist(), lengths)]
    closed = [i in special for i in last_ids]
    try:
        return validate_rewards(raw, lengths, width=generation.response_ids.shape[1], closed=closed)
    except NonFiniteRewardError as e:
        raise NonFiniteRewardError(f"{e}: {generation.samples[e.sample]!r}", e.sample) from None


def call_reward_fn(reward_fn: Callable[..., Any], kwargs: dict[str, Any], timeout_s: float | None = None) -> Any:
    """Call reward_fn with the keyword arguments it accepts, reporting failures with the batch's prompts.

    With `timeout_s`, the call runs in a daemon thread: Python cannot kill a thread, so a reward_fn that hangs
    keeps running in the background, but the run stops with a clear error instead of waiting forever.
    """
    prompts = kwargs.get("prompts", [])
    try:
        if timeout_s is None:
            return call_with_accepted_kwargs(reward_fn, **kwargs)
        return _call_with_timeout(reward_fn, kwargs, timeout_s)
    except RewardTimeoutError as e:
        raise RewardTimeoutError(f"{e} on a batch of {len(prompts)} prompts: {_preview(prompts)}") from None
    except Exception as e:
        raise RewardFunctionError(
            f"reward_fn raised {type(e).__name__}: {e} -- on a batch of {len(prompts)} prompts: {_preview(prompts)}"
        ) from e


def _call_with_timeout(reward_fn: Callable[..., Any], kwargs: dict[str, Any], timeout_s: float) -> Any:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = call_with_accepted_kwargs(reward_fn, **kwargs)
        except BaseException as e:  # handed to the caller's thread below
            outcome["error"] = e

    thread = threading.Thread(target=target, name="trlx-reward-fn", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RewardTimeoutError(
            f"reward_fn did not return within train.reward_timeout_s={timeout_s} s (raise the limit, or set it to "
            "None to wait forever)"
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _preview(prompts: Sequence[str], limit: int = 8) -> str:
    shown = [p if len(p) <= 80 else p[:77] + "..." for p in prompts[:limit]]
    more = f" and {len(prompts) - limit} more" if len(prompts) > limit else ""
    return f"{shown}{more}"


def validate_rewards(
    raw: Any, lengths: Sequence[int], width: int, closed: Sequence[bool] | None = None
) -> tuple[Tensor, Tensor | None]:
    """(B,) scores and, for dense rewards, (B, width) per-token scores; `closed[i]`: response i ends with a special
    token, so its dense reward may leave that token out (one entry fewer)."""
    # A (B, 1) tensor or array (a reward model's logits with num_labels=1) is B scores, not B one-token lists.
    if getattr(raw, "ndim", None) == 2 and raw.shape[1] == 1 and raw.shape[0] == len(lengths):
        raw = raw[:, 0]
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
        return torch.tensor([_number(r, f"score {i}", i) for i, r in enumerate(raw)], dtype=torch.float32), None
    per_token = torch.zeros((len(raw), width), dtype=torch.float32)
    for i, (row, n) in enumerate(zip(raw, lengths)):
        if not hasattr(row, "__len__") or isinstance(row, str):
            raise RewardError(f"reward_fn mixed scalars and per-token lists: sample {i} is {row!r}")
        row = list(row.tolist() if hasattr(row, "tolist") else row)
        without_closing = closed is not None and closed[i] and len(row) == n - 1
        if len(row) != n and not without_closing:
            also = f" (or {n - 1}, without its closing special token)" if closed is not None and closed[i] else ""
            raise RewardError(
                f"dense reward for sample {i} has {len(row)} entries but the response has {n} tokens{also}"
            )
        values = [_number(v, f"sample {i} token {t}", i) for t, v in enumerate(row)]
        if values:
            per_token[i, : len(values)] = torch.tensor(values)
    return per_token.sum(-1), per_token


def _number(value: Any, where: str, sample: int) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RewardError(f"reward_fn returned a non-number for {where}: {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise NonFiniteRewardError(f"reward_fn returned {value} for {where}; rewards must be finite", sample)
    return value
