"""ILQL's model: a causal LM with Q, target-Q and V heads on its last hidden state (trlX's architecture), and the
sampling model that decodes from the advantage-shifted policy (`trlx.algorithms.ilql.ilql_policy_logits`).

The heads live beside the LM (`ilql_heads.safetensors` in a checkpoint), so the LM stays loadable by
`AutoModelForCausalLM`; the sampling policy needs the heads, the LM alone samples its behaviour-cloned policy.
"""

from __future__ import annotations

import copy
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from trlx.algorithms.ilql import ilql_policy_logits
from trlx.models.policy import contiguous_head_input, forward_parameters, forward_with_head_input, hidden_size


def mlp_head(width: int, out: int) -> nn.Sequential:
    """trlX's head: Linear(width, 2 width), ReLU, Linear(2 width, out)."""
    return nn.Sequential(nn.Linear(width, 2 * width), nn.ReLU(), nn.Linear(2 * width, out))


class ILQLHeads(nn.Module):
    """V (one value per state) and one or two Q heads (one value per vocabulary token) with their target copies,
    which are not trained but follow the Q heads by Polyak averaging (`sync_target_heads`)."""

    def __init__(self, width: int, vocab_size: int, two_qs: bool) -> None:
        super().__init__()
        self.v_head = mlp_head(width, 1)
        self.q_heads = nn.ModuleList(mlp_head(width, vocab_size) for _ in range(2 if two_qs else 1))
        self.target_q_heads = copy.deepcopy(self.q_heads).requires_grad_(False)

    def forward(self, hidden: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """hidden: (..., H) -> Q values [(..., V)] of the heads and of the target heads, and V (...)."""
        qs = [q(hidden) for q in self.q_heads]
        target_qs, values = self.sampling(hidden)
        return qs, target_qs, values

    def sampling(self, hidden: Tensor) -> tuple[list[Tensor], Tensor]:
        """What the sampling policy reads: the target Q values (no gradient) and V, without the trained Q heads."""
        with torch.no_grad():
            target_qs = [q(hidden) for q in self.target_q_heads]
        return target_qs, self.v_head(hidden).squeeze(-1)


class ILQLOutput(NamedTuple):
    logits: Tensor  # (B, A, V) the LM's logits at the selected positions
    qs: list[Tensor]  # (B, A, V) per Q head
    target_qs: list[Tensor]  # (B, A, V) per target Q head (no gradient)
    values: Tensor  # (B, A)


class ILQLPolicy(nn.Module):
    """The causal LM (`.lm`) and its ILQL heads (`.ilql_heads`); `beta` scales the advantage when sampling."""

    value_head = None  # no PPO critic: checkpoints hold ilql_heads.safetensors instead

    def __init__(self, lm: PreTrainedModel, two_qs: bool, beta: float) -> None:
        super().__init__()
        self.lm = lm
        parameter = next(lm.parameters())
        width, vocab = hidden_size(lm), lm.get_output_embeddings().weight.shape[0]
        self.ilql_heads = ILQLHeads(width, vocab, two_qs).to(device=parameter.device, dtype=parameter.dtype)
        self.beta = beta
        self.accepts_keep = "logits_to_keep" in forward_parameters(lm)
        contiguous_head_input(lm)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, logits_to_keep: int, positions: Tensor
    ) -> ILQLOutput:
        """input_ids, attention_mask, position_ids: (B, L); positions: (B, A) long indices into the last
        `logits_to_keep` positions, the states whose logits, Q and V are returned."""
        out, hidden = forward_with_head_input(
            self.lm, self.accepts_keep, input_ids, attention_mask, position_ids, logits_to_keep
        )
        # A model without `logits_to_keep` returns every position: cut both to the last `logits_to_keep` first.
        logits, hidden = out.logits[:, -logits_to_keep:], hidden[:, -logits_to_keep:]
        logits = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))
        hidden = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
        qs, target_qs, values = self.ilql_heads(hidden.to(parameter_dtype(self.ilql_heads)))
        return ILQLOutput(logits, qs, target_qs, values)

    @property
    def sampling_lm(self) -> nn.Module:
        """The model the sampler decodes with: the LM's logits shifted by beta * (min target Q - V)."""
        return ILQLSamplingLM(self)


def parameter_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class ILQLSamplingLM(nn.Module):
    """Looks like the causal LM to the decode loop (same forward arguments, an output with `.logits` and the KV
    cache) but its last position's logits are ILQL's sampling policy, log pi(a|s) + beta * (Qhat(s, a) - V(s))."""

    def __init__(self, policy: ILQLPolicy) -> None:
        super().__init__()
        self.policy = policy

    def get_base_model(self) -> nn.Module:
        """The LM, whose forward signature the decode loop reads (as it does through a peft wrapper)."""
        return self.policy.lm

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **kwargs: Any) -> Any:
        policy = self.policy
        position_ids = kwargs.pop("position_ids", None)
        keep = int(kwargs.pop("logits_to_keep", 0))
        out, hidden = forward_with_head_input(
            policy.lm, policy.accepts_keep, input_ids, attention_mask, position_ids, keep, **kwargs
        )
        target_qs, values = policy.ilql_heads.sampling(hidden[:, -1].to(parameter_dtype(policy.ilql_heads)))
        shifted = ilql_policy_logits(out.logits[:, -1], target_qs, values, policy.beta)
        out.logits = shifted[:, None]
        return out
