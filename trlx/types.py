"""Typed batches that flow through the PPO loop, with their shapes.

B is the batch size, P the (left-padded) prompt length and R the (right-padded) response length.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from trlx.algorithms.advantages import degenerate_groups


@dataclass
class PromptBatch:
    """Prompts ready for `generate`.

    input_ids: (B, P) long, left-padded so every prompt ends in the last column and generation starts together.
    attention_mask: (B, P) long, 0 on padding.
    prompts: the B prompt strings.
    metadata: B dicts of extra prompt fields (passed to reward_fn as keyword lists).
    """

    input_ids: Tensor
    attention_mask: Tensor
    prompts: list[str]
    metadata: list[dict[str, Any]]


@dataclass
class Generation:
    """What the policy wrote for a PromptBatch, truncated at EOS / stop sequences.

    response_ids: (B, R) long, right-padded with the pad token.
    response_mask: (B, R) long, 1 on kept response tokens (a prefix of each row).
    outputs: the B decoded continuations (stop sequence removed).
    logprobs: (B, R) float log-prob of each kept token under the distribution that drew it (0 on padding), or
        None when the engine does not report it.
    values: (B, R) float V(s_t) of the policy's value head in the state each kept token was drawn in (0 on
        padding), recorded while sampling when asked, else None.
    trunk: (B, P + R, H) output of the policy's frozen trunk for [prompt, response] recorded while sampling
        (`trlx.models.trunk`), or None. The last column, never fed to the model, is zeros.
    """

    prompt: PromptBatch
    response_ids: Tensor
    response_mask: Tensor
    outputs: list[str]
    logprobs: Tensor | None = None
    trunk: Tensor | None = None
    values: Tensor | None = None

    @property
    def samples(self) -> list[str]:
        return [p + o for p, o in zip(self.prompt.prompts, self.outputs)]


@dataclass
class RolloutBatch:
    """One rollout, scored and ready for PPO updates. All tensors share the first dimension B.

    query_ids, query_mask: (B, P) left-padded prompt tokens and mask.
    response_ids, response_mask: (B, R) right-padded response tokens and mask (float 1/0).
    logprobs: (B, R) log pi_old(a_t | s_t) under the sampling distribution (`trlx.algorithms.sampling`).
    ref_logprobs: (B, R) the frozen reference's log-probs of the same tokens.
    values: (B, R) value-head estimates V(s_t) from the rollout policy.
    rewards: (B, R) per-token rewards: the (scaled) scores minus kl_coef * KL.
    advantages, returns: (B, R) from GAE; advantages whitened over the rollout when configured.
    scores: (B,) the reward function's score per sample (sum of per-token scores for dense rewards), scaled.
    query_trunk, response_trunk: (B, P, H) and (B, R, H) output of the frozen trunk at each position
        (`trlx.models.trunk`), or None when the whole model trains.
    """

    query_ids: Tensor
    query_mask: Tensor
    response_ids: Tensor
    response_mask: Tensor
    logprobs: Tensor
    ref_logprobs: Tensor
    values: Tensor
    rewards: Tensor
    advantages: Tensor
    returns: Tensor
    scores: Tensor
    query_trunk: Tensor | None = None
    response_trunk: Tensor | None = None

    def __len__(self) -> int:
        return self.query_ids.shape[0]

    @property
    def trunk(self) -> Tensor | None:
        """(B, P + R, H) frozen-trunk output for [query, response], or None."""
        if self.query_trunk is None or self.response_trunk is None:
            return None
        return torch.cat([self.query_trunk, self.response_trunk], dim=1)

    def tensors(self) -> dict[str, Tensor]:
        """The fields that are set, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def select(self, index: Tensor) -> RolloutBatch:
        """The rows at `index` (a (M,) long tensor), e.g. one minibatch."""
        return RolloutBatch(**{k: v[index] for k, v in self.tensors().items()})

    def to(self, device: torch.device | str) -> RolloutBatch:
        return RolloutBatch(**{k: v.to(device) for k, v in self.tensors().items()})

    def trimmed(self) -> RolloutBatch:
        """The same rows without the columns that are padding in every row (a minibatch then pays only for its
        own longest prompt and response, not the whole rollout's)."""
        query_start = int((self.query_mask.sum(0) == 0).long().cumprod(0).sum())
        response_end = max(int(self.response_mask.sum(-1).max()), 1)
        out = {}
        for name, t in self.tensors().items():
            if name.startswith("query"):
                t = t[:, query_start:]
            elif t.dim() > 1:
                t = t[:, :response_end]
            out[name] = t
        return RolloutBatch(**out)

    @classmethod
    def concat(cls, chunks: list[RolloutBatch], pad_id: int) -> RolloutBatch:
        """Stack rollout chunks whose prompt (left-padded) and response (right-padded) widths differ."""
        if len(chunks) == 1:
            return chunks[0]
        widths = {
            "query": max(c.query_ids.shape[1] for c in chunks),
            "response": max(c.response_ids.shape[1] for c in chunks),
        }

        def pad(name: str, t: Tensor) -> Tensor:
            if t.dim() == 1:
                return t
            value = pad_id if name.endswith("_ids") else 0
            left = name.startswith("query")
            missing = widths["query" if left else "response"] - t.shape[1]
            # F.pad counts from the last dimension: skip the hidden dimension of (B, L, H) trunk outputs.
            spec = ((0, 0) if t.dim() == 3 else ()) + ((missing, 0) if left else (0, missing))
            return torch.nn.functional.pad(t, spec, value=value)

        names = chunks[0].tensors()
        return cls(**{name: torch.cat([pad(name, getattr(c, name)) for c in chunks]) for name in names})


def right_pad_cat(tensors: list[Tensor], width: int) -> Tensor:
    """Right-pad (B_i, R_i) tensors with zeros to (B_i, width) and stack them into (sum B_i, width)."""
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors])


@dataclass
class SampledChunk:
    """One generate call's samples, scored: `batch` (B rows) with the reward function's (B,) `scores` and, for
    dense rewards, (B, R) per-token scores; `gap` the sampler-vs-scorer gaps (largest log-prob and value
    differences, (2,)) when the policy scored the samples again, else None; `problem` a non-finite value."""

    batch: RolloutBatch
    scores: Tensor
    dense: Tensor | None
    gap: Tensor | None
    problem: str | None

    def select(self, rows: Tensor) -> SampledChunk:
        dense = None if self.dense is None else self.dense[rows]
        return SampledChunk(self.batch.select(rows), self.scores[rows], dense, self.gap, self.problem)

    def split_degenerate(self, group_size: int) -> tuple[SampledChunk, SampledChunk]:
        """(the groups whose scores differ, the groups whose scores are all equal), each group kept whole."""
        rows = degenerate_groups(self.scores, group_size).repeat_interleave(group_size)
        return self.select(torch.nonzero(~rows).squeeze(-1)), self.select(torch.nonzero(rows).squeeze(-1))
