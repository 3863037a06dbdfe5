"""trlX-compatible import path: `from trlx.data.method_configs import PPOConfig` (the online methods' config)."""

from trlx.config import PPOConfig

__all__ = ["PPOConfig"]
