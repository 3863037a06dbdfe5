"""Weighted sums of reward functions, with per-component means kept for logging.

Typical use: a learned reward model plus a small hand-written penalty (length, a banned phrase), each weighted,
with ``reward/<name>`` curves to see which term moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trlx.rewards.protocol import RewardFn
from trlx.rewards.scoring import call_with_accepted_kwargs

__all__ = ["CombinedReward", "RewardComponent"]


@dataclass
class RewardComponent:
    """One scorer in a ``CombinedReward``."""

    name: str
    """Metric suffix: its mean raw score is logged as ``reward/<name>``."""
    fn: RewardFn
    """Returns one float per sample."""
    weight: float = 1.0
    """Multiplies this component's scores in the sum (negative for penalties)."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name != self.name.strip():
            raise ValueError(
                f"RewardComponent.name must be a non-empty name without '/' or edge spaces, got {self.name!r}"
            )
        if not math.isfinite(self.weight):
            raise ValueError(f"RewardComponent.weight must be finite, got {self.weight}")


class CombinedReward:
    """A ``RewardFn`` returning sum_k weight_k * fn_k(samples, ...) per sample.

    ``last_metrics`` holds the mean *unweighted* score of each component over the last call, keyed
    ``reward/<name>``, so a trainer can log them next to the total; unweighted so a curve keeps its meaning when a
    weight is retuned.
    """

    def __init__(self, components: Sequence[RewardComponent]):
        if not components:
            raise ValueError("CombinedReward needs at least one component")
        names = [c.name for c in components]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"component names must be unique, repeated: {duplicates}")
        self.components = list(components)
        self.last_metrics: dict[str, float] = {}

    def __call__(self, samples: list[str], prompts: list[str], outputs: list[str], **metadata: Any) -> list[float]:
        totals = [0.0] * len(samples)
        metrics: dict[str, float] = {}
        for component in self.components:
            # Called the way the trainer calls a reward_fn: by keyword, with only the arguments it declares.
            scores = call_with_accepted_kwargs(
                component.fn, samples=samples, prompts=prompts, outputs=outputs, **metadata
            )
            if len(scores) != len(samples):
                raise ValueError(
                    f"reward component {component.name!r} returned {len(scores)} scores for {len(samples)} samples"
                )
            if any(isinstance(s, Sequence) for s in scores):
                raise TypeError(
                    f"reward component {component.name!r} returned per-token rewards; CombinedReward sums one scalar "
                    "per sample"
                )
            values = [float(s) for s in scores]
            totals = [t + component.weight * v for t, v in zip(totals, values, strict=True)]
            metrics[f"reward/{component.name}"] = sum(values) / len(values) if values else float("nan")
        self.last_metrics = metrics
        return totals
