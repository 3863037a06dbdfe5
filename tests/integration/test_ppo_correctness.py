"""What PPO computes is what its docs say: ratio 1 on the first minibatch for every reference kind, reward scaling
by the running std of all scores, dense rewards scaled and clipped like scalar ones, the model's own tokenizer."""

import pytest
import torch
from conftest import TINY_PROMPTS, good_word_reward, tiny_ppo_config

from trlx.data.default_configs import default_ppo_config
from trlx.logging import read_metrics
from trlx.trlx import make_trainer, train

REFERENCES = {
    "copy": {},
    "hydra": {"model.reference": "hydra", "model.num_layers_unfrozen": 1},
    "lora_with_dropout": {"model.peft_config": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1}},
    "copy_top_p_top_k": {"method.gen_kwargs": {"max_new_tokens": 8, "top_p": 0.9, "top_k": 20, "temperature": 0.9}},
    "copy_scored_again": {"method.logprobs_from_sampling": False},
    "hydra_scored_again": {
        "model.reference": "hydra",
        "model.num_layers_unfrozen": 1,
        "method.logprobs_from_sampling": False,
    },
}


@pytest.mark.parametrize("overrides", REFERENCES.values(), ids=REFERENCES.keys())
def test_first_minibatch_of_every_rollout_has_ratio_one(tiny_gpt2_path, tmp_path, overrides):
    """2 rollouts of 16 samples, 2 epochs of 2 minibatches: steps 1 and 5 are the first updates on a rollout.

    The first rollout is scored by the policy forward and matches the sampler's log-probs and values; by default
    the second then uses the sampler's (no gap is measured), unless `method.logprobs_from_sampling` is False.

    For LoRA the second rollout matters: its adapters have moved from zero, so dropout left on in the adapters
    would make update-time log-probs differ from rollout-time ones there."""
    if "model.peft_config" in overrides:
        pytest.importorskip("peft")
    config = tiny_ppo_config(
        tmp_path / "run",
        **{
            "train.total_steps": 8,
            "train.batch_size": 8,
            "train.eval_interval": 1000,
            "method.num_rollouts": 16,
            "method.chunk_size": 16,
            "method.ppo_epochs": 2,
            "optimizer.kwargs": {"lr": 3e-2},
            **overrides,
        },
    )
    trainer = train(str(tiny_gpt2_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    rows = {r["step"]: r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "policy/approx_kl" in r}
    for step in (1, 5):
        assert rows[step]["policy/approx_kl"] < 1e-6, (step, rows[step]["policy/approx_kl"])
        assert rows[step]["policy/clipfrac"] == 0.0, step
    # sampling log-probs and values equal the scored ones
    assert rows[1]["rollout/logprob_gap_max"] < 1e-4 and rows[1]["rollout/value_gap_max"] < 1e-4
    scored_again = overrides.get("method.logprobs_from_sampling") is False
    assert ("rollout/logprob_gap_max" in rows[5]) == scored_again
    if scored_again:
        assert rows[5]["rollout/logprob_gap_max"] < 1e-4 and rows[5]["rollout/value_gap_max"] < 1e-4
    assert rows[8]["policy/approx_kl"] > 1e-6  # later minibatches do see a moved policy
    if "model.reference" not in overrides and "model.peft_config" not in overrides:
        assert rows[1]["policy/entropy"] > 0
    if overrides.get("method.gen_kwargs", {}).get("top_p", 1.0) == 1.0:
        assert abs(rows[1]["kl/mean"]) < 1e-5  # the reference is the initial policy
    else:  # with a cut, each token's step-0 KL is -log(mass the cut kept): positive (large for this flat model)
        assert rows[1]["kl/per_token"] > 0
    lm = trainer.accelerator.unwrap_model(trainer.policy).lm
    assert all(m.p == 0.0 for m in lm.modules() if isinstance(m, torch.nn.Dropout))


class ScriptedReward:
    """Returns the next scripted list of scores (or per-token lists) on each call."""

    def __init__(self, *batches):
        self.batches = list(batches)

    def __call__(self, samples, **kwargs):
        return self.batches.pop(0)


def test_running_scale_divides_by_the_std_of_all_scores_seen_so_far(tiny_gpt2_path, tmp_path):
    # Sample stds (n - 1) of everything seen after each rollout, by hand:
    #   [1, 2, 3, 4]                    mean 2.5,  squared deviations 5     / 3  -> std 1.2909944
    #   + [0, 0, 10, 2]                 mean 2.75, squared deviations 73.5  / 7  -> std 3.2403703
    #   + [5, 5, 5, -3]                 mean 34/12, squared deviations 121.667 / 11 -> std 3.3257489
    # (The batch's own stds would be 1.29, 4.76 and 4.0.)
    batches = ([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 10.0, 2.0], [5.0, 5.0, 5.0, -3.0])
    config = tiny_ppo_config(
        tmp_path / "run",
        **{
            "train.batch_size": 4,
            "method.num_rollouts": 4,
            "method.chunk_size": 4,
            "method.scale_reward": "running",
            "method.cliprange_reward": None,
        },
    )
    trainer = make_trainer(
        str(tiny_gpt2_path), reward_fn=ScriptedReward(*batches), prompts=TINY_PROMPTS, config=config
    )
    for scores, std in zip(batches, (1.2909944, 3.2403703, 3.3257489)):
        rollout, metrics = trainer.collect_rollout()
        assert metrics["reward/scale_std"] == pytest.approx(std, rel=1e-6)
        torch.testing.assert_close(rollout.scores, torch.tensor(scores) / std, rtol=1e-5, atol=1e-6)


def test_dense_rewards_are_scaled_and_clipped_per_token(tiny_gpt2_path, tmp_path):
    # Every response has exactly 4 tokens (EOS banned until the last). Per-token rewards [1, -2, 0.5, 6];
    # ref_mean 1 comes off the last token -> [1, -2, 0.5, 5]; / ref_std 2 -> [0.5, -1, 0.25, 2.5];
    # clip 1.5 -> [0.5, -1, 0.25, 1.5], summing to 1.25. With no KL penalty these are the rewards PPO uses.
    dense = [[1.0, -2.0, 0.5, 6.0]] * 4
    config = tiny_ppo_config(
        tmp_path / "run",
        **{
            "train.batch_size": 4,
            "method.num_rollouts": 4,
            "method.chunk_size": 4,
            "method.init_kl_coef": 0.0,
            "method.scale_reward": "ref",
            "method.ref_mean": 1.0,
            "method.ref_std": 2.0,
            "method.cliprange_reward": 1.5,
            "method.gen_kwargs": {"max_new_tokens": 4, "min_new_tokens": 4},
        },
    )
    trainer = make_trainer(str(tiny_gpt2_path), reward_fn=ScriptedReward(dense), prompts=TINY_PROMPTS, config=config)
    rollout, metrics = trainer.collect_rollout()
    expected = torch.tensor([[0.5, -1.0, 0.25, 1.5]] * 4)
    torch.testing.assert_close(rollout.rewards, expected)
    torch.testing.assert_close(rollout.scores, torch.full((4,), 1.25))
    assert metrics["reward/mean"] == pytest.approx(5.5)  # the raw score: the sum of the per-token rewards
    assert metrics["reward/scaled_mean"] == pytest.approx(1.25)


def test_ref_scaling_without_ref_std_uses_the_first_rollouts_std(tiny_gpt2_path, tmp_path):
    # std([1, 2, 3, 4]) = 1.2909944 (n - 1), kept for later rollouts: [0, 0, 10, 2] / 1.29 (as trlX does).
    batches = ([1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 10.0, 2.0])
    config = tiny_ppo_config(
        tmp_path / "run",
        **{
            "train.batch_size": 4,
            "method.num_rollouts": 4,
            "method.chunk_size": 4,
            "method.scale_reward": "ref",
            "method.cliprange_reward": None,
        },
    )
    trainer = make_trainer(
        str(tiny_gpt2_path), reward_fn=ScriptedReward(*batches), prompts=TINY_PROMPTS, config=config
    )
    for scores in batches:
        rollout, metrics = trainer.collect_rollout()
        assert metrics["reward/scale_std"] == pytest.approx(1.2909944, rel=1e-6)
        torch.testing.assert_close(rollout.scores, torch.tensor(scores) / 1.2909944, rtol=1e-5, atol=1e-6)
    assert trainer.state_dict()["first_rollout_std"] == pytest.approx(1.2909944, rel=1e-6)


def test_default_config_uses_the_models_own_tokenizer(tiny_gpt2_path, tmp_path):
    config = default_ppo_config().evolve(
        model={"model_path": str(tiny_gpt2_path)},
        train={"checkpoint_dir": str(tmp_path / "run"), "seq_length": 64, "batch_size": 4},
        method={"num_rollouts": 4, "chunk_size": 4, "gen_kwargs": {"max_new_tokens": 8}},
    )
    assert config.tokenizer.tokenizer_path is None
    trainer = make_trainer(reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    assert trainer.tokenizer.name_or_path == str(tiny_gpt2_path)
    assert len(trainer.tokenizer) == trainer.accelerator.unwrap_model(trainer.policy).lm.config.vocab_size
