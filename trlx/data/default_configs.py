"""Ready-made configurations (trlX-compatible names)."""

from trlx.config import (
    ModelConfig,
    OptimizerConfig,
    PPOConfig,
    SchedulerConfig,
    TokenizerConfig,
    TrainConfig,
    TRLConfig,
)


def default_ppo_config() -> TRLConfig:
    """GPT-2-sized PPO defaults close to trlX's, for a sentiment-style task with ~40-token continuations."""
    return TRLConfig(
        train=TrainConfig(
            seq_length=1024,
            epochs=100,
            total_steps=10000,
            batch_size=32,
            checkpoint_interval=10000,
            eval_interval=100,
            checkpoint_dir="ckpts",
            seed=1000,
        ),
        model=ModelConfig(model_path="gpt2", num_layers_unfrozen=2),
        tokenizer=TokenizerConfig(tokenizer_path=None, truncation_side="right"),  # the model's own tokenizer
        optimizer=OptimizerConfig(
            name="adamw", kwargs={"lr": 3.0e-5, "betas": [0.9, 0.95], "eps": 1.0e-8, "weight_decay": 1.0e-6}
        ),
        scheduler=SchedulerConfig(name="cosine_annealing", kwargs={"T_max": 10000, "eta_min": 3.0e-5}),
        method=PPOConfig(
            num_rollouts=128,
            chunk_size=128,
            ppo_epochs=4,
            init_kl_coef=0.001,
            target=None,
            horizon=10000,
            gamma=1.0,
            lam=0.95,
            cliprange=0.2,
            cliprange_value=0.2,
            vf_coef=1.0,
            scale_reward="ignored",
            ref_mean=None,
            ref_std=None,
            cliprange_reward=10.0,
            gen_kwargs={"max_new_tokens": 40, "top_k": 0, "top_p": 1.0, "do_sample": True},
        ),
    )
