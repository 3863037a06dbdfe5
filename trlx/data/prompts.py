"""Prompt datasets: validation, tokenization with left padding, and a resumable shuffled sampler."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from trlx.types import PromptBatch


@dataclass(frozen=True)
class Prompt:
    """One prompt string and its extra fields (given to reward_fn and metric_fn as keyword lists)."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def to_prompts(prompts: Sequence[str | dict[str, Any]], name: str = "prompts") -> list[Prompt]:
    """Accept strings or dicts with a `prompt` key (other keys become metadata); reject empty input."""
    if isinstance(prompts, str):
        raise TypeError(
            f"{name} must be a list of prompts, not one string (which would be read letter by letter): "
            f"pass [{prompts[:40]!r}]"
        )
    if prompts is None or len(prompts) == 0:
        raise ValueError(f"{name} is empty: pass at least one prompt")
    out = []
    for i, item in enumerate(prompts):
        if isinstance(item, str):
            text, metadata = item, {}
        elif isinstance(item, dict):
            if "prompt" not in item:
                raise ValueError(f"{name}[{i}] is a dict without a 'prompt' key: {sorted(item)}")
            text, metadata = item["prompt"], {k: v for k, v in item.items() if k != "prompt"}
        else:
            raise TypeError(f"{name}[{i}] must be a string or a dict with a 'prompt' key, got {type(item).__name__}")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name}[{i}] is an empty prompt")
        out.append(Prompt(text, metadata))
    keys = {tuple(sorted(p.metadata)) for p in out}
    if len(keys) > 1:
        raise ValueError(f"{name}: every prompt dict must have the same keys, found {sorted(keys)}")
    return out


class PromptPipeline:
    """Tokenized prompts, checked once against the length budget so a long prompt fails before any compute."""

    def __init__(
        self,
        prompts: list[Prompt],
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_length: int,
        budget: str = "train.seq_length minus method.gen_kwargs.max_new_tokens",
    ) -> None:
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.token_ids: list[list[int]] = tokenizer([p.text for p in prompts], add_special_tokens=False)["input_ids"]
        for i, ids in enumerate(self.token_ids):
            if len(ids) == 0:
                raise ValueError(f"prompt {i} ({prompts[i].text!r}) tokenizes to no tokens")
            if len(ids) > max_prompt_length:
                raise ValueError(
                    f"prompt {i} has {len(ids)} tokens but only {max_prompt_length} fit "
                    f"({budget}): {prompts[i].text[:80]!r}..."
                )
        # False marks padding: a repeated prompt that only evens out the processes' shares (see `select`).
        self.keep: list[bool] = [True] * len(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def metadata_keys(self) -> list[str]:
        """The metadata keys every prompt has (to_prompts requires the same keys on all of them)."""
        return sorted(self.prompts[0].metadata) if self.prompts else []

    def select(self, indices: Sequence[int], keep: Sequence[bool] | None = None) -> PromptPipeline:
        """A pipeline of the prompts at `indices` (already tokenized and checked); `keep` False marks padding."""
        subset = object.__new__(PromptPipeline)
        subset.prompts = [self.prompts[i] for i in indices]
        subset.tokenizer = self.tokenizer
        subset.token_ids = [self.token_ids[i] for i in indices]
        subset.keep = list(keep) if keep is not None else [True] * len(indices)
        return subset

    def batch(self, indices: Sequence[int]) -> PromptBatch:
        """Left-pad the selected prompts into one PromptBatch (whatever the tokenizer's own padding side)."""
        rows = [self.token_ids[i] for i in indices]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return PromptBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            prompts=[self.prompts[i].text for i in indices],
            metadata=[self.prompts[i].metadata for i in indices],
        )


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) positions that start at 0 on each row's first real token, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


@dataclass
class PromptSampler:
    """Draws prompt indices in a fresh seeded permutation each pass; its state makes resume exact."""

    num_prompts: int
    seed: int
    epoch: int = 0
    position: int = 0

    def _order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(self.num_prompts, generator=generator).tolist()

    def take(self, n: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < n:
            order = self._order()
            chunk = order[self.position : self.position + n - len(taken)]
            taken.extend(chunk)
            self.position += len(chunk)
            if self.position >= self.num_prompts:
                self.epoch, self.position = self.epoch + 1, 0
        return taken

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
