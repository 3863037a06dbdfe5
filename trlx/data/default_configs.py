"""Ready-made configurations (trlX-compatible names). The config classes are importable from here too, as trlX's
examples do (`from trlx.data.default_configs import ModelConfig, TRLConfig, ...`)."""

from trlx.config import (
    ModelConfig,
    OptimizerConfig,
    PPOConfig,
    SchedulerConfig,
    TokenizerConfig,
    TrainConfig,
    TRLConfig,
)
from trlx.data.method_configs import ILQLConfig, RFTConfig, SFTConfig

__all__ = [
    "ILQLConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PPOConfig",
    "RFTConfig",
    "SFTConfig",
    "SchedulerConfig",
    "TRLConfig",
    "TokenizerConfig",
    "TrainConfig",
    "default_dpo_config",
    "default_grpo_config",
    "default_ilql_config",
    "default_ppo_config",
    "default_rft_config",
    "default_sft_config",
]


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


def default_sft_config() -> TRLConfig:
    """trlX's SFT defaults: 8 samples per step, lr 1e-4 (a constant schedule: trlX's cosine with eta_min = lr),
    the whole model trained, 1000 steps, 40-token samples for evaluation."""
    return TRLConfig().evolve(
        train={"batch_size": 8, "total_steps": 1000, "eval_interval": 100},
        model={"num_layers_unfrozen": -1},
        optimizer={"kwargs": {"lr": 1.0e-4}},
        method={"name": "sft", "gen_kwargs": {"max_new_tokens": 40}},
    )


def default_ilql_config() -> TRLConfig:
    """trlX's ILQL defaults: 64-token samples, 128 per step, 1000 steps, lr 5e-5 (constant: trlX's cosine with
    eta_min = lr), the whole model trained; tau 0.7, gamma 0.99, CQL 0.1, AWAC 1 with beta 0, target-Q Polyak
    alpha 0.001 every 5 steps, two Q heads; sampled with top_k 20 and beta 1 (advantage-shifted logits)."""
    return TRLConfig().evolve(
        train={"seq_length": 64, "batch_size": 128, "total_steps": 1000, "eval_interval": 100},
        model={"num_layers_unfrozen": -1},
        tokenizer={"truncation_side": "right"},
        optimizer={"kwargs": {"lr": 5.0e-5}},
        method={
            "name": "ilql",
            "tau": 0.7,
            "gamma": 0.99,
            "cql_scale": 0.1,
            "awac_scale": 1.0,
            "alpha": 0.001,
            "beta": 0.0,
            "steps_for_target_q_sync": 5,
            "two_qs": True,
            "gen_kwargs": {"max_new_tokens": 56, "top_k": 20, "beta": 1.0, "temperature": 1.0},
        },
    )


def default_dpo_config() -> TRLConfig:
    """DPO (Rafailov et al. 2023) with TRL's defaults: beta 0.1, lr 1e-6, 8 pairs per step, the whole model
    trained; the reference's log-probs are computed once, before training."""
    return TRLConfig().evolve(
        train={"batch_size": 8, "total_steps": 1000, "eval_interval": 100},
        model={"num_layers_unfrozen": -1},
        optimizer={"kwargs": {"lr": 1.0e-6}},
        method={"name": "dpo", "beta": 0.1, "gen_kwargs": {"max_new_tokens": 40}},
    )


def default_rft_config() -> TRLConfig:
    """Rejection-sampling fine-tuning with trlX's RFTConfig defaults (32 completions per prompt, percentile 0.7
    rising to 0.95 over 4 improve steps) and its rft_sentiments settings (batch 32, lr 3e-5, whole model)."""
    return TRLConfig().evolve(
        train={"batch_size": 32, "total_steps": 1000, "eval_interval": 100},
        model={"num_layers_unfrozen": -1},
        method={"name": "rft", "gen_kwargs": {"max_new_tokens": 40}},
    )
