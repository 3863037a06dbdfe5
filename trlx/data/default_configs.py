"""Ready-made configurations (trlX-compatible names)."""

from trlx.config import TRLConfig


def default_ppo_config() -> TRLConfig:
    """trlx's (and trlX's) PPO defaults: the field defaults of `TRLConfig`, the same ones a YAML file or the CLI
    starts from, documented once in the README's config reference."""
    return TRLConfig()
