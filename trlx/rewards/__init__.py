"""Rewards: the reward-function protocol, learned reward models and weighted combinations."""

from trlx.rewards.combine import CombinedReward, RewardComponent
from trlx.rewards.protocol import RewardFn
from trlx.rewards.reward_model import RewardModel

__all__ = ["CombinedReward", "RewardComponent", "RewardFn", "RewardModel"]
