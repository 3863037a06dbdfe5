"""Ready-made configurations (trlX-compatible names)."""

from trlx.config import TRLConfig


def default_ppo_config() -> TRLConfig:
    """trlx's (and trlX's) PPO defaults: the field defaults of `TRLConfig`, the same ones a YAML file or the CLI
    starts from, documented once in the README's config reference."""
    return TRLConfig()


def default_grpo_config(num_generations: int = 8) -> TRLConfig:
    """GRPO from the same defaults: groups of `num_generations` completions per prompt, no KL (so no reference
    model is built), the DAPO token-mean loss with clip-higher (0.28). Add KL with `method.kl_loss_coef`."""
    return TRLConfig().evolve(
        method={"name": "grpo", "num_generations": num_generations, "init_kl_coef": 0.0, "cliprange_high": 0.28}
    )
