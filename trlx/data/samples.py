"""Static training data for the offline methods, tokenized once: SFT examples and their loss masks.

An SFT sample is, as in trlX,
- a string: the whole text is learned (it follows the BOS token, or EOS for tokenizers without one);
- `[prompt, completion]`, or longer alternating `[prompt_1, output_1, prompt_2, output_2, ...]`: only the
  outputs are learned;
- a chat conversation (a list of `{"role", "content"}` messages, rendered with the tokenizer's chat template):
  only the assistant turns are learned, each with the end-of-turn token the template writes after it.
EOS is appended to the last output (unless it ends with it already) so the model learns where to stop. Pieces
are tokenized separately, without added special tokens, and concatenated.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from trlx.data.prompts import chat_messages


@dataclass
class TokenizedExample:
    """One example as (query, response): the query conditions, the response is scored token by token.

    query: prompt token ids (never learned); response: the ids after it; learn: one flag per response token,
    True where the token is in the loss (outputs / assistant turns).
    """

    query: list[int]
    response: list[int]
    learn: list[bool]

    def __len__(self) -> int:
        return len(self.query) + len(self.response)


@dataclass
class SequenceBatch:
    """Examples ready for a forward pass (the layout `trlx.rollout.scoring.score_response` takes).

    query_ids, query_mask: (B, P) left-padded; response_ids, response_mask: (B, R) right-padded (mask 1 on real
    tokens); loss_mask: (B, R) float, 1 on the response tokens that are learned.
    """

    query_ids: Tensor
    query_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    loss_mask: Tensor

    def __len__(self) -> int:
        return self.query_ids.shape[0]

    def select(self, index: Tensor) -> SequenceBatch:
        return SequenceBatch(**{k: v[index] for k, v in vars(self).items()})

    def to(self, device: torch.device | str) -> SequenceBatch:
        return SequenceBatch(**{k: v.to(device) for k, v in vars(self).items()})


def collate(examples: Sequence[TokenizedExample], pad_id: int) -> SequenceBatch:
    """Left-pad the queries and right-pad the responses of `examples` into one SequenceBatch."""
    width_q = max(len(e.query) for e in examples)
    width_r = max(len(e.response) for e in examples)
    query_ids = torch.full((len(examples), width_q), pad_id, dtype=torch.long)
    query_mask = torch.zeros((len(examples), width_q), dtype=torch.long)
    response_ids = torch.full((len(examples), width_r), pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(examples), width_r), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), width_r))
    for i, e in enumerate(examples):
        if e.query:
            query_ids[i, width_q - len(e.query) :] = torch.tensor(e.query)
            query_mask[i, width_q - len(e.query) :] = 1
        response_ids[i, : len(e.response)] = torch.tensor(e.response)
        response_mask[i, : len(e.response)] = 1
        loss_mask[i, : len(e.response)] = torch.tensor(e.learn, dtype=torch.float)
    return SequenceBatch(query_ids, query_mask, response_ids, response_mask, loss_mask)


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _start_token(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [] if start is None else [start]


def dialogue_example(pieces: Sequence[str], tokenizer: PreTrainedTokenizerBase, where: str) -> TokenizedExample:
    """`[prompt_1, output_1, ...]` (an even number of strings): the first prompt is the query, outputs learned."""
    if len(pieces) % 2:
        raise ValueError(f"{where} has {len(pieces)} parts: give [prompt, completion] or alternating prompt/output")
    if any(not isinstance(p, str) for p in pieces):
        raise TypeError(f"{where} must hold strings, got {[type(p).__name__ for p in pieces]}")
    if not pieces[-1].strip():
        raise ValueError(f"{where}: the completion is empty, so there is nothing to learn")
    eos = tokenizer.eos_token or ""
    pieces = [*pieces[:-1], pieces[-1] if pieces[-1].endswith(eos) else pieces[-1] + eos]
    query = _ids(tokenizer, pieces[0]) or _start_token(tokenizer)
    if not query:
        raise ValueError(f"{where}: the prompt is empty and the tokenizer has no BOS or EOS token to start from")
    response: list[int] = []
    learn: list[bool] = []
    for i, piece in enumerate(pieces[1:], start=1):
        ids = _ids(tokenizer, piece)
        response += ids
        learn += [i % 2 == 1] * len(ids)
    return TokenizedExample(query, response, learn)


def chat_example(
    messages: Sequence[dict[str, str]], tokenizer: PreTrainedTokenizerBase, where: str
) -> TokenizedExample:
    """A conversation through the chat template; the query ends where the first assistant turn's text starts.

    Each assistant turn's tokens are found as the difference between the template applied up to and including
    that turn and the template applied to the turns before it with the assistant's opening (the generation
    prompt), so the role header is context and the turn's text and end-of-turn token are learned.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"{where} is a chat conversation but tokenizer {tokenizer.name_or_path!r} has no chat template: use a chat "
            "model's tokenizer, or give [prompt, completion] strings"
        )
    messages = list(messages)
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ValueError(f"{where} has no non-empty assistant turn, so there is nothing to learn")

    def render(turns: list[dict[str, str]], opening: bool) -> list[int]:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=opening)
        return _ids(tokenizer, text)

    full = render(messages, False)
    learn = [False] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before, through = render(messages[:i], True), render(messages[: i + 1], False)
        start, end = len(before), len(through)
        if full[:start] != before or full[:end] != through:
            raise ValueError(f"{where}: the chat template does not render turn by turn, so turns cannot be masked")
        learn[start:end] = [True] * (end - start)
    first = learn.index(True)
    return TokenizedExample(full[:first], full[first:], learn[first:])


