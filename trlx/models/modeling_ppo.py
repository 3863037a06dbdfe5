"""trlX-compatible import path for the value-head model: `AutoModelForCausalLMWithValueHead.from_pretrained(path)`
gives trlx's `PolicyWithValueHead` around the causal LM at `path` (dropout off, as trlx trains it)."""

from __future__ import annotations

from trlx.models.policy import PolicyWithValueHead, load_causal_lm


class AutoModelForCausalLMWithValueHead(PolicyWithValueHead):
    """trlX's name; the model is `PolicyWithValueHead` (the LM is `.lm`, the head `.value_head`)."""

    @classmethod
    def from_pretrained(cls, model_path: str) -> AutoModelForCausalLMWithValueHead:
        return cls(load_causal_lm(model_path))


__all__ = ["AutoModelForCausalLMWithValueHead", "PolicyWithValueHead"]
