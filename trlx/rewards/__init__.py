"""Rewards: the reward-function protocol, learned reward models and weighted combinations.

The names are imported on first use, so `trlx.rewards.rm_config` (read by `trlx train-rm --help`) loads
without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CombinedReward": "trlx.rewards.combine",
    "RewardComponent": "trlx.rewards.combine",
    "RewardFn": "trlx.rewards.protocol",
    "RewardModel": "trlx.rewards.reward_model",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'trlx.rewards' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
