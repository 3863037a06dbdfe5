"""Prompt datasets: validation, tokenization with left padding, and a resumable shuffled sampler."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from trlx.types import PromptBatch


@dataclass(frozen=True)
class Prompt:
    """One prompt string and its extra fields (given to reward_fn and metric_fn as keyword lists).

    A chat prompt also keeps its `messages`; `text` is then the tokenizer's chat template applied to them with
    the generation prompt (empty until `PromptPipeline` renders it).
    """

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    messages: tuple[dict[str, str], ...] | None = None


def chat_messages(item: Any, where: str) -> tuple[dict[str, str], ...]:
    """A conversation `[{"role": ..., "content": ...}, ...]` checked and frozen, or a ValueError naming `where`."""
    if not isinstance(item, (list, tuple)) or not item:
        raise ValueError(f"{where} must be a non-empty list of chat messages, got {type(item).__name__}")
    for j, message in enumerate(item):
        ok = (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        )
        if not ok:
            raise ValueError(f'{where}[{j}] must be a message {{"role": str, "content": str}}, got {message!r}')
    return tuple(dict(m) for m in item)


def to_prompts(prompts: Sequence[str | dict[str, Any] | list[dict[str, str]]], name: str = "prompts") -> list[Prompt]:
    """Accept strings, dicts with a `prompt` key, chat conversations (lists of `{"role", "content"}` messages) or
    dicts with a `messages` key; a dict's other keys become metadata. Reject empty input."""
    if isinstance(prompts, str):
        raise TypeError(
            f"{name} must be a list of prompts, not one string (which would be read letter by letter): "
            f"pass [{prompts[:40]!r}]"
        )
    if prompts is None or len(prompts) == 0:
        raise ValueError(f"{name} is empty: pass at least one prompt")
    out = []
    for i, item in enumerate(prompts):
        if isinstance(item, (list, tuple)):
            out.append(Prompt("", {}, chat_messages(item, f"{name}[{i}]")))
            continue
        if isinstance(item, dict) and "messages" in item and "prompt" not in item:
            metadata = {k: v for k, v in item.items() if k != "messages"}
            out.append(Prompt("", metadata, chat_messages(item["messages"], f"{name}[{i}]['messages']")))
            continue
        if isinstance(item, str):
            text, metadata = item, {}
        elif isinstance(item, dict):
            if "prompt" not in item:
                raise ValueError(f"{name}[{i}] is a dict without a 'prompt' (or 'messages') key: {sorted(item)}")
            text, metadata = item["prompt"], {k: v for k, v in item.items() if k != "prompt"}
        else:
            raise TypeError(
                f"{name}[{i}] must be a string, a list of chat messages, or a dict with a 'prompt' or 'messages' key, "
                f"got {type(item).__name__}"
            )
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
        self.prompts = [render_chat(p, tokenizer, i) for i, p in enumerate(prompts)]
        prompts = self.prompts
        self.tokenizer = tokenizer
        # No special tokens added: a plain prompt is the text as given, and a chat template writes its own (a
        # BOS added here as well would appear twice).
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
    def is_chat(self) -> bool:
        """Whether any prompt is a chat conversation (generation then also stops at the end-of-turn token)."""
        return any(p.messages is not None for p in self.prompts)

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


def render_chat(prompt: Prompt, tokenizer: PreTrainedTokenizerBase, index: int) -> Prompt:
    """A chat prompt with `text` set to its chat template applied once, ending in the assistant's turn opening."""
    if prompt.messages is None or prompt.text:
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"prompt {index} is a chat conversation but tokenizer {tokenizer.name_or_path!r} has no chat template "
            "(tokenizer.chat_template is None): use a chat model's tokenizer (tokenizer.tokenizer_path), add a "
            "chat_template to its tokenizer_config.json, or pass plain-text prompts"
        )
    text = tokenizer.apply_chat_template(list(prompt.messages), tokenize=False, add_generation_prompt=True)
    return replace(prompt, text=text)


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The special token the chat template closes an assistant turn with (`<|im_end|>`, `<|eot_id|>`, ...), found
    by rendering a one-turn conversation: the first special token after the assistant's text. (A template whose
    closing token differs from the one that ends generation should list that one in gen_kwargs.eos_token_id.)"""
    marker = "trlx-end-of-turn-probe"
    conversation = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}]
    try:
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
    except Exception:  # a template that insists on other roles: rely on the EOS ids alone
        return ()
    after = text.split(marker, 1)[1] if marker in text else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    added = getattr(tokenizer, "added_tokens_decoder", {})
    special = set(tokenizer.all_special_ids) | {
        int(i) for i, token in added.items() if getattr(token, "special", False)
    }
    # The first special token after the text (a template may put a space or newline before it).
    return next(((i,) for i in ids if i in special), ())


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