def sft_example(sample: Any, tokenizer: PreTrainedTokenizerBase, where: str) -> TokenizedExample:
    """One SFT sample (string, prompt/output list, or chat messages; see the module doc) tokenized."""
    if isinstance(sample, str):
        if not sample.strip():
            raise ValueError(f"{where} is an empty sample")
        return dialogue_example([tokenizer.bos_token or tokenizer.eos_token or "", sample], tokenizer, where)
    if isinstance(sample, dict) and "messages" in sample:
        sample = sample["messages"]
    if isinstance(sample, (list, tuple)) and sample and all(isinstance(m, dict) for m in sample):
        return chat_example(chat_messages(sample, where), tokenizer, where)
    if isinstance(sample, (list, tuple)) and sample:
        return dialogue_example(list(sample), tokenizer, where)
    raise TypeError(
        f"{where} must be a string, a [prompt, completion] list or a list of chat messages, got {sample!r:.80}"
    )


def truncate(example: TokenizedExample, max_length: int, where: str) -> tuple[TokenizedExample, bool]:
    """Cut the response so query + response fit `max_length` tokens (train.seq_length); True if it was cut."""
    room = max_length - len(example.query)
    if room < 1:
        raise ValueError(
            f"{where}: its prompt has {len(example.query)} tokens, which leave no room for a completion in "
            f"train.seq_length ({max_length}); raise train.seq_length or shorten the prompt"
        )
    if len(example.response) <= room:
        return example, False
    cut = TokenizedExample(example.query, example.response[:room], example.learn[:room])
    return cut, True


