"""`PPOTrainer`, trlX's name for the online trainer: PPO is `method.name: ppo` of `trlx.trainers.online`."""

from trlx.trainers.online import OnlineTrainer

PPOTrainer = OnlineTrainer

__all__ = ["OnlineTrainer", "PPOTrainer"]
