"""Rollout step 1: the policy samples continuations, which are cut after EOS or a stop sequence."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from trlx.types import Generation, PromptBatch

# Sampling defaults that make `generate` draw from exactly the distribution whose log-probs PPO uses,
# instead of whatever a checkpoint's generation_config.json prefers (often top_p < 1 or a temperature).
SAMPLING_DEFAULTS: dict[str, Any] = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}


def generation_config(tokenizer: PreTrainedTokenizerBase, gen_kwargs: dict[str, Any]) -> GenerationConfig:
    kwargs = {**SAMPLING_DEFAULTS, **gen_kwargs}
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    kwargs.setdefault("eos_token_id", tokenizer.eos_token_id)
    kwargs["use_cache"] = True  # the KV cache makes sampling linear, not quadratic, in the response length
    return GenerationConfig(**kwargs)


@torch.no_grad()
def generate(
    lm: PreTrainedModel,
    batch: PromptBatch,
    tokenizer: PreTrainedTokenizerBase,
    gen_config: GenerationConfig,
    stop_sequences: Sequence[str] = (),
    **generate_kwargs: Any,
) -> Generation:
    """Sample one continuation per prompt (with the KV cache) and truncate it.

    `generate_kwargs` go to `lm.generate` (e.g. `synced_gpus=True` under ZeRO-3, see `trlx.distributed`).
    """
    device = next(lm.parameters()).device
    out = lm.generate(
        input_ids=batch.input_ids.to(device),
        attention_mask=batch.attention_mask.to(device),
        generation_config=gen_config,
        **generate_kwargs,
    )
    response = out[:, batch.input_ids.shape[1] :].cpu()
    eos = gen_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    ids, mask, outputs = truncate_responses(response, tokenizer, eos_ids, stop_sequences)
    return Generation(prompt=batch, response_ids=ids, response_mask=mask, outputs=outputs)


def truncate_responses(
    response_ids: Tensor, tokenizer: PreTrainedTokenizerBase, eos_ids: set[int], stop_sequences: Sequence[str]
) -> tuple[Tensor, Tensor, list[str]]:
    """Keep each row up to and including its first EOS, or through the first stop sequence.

    response_ids: (B, R) long as returned by generate (pad after finished rows).
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