def sft_examples(
    samples: Sequence[Any], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[TokenizedExample]:
    """Every sample tokenized and cut to `max_length` (warning how many were cut); bad samples fail naming index."""
    if isinstance(samples, str):
        raise TypeError("samples must be a list of samples, not one string (which would be read letter by letter)")
    if samples is None or len(samples) == 0:
        raise ValueError("samples is empty: pass at least one sample")
    examples, cut = [], 0
    for i, sample in enumerate(samples):
        example, was_cut = truncate(sft_example(sample, tokenizer, f"samples[{i}]"), max_length, f"samples[{i}]")
        if not any(example.learn):
            raise ValueError(f"samples[{i}]: nothing left to learn after truncation to train.seq_length={max_length}")
        examples.append(example)
        cut += was_cut
    if cut:
        warnings.warn(
            f"{cut} of {len(samples)} samples are longer than train.seq_length ({max_length}) tokens and were cut "
            "at the end; raise train.seq_length to keep them whole",
            stacklevel=2,
        )
    return examples


def preference_triples(samples: Any) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) strings from `{"prompt", "chosen", "rejected"}` dicts, 3-item lists, or the path
    of a `trlx label` comparisons file (ties and skips give no pair; a choice among n candidates gives the n - 1
    pairs chosen-vs-other)."""
    if isinstance(samples, (str, Path)):
        return comparison_triples(samples)
    if samples is None or len(samples) == 0:
        raise ValueError("samples is empty: pass at least one (prompt, chosen, rejected) triple")
    triples = []
    for i, sample in enumerate(samples):
        if isinstance(sample, dict):
            missing = [k for k in ("prompt", "chosen", "rejected") if k not in sample]
            if missing:
                raise ValueError(f"samples[{i}] lacks {missing}: a preference is {{prompt, chosen, rejected}}")
            sample = (sample["prompt"], sample["chosen"], sample["rejected"])
        if not isinstance(sample, (list, tuple)) or len(sample) != 3 or not all(isinstance(s, str) for s in sample):
            raise TypeError(
                f"samples[{i}] must be (prompt, chosen, rejected) strings or a dict of them, got {sample!r:.80}"
            )
        triples.append(tuple(sample))
    return triples


def comparison_triples(path: str | Path) -> list[tuple[str, str, str]]:
    """The preference pairs in a `trlx label` comparisons file (see `preference_triples`)."""
    from trlx.algorithms.preference import pairs_from_choice
    from trlx.feedback.store import read_comparisons

    if not Path(path).is_file():
        raise FileNotFoundError(f"comparisons file {str(path)!r} does not exist (write one with `trlx label --out`)")
    triples = []
    for c in read_comparisons(path):
        triples += [
            (c.prompt, c.candidates[won], c.candidates[lost])
            for won, lost in pairs_from_choice(len(c.candidates), c.choice)
        ]
    if not triples:
        raise ValueError(f"{path}: no preference pairs (every comparison is a tie or a skip)")
    return triples


def preference_examples(
    samples: Any, tokenizer: PreTrainedTokenizerBase, max_length: int
) -> list[tuple[TokenizedExample, TokenizedExample]]:
    """(chosen, rejected) examples sharing their prompt, each completion learned whole and cut to `max_length`."""
    pairs, cut = [], 0
    for i, (prompt, chosen, rejected) in enumerate(preference_triples(samples)):
        where = f"samples[{i}]"
        pair = []
        for name, completion in (("chosen", chosen), ("rejected", rejected)):
            if not completion.strip():
                raise ValueError(f"{where}: the {name} completion is empty")
            example, was_cut = truncate(dialogue_example([prompt, completion], tokenizer, where), max_length, where)
            pair.append(example)
            cut += was_cut
        if pair[0].response == pair[1].response:
            raise ValueError(f"{where}: chosen and rejected are the same text, so the pair says nothing")
        pairs.append((pair[0], pair[1]))
    if cut:
        warnings.warn(
            f"{cut} completions are longer than train.seq_length ({max_length}) tokens with their prompt and were "
            "cut at the end; raise train.seq_length to keep them whole",
            stacklevel=2,
        )
    return pairs


def normalized_returns(rewards: Any, n_samples: int) -> list[float]:
    """ILQL's per-sample returns: `rewards` (one finite number per sample) centred and divided by their std over
    the whole dataset, as trlX does (a single sample or equal rewards are only centred)."""
    if isinstance(rewards, (str, bytes)) or not hasattr(rewards, "__len__"):
        raise TypeError(f"rewards must be a list of numbers, one per sample, got {type(rewards).__name__}")
    if len(rewards) != n_samples:
        raise ValueError(f"rewards has {len(rewards)} values for {n_samples} samples: give one reward per sample")
    for i, r in enumerate(rewards):
        if isinstance(r, bool) or not isinstance(r, (int, float)) and not (hasattr(r, "item") and r.ndim == 0):
            raise TypeError(f"rewards[{i}] must be a number, got {r!r:.40}")
    returns = torch.tensor([float(r) for r in rewards], dtype=torch.float64)
    bad = (~torch.isfinite(returns)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"rewards[{bad[0]}] is {returns[bad[0]].item()}: rewards must be finite ({len(bad)} are not)")
    returns = returns - returns.mean()
    std = returns.std() if len(returns) > 1 else torch.tensor(0.0)
    if std > 0:
        returns = returns / std
    return returns.tolist()


def split_rewards(samples: Any) -> tuple[Any, list[Any] | None]:
    """`{"sample": ..., "reward": ...}` rows (an ILQL samples file) as (samples, rewards); anything else as is."""
    if isinstance(samples, (str, Path)) or not samples or not all(isinstance(s, dict) for s in samples):
        return samples, None
    if not all("reward" in s for s in samples):
        return samples, None
    missing = next((i for i, s in enumerate(samples) if "sample" not in s), None)
    if missing is not None:
        raise ValueError(
            f'samples[{missing}] has a "reward" but no "sample": rows are {{"sample": ..., "reward": ...}}'
        )
    return [s["sample"] for s in samples], [s["reward"] for s in samples]
