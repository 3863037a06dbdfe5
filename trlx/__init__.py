"""trlx: reinforcement learning from human feedback (PPO) for Hugging Face causal language models."""

from trlx.config import TRLConfig
from trlx.trlx import make_trainer, train

__all__ = ["TRLConfig", "make_trainer", "train"]
__version__ = "0.1.0"
