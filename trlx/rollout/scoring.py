"""Rollout step 2: log-probs (policy and reference) and values of the generated tokens, in one forward each."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from trlx.algorithms.ppo import logprobs_and_entropy
from trlx.algorithms.sampling import eos_ban, sampling_logits
from trlx.data.prompts import position_ids_from_mask
from trlx.models.policy import logits_kwargs
from trlx.rollout.options import SamplingParams

# (input_ids, attention_mask, position_ids, logits_to_keep) -> (logits (B, K, V), values (B, K) or None), where
# K >= logits_to_keep are the last positions (a model without `logits_to_keep` may return all of them).
ForwardFn = Callable[[Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor | None]]


def reference_forward(lm: torch.nn.Module) -> ForwardFn:
    keep_kwargs = logits_kwargs(lm, 1)  # probes the signature once, not per call

    def forward(input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, keep: int) -> tuple[Tensor, None]:
        kwargs = {"logits_to_keep": keep} if keep_kwargs else {}
        out = lm(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **kwargs
        )
        return out.logits, None

    return forward


class Scored(NamedTuple):
    """What `score_response` computes for the (B, R) response tokens."""

    logprobs: Tensor  # (B, R) float32 log-probs under the sampling distribution
    values: Tensor | None  # (B, R) float32 value estimates V(s_t), if the forward has a value head
    entropy: Tensor  # (B, R) float32 entropy of the sampling distribution (no gradient), a statistic


def score_response(
    forward: ForwardFn,
    query_ids: Tensor,
    query_mask: Tensor,
    response_ids: Tensor,
    response_mask: Tensor,
    params: SamplingParams | None = None,
) -> Scored:
    """Log-probs of the response tokens under the distribution `params` describes, and values if any.

    query_ids, query_mask: (B, P) left-padded; response_ids, response_mask: (B, R) right-padded.
    The logit at position P-1+t predicts response token t; the value at the same position estimates the state
    before token t is emitted. The last response token is not fed: nothing reads its position (its logits would
    predict the token after the response), and causal attention makes the other positions independent of it. So
    the forward sees the P + R - 1 tokens the sampler fed (a replayed frozen trunk covers exactly those), and only
    its last R positions get LM-head logits (`logits_to_keep`). They go through `sampling_logits` exactly as in
    the sampler: temperature, EOS banned below `min_new_tokens`, top-k/top-p. `params=None` scores the model's
    plain softmax. Log-probs and entropy come from one fused pass (`logprobs_and_entropy`), so no (B, R, V) tensor
    beyond the warped logits outlives this call.
    """
    params = params or SamplingParams(max_new_tokens=response_ids.shape[1])
    width = response_ids.shape[1]
    input_ids = torch.cat([query_ids, response_ids[:, :-1]], dim=1)
    attention_mask = torch.cat([query_mask.long(), response_mask[:, :-1].long()], dim=1)
    logits, values = forward(input_ids, attention_mask, position_ids_from_mask(attention_mask), width)
    if logits.shape[1] != width:  # a no-op slice would still cost a (B, R, V) zeros + copy in backward
        logits = logits[:, -width:]
    banned = None
    if params.min_new_tokens > 0:
        early = torch.arange(width, device=logits.device) < params.min_new_tokens  # (R,)
        banned = early[:, None] & eos_ban(params.eos_token_ids, logits.shape[-1], logits.device)  # (R, V)
    # With no top-k/top-p cut after it, the ban is the last warp: the fused log-prob function applies it without
    # the (B, R, V) masked copy (and the masked gradient). Before a cut it must come first, as in the sampler.
    ban_last = not 0 < params.top_k < logits.shape[-1] and params.top_p >= 1.0
    warped = sampling_logits(
        logits, params.temperature, params.top_k, params.top_p, None if ban_last else banned, keep=response_ids
    )
    del logits  # when warping made a copy, the raw (B, R, V) logits are not needed for backward: free them now
    logprobs, entropy = logprobs_and_entropy(warped, response_ids, banned if ban_last else None)
    values = None if values is None else values[:, -width:].float()
    return Scored(logprobs, values, entropy)
