"""What the PPO trainer calls to score samples: anything shaped like ``RewardFn``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["RewardFn"]


@runtime_checkable
class RewardFn(Protocol):
    """A reward function: plain functions, ``RewardModel.as_reward_fn()`` and ``CombinedReward`` all fit.

    samples: the full texts, prompt followed by its generated continuation (what a reward model should read)
    prompts: the prompts alone; outputs: the continuations alone (same order, same length as samples)
    metadata: extra per-sample columns the prompt dataset carried (e.g. reference answers)
    returns: one float per sample, or one list of per-token floats per sample (dense rewards)

    It is called with the same arguments on every process of a distributed run, so it must not branch on rank.
    """

    def __call__(
        self, samples: list[str], prompts: list[str], outputs: list[str], **metadata: Any
    ) -> Sequence[float] | Sequence[Sequence[float]]: ...
