"""Rewards: the reward-function protocol, learned reward models and weighted combinations.

The names are imported on first use, so `trlx.rewards.rm_config` (read by `trlx train-rm --help`) loads
without torch.
"""

from trlx.lazy import lazy_getattr

_EXPORTS = {
    "CombinedReward": "trlx.rewards.combine",
    "RewardComponent": "trlx.rewards.combine",
    "RewardFn": "trlx.rewards.protocol",
    "RewardModel": "trlx.rewards.reward_model",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
