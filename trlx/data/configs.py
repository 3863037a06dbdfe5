"""trlX-compatible import path: `from trlx.data.configs import TRLConfig`."""

from trlx.config import (
    ConfigError,
    ModelConfig,
    OptimizerConfig,
    PPOConfig,
    SchedulerConfig,
    TokenizerConfig,
    TrainConfig,
    TRLConfig,
)

__all__ = [
    "ConfigError",
    "ModelConfig",
    "OptimizerConfig",
    "PPOConfig",
    "SchedulerConfig",
    "TokenizerConfig",
    "TrainConfig",
    "TRLConfig",
]
