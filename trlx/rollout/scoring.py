"""Rollout step 2: log-probs (policy and reference) and values of the generated tokens, in one forward each."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from trlx.algorithms.ppo import logprobs_of_labels
from trlx.data.prompts import position_ids_from_mask

# (input_ids, attention_mask, position_ids) -> (logits (B, L, V), values (B, L) or None)
ForwardFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor | None]]


def reference_forward(lm: torch.nn.Module) -> ForwardFn:
    def forward(input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> tuple[Tensor, None]:
        out = lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        return out.logits, None

    return forward


def score_response(
    forward: ForwardFn,
    query_ids: Tensor,
    query_mask: Tensor,
    response_ids: Tensor,
    response_mask: Tensor,
    temperature: float = 1.0,
) -> tuple[Tensor, Tensor | None]:
    """Log-probs (B, R) of the response tokens under `forward`, and its values (B, R) if it has a value head.

    query_ids, query_mask: (B, P) left-padded; response_ids, response_mask: (B, R) right-padded.
    Logits are divided by the sampling temperature so the log-probs are those of the distribution that
    actually produced the tokens. The logit at position P-1+t predicts response token t; the value at the
    same position estimates the state before token t is emitted.
    """
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask.long(), response_mask.long()], dim=1)
    logits, values = forward(input_ids, attention_mask, position_ids_from_mask(attention_mask))
    start, end = query_ids.shape[1] - 1, query_ids.shape[1] - 1 + response_ids.shape[1]
    logprobs = logprobs_of_labels(logits[:, start:end].float() / temperature, response_ids)
    return logprobs, None if values is None else values[:, start:end].float()
