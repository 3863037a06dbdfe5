"""trlx: reinforcement learning from human feedback (PPO) for Hugging Face causal language models."""

from trlx.config import TRLConfig
from trlx.trlx import train

__all__ = ["TRLConfig", "train"]
__version__ = "0.1.0"
