"""Rollout step 1: the policy samples continuations with trlx's own KV-cache decode loop.

The loop draws every token from `sampling_logits` (the same function the scorer uses) and records the
log-prob of each drawn token, so "the distribution that sampled is the one that is scored" can be checked
on every rollout (`rollout/logprob_gap_max`). Nothing is read from the checkpoint's generation_config.json.

Given the policy's value head, the loop also records V(s_t) for every drawn token from the hidden state the LM
head reads, so a rollout can use the sampler's log-probs and values instead of scoring the policy again
(`method.logprobs_from_sampling`).

The engine interface is deliberately narrow: a PromptBatch and SamplingParams in, token ids, masks and
sampling log-probs (and values, when asked) out (a `Generation`), the policy's current weights read at call time. Another engine
(e.g. vLLM) can take its place by returning the same `Generation` and syncing weights after each update.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from trlx.algorithms.sampling import draw, eos_ban, sampling_logits
from trlx.data.prompts import position_ids_from_mask
from trlx.models.policy import forward_parameters, head_inputs
from trlx.models.trunk import FrozenTrunk
from trlx.rollout.options import SamplingParams
from trlx.types import Generation, PromptBatch


class _Decoder:
    """Calls a causal LM step by step with its KV cache, whichever name this transformers version gives it."""

    def __init__(self, lm: nn.Module) -> None:
        params = forward_parameters(lm)
        self.lm = lm
        self.cache_name = next((n for n in ("cache", "past_key_values") if n in params), None)
        self.extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        self.cache: Any = None
        self.input_ids: Tensor | None = None  # the whole sequence, only for models without a cache

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Logits (B, V) after feeding `input_ids` (the prompt first, then one token per call)."""
        if self.cache_name is None:  # no KV cache: re-run the whole sequence (quadratic, but correct)
            self.input_ids = input_ids if self.input_ids is None else torch.cat([self.input_ids, input_ids], 1)
            out = self.lm(input_ids=self.input_ids, attention_mask=attention_mask, **self.extra)
            return out.logits[:, -1]
        kwargs = {} if self.cache is None else {self.cache_name: self.cache}
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            **kwargs,
            **self.extra,
        )
        self.cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return out.logits[:, -1]


@torch.no_grad()
def generate(
    lm: nn.Module,
    batch: PromptBatch,
    tokenizer: PreTrainedTokenizerBase,
    params: SamplingParams,
    stop_sequences: Sequence[str] = (),
    all_finished: Callable[[bool], bool] | None = None,
    trunk: FrozenTrunk | None = None,
    value_head: nn.Module | None = None,
) -> Generation:
    """Sample one continuation per prompt and truncate it after EOS or a stop sequence.

    `all_finished(local_done) -> bool` makes the loop stop only when every process is done (ZeRO-3 and FSDP
    gather parameters inside each forward, so all processes must run the same number of steps). With `trunk`,
    the frozen trunk's output at every position fed to the model is recorded in `Generation.trunk`; with
    `value_head` (applied to the hidden state the LM head reads), the value of each drawn token's state in
    `Generation.values`.
    """
    with (
        trunk.capture() if trunk is not None else contextlib.nullcontext() as captured,
        head_inputs(lm) if value_head is not None else contextlib.nullcontext() as hidden,
    ):
        response, logprobs = _decode(lm, batch, params, all_finished)
    ids, response_mask, outputs = truncate_responses(response, tokenizer, set(params.eos_token_ids), stop_sequences)
    width = ids.shape[1]
    sampled = logprobs[:, :width] * response_mask
    sampled_values = None
    if value_head is not None:
        # One forward per drawn token: the prompt's last position gives V before token 0, each fed token the next.
        last = torch.stack([h[:, -1] for h in hidden[:width]], dim=1)  # (B, R, H)
        sampled_values = value_head(last.to(value_head.weight.dtype)).squeeze(-1).float().cpu() * response_mask
    recorded = None
    if captured:
        # Prompt positions, then one per fed token: P + (steps - 1) positions; the last response token is never
        # fed, and nothing reads the trunk there (its logits predict nothing), so it is zero-padded.
        recorded = torch.cat(captured, dim=1)[:, : batch.input_ids.shape[1] + width].cpu()
        missing = batch.input_ids.shape[1] + width - recorded.shape[1]
        recorded = torch.nn.functional.pad(recorded, (0, 0, 0, missing))
    return Generation(batch, ids, response_mask, outputs, logprobs=sampled, trunk=recorded, values=sampled_values)


def _decode(
    lm: nn.Module, batch: PromptBatch, params: SamplingParams, all_finished: Callable[[bool], bool] | None
) -> tuple[Tensor, Tensor]:
    """The KV-cache sampling loop: (B, steps) token ids (pad after EOS) and their sampling log-probs, on CPU."""
    device = next(lm.parameters()).device
    mask = batch.attention_mask.to(device)
    positions = position_ids_from_mask(mask)
    decoder = _Decoder(lm)
    logits = decoder(batch.input_ids.to(device), mask, positions)
    next_position = positions[:, -1:] + 1
    banned = eos_ban(params.eos_token_ids, logits.shape[-1], device)
    eos = torch.tensor(params.eos_token_ids or [-1], device=device)
    finished = torch.zeros(len(mask), dtype=torch.bool, device=device)
    tokens, logprobs = [], []
    for t in range(params.max_new_tokens):
        x = sampling_logits(
            logits, params.temperature, params.top_k, params.top_p, banned if t < params.min_new_tokens else None
        )
        token = draw(x)
        logprob = torch.log_softmax(x, dim=-1).gather(-1, token[:, None]).squeeze(-1)
        tokens.append(torch.where(finished, params.pad_token_id, token))
        logprobs.append(torch.where(finished, 0.0, logprob))
        finished |= torch.isin(token, eos)
        done = bool(finished.all())
        if all_finished is not None:
            done = all_finished(done)
        if done or t == params.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        logits = decoder(tokens[-1][:, None], mask, next_position)
        next_position = next_position + 1
    return torch.stack(tokens, dim=1).cpu(), torch.stack(logprobs, dim=1).float().cpu()


def truncate_responses(
    response_ids: Tensor, tokenizer: PreTrainedTokenizerBase, eos_ids: set[int], stop_sequences: Sequence[str]
) -> tuple[Tensor, Tensor, list[str]]:
    """Keep each row up to and including its first EOS, or through the first stop sequence.

    response_ids: (B, R) long as sampled (pad after finished rows).
    Returns ids (B, R') right-padded with the pad token, mask (B, R') long and the B decoded outputs, in which
    the stop sequence itself is removed (as in trlX) while its tokens stay in the trained response, since
    the policy did choose them. Every row keeps at least one token so each sample has a last token to score.
    """
    rows, outputs = [], []
    for row in response_ids.tolist():
        length = next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))
        tokens = row[:length]
        text = tokenizer.decode(tokens, skip_special_tokens=True)
        cut = min((text.find(s) for s in stop_sequences if s and s in text), default=-1)
        if cut >= 0:
            # Shortest token prefix whose text already contains a stop sequence.
            length = next(k for k in range(1, len(tokens) + 1) if _has_stop(tokenizer, tokens[:k], stop_sequences))
            tokens, text = tokens[:length], text[:cut]
        rows.append(tokens or row[:1])
        outputs.append(text)
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids, mask, outputs


def _has_stop(tokenizer: PreTrainedTokenizerBase, tokens: list[int], stop_sequences: Sequence[str]) -> bool:
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return any(s and s in text for s in stop_sequences)
