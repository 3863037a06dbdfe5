"""GRPO, RLOO and REINFORCE++ run through the same loop as PPO: they learn, build no critic (and no reference
without a KL term), log their group statistics and resume exactly."""

import json

import pytest
import torch
from conftest import TINY_PROMPTS, good_word_reward, save_tiny_gpt2, tiny_ppo_config
from resilience_helpers import metric_rows, run, weights

import trlx
from trlx.checkpoint import read_latest
from trlx.logging import read_metrics

GROUP = {"method.num_generations": 8, "method.init_kl_coef": 0.0}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


def good_words(samples, prompts, outputs, **kwargs):
    """How many "good" the 8 generated words hold: RLOO's advantages keep the reward's scale, unlike GRPO's."""
    return [8 * r for r in good_word_reward(samples, prompts, outputs)]


def train(model_path, run_dir, **overrides):
    config = tiny_ppo_config(run_dir, **{"train.total_steps": 96, "train.eval_interval": 48, **overrides})
    return trlx.train(str(model_path), reward_fn=good_words, prompts=TINY_PROMPTS, config=config)


def rewards(run_dir):
    return [r["reward/mean"] for r in read_metrics(run_dir / "metrics.jsonl") if "reward/mean" in r]


@pytest.fixture(scope="module")
def grpo(model_path, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("grpo")
    trainer = train(model_path, run_dir, **{"method.name": "grpo", **GROUP, "method.cliprange_high": 0.28})
    return run_dir, trainer


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_pp"])
def test_each_method_learns_the_easy_reward(name, model_path, grpo, tmp_path):
    run_dir = grpo[0] if name == "grpo" else tmp_path
    if name != "grpo":
        train(model_path, run_dir, **{"method.name": name, **GROUP})
    values = rewards(run_dir)
    # 6 rollouts of 64 samples (8 prompts x 8); the random policy writes "good" in ~1/64 of its 8 words.
    first, last = values[0], sum(values[-4:]) / 4
    assert last > first + 0.5, f"{name}: reward did not rise: first {first:.3f}, last {last:.3f}"


def test_critic_free_run_has_no_value_head_and_no_reference(grpo, model_path):
    run_dir, trainer = grpo
    policy = trainer.accelerator.unwrap_model(trainer.policy)
    assert policy.value_head is None and trainer.reference is None
    lm_params = sum(p.numel() for p in policy.lm.parameters())
    assert sum(p.numel() for p in policy.parameters()) == lm_params
    optimized = sum(p.numel() for group in trainer.optimizer.param_groups for p in group["params"])
    assert optimized == lm_params  # no value parameters, so no value optimizer state
    final = run_dir / "checkpoint_00096"
    assert (final / "model.safetensors").is_file() and not (final / "value_head.safetensors").exists()


def test_group_metrics_are_logged_and_value_metrics_are_not(grpo):
    rows = [r for r in read_metrics(grpo[0] / "metrics.jsonl") if "reward/mean" in r]
    for key in ("reward/group_std_mean", "groups/zero_std_fraction", "policy/clip_low_frac", "policy/clip_high_frac"):
        assert all(key in r for r in rows), key
    assert not any(k.startswith("value/") for r in rows for k in r)
    assert all(r["kl/mean"] == 0.0 for r in rows)  # no reference: the policy is its own reference
    assert 0.0 <= rows[0]["groups/zero_std_fraction"] <= 1.0


def test_kl_loss_term_builds_a_reference_and_is_logged(model_path, tmp_path):
    overrides = {"method.name": "grpo", **GROUP, "method.kl_loss_coef": 0.1, "train.total_steps": 8}
    trainer = train(model_path, tmp_path, **overrides)
    assert trainer.reference is not None
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "policy/kl_loss" in r]
    assert len(rows) == 8 and rows[0]["policy/kl_loss"] == pytest.approx(0.0, abs=1e-6)
    assert rows[-1]["policy/kl_loss"] > 0  # the policy moved away from the reference


def test_dynamic_sampling_drops_groups_without_signal(model_path, tmp_path):
    def any_good(samples, prompts, outputs, **kwargs):  # most groups of the random policy score all zeros
        return [float("good" in o.split()) for o in outputs]

    config = tiny_ppo_config(
        tmp_path,
        **{"method.name": "grpo", **GROUP, "method.dynamic_sampling": True, "train.total_steps": 8},
    )
    trainer = trlx.train(str(model_path), reward_fn=any_good, prompts=TINY_PROMPTS, config=config)
    row = next(r for r in read_metrics(tmp_path / "metrics.jsonl") if "groups/dropped" in r)
    assert row["groups/dropped"] > 0 and row["groups/sampling_rounds"] > 1
    assert trainer.step == 8


def test_grpo_resumes_exactly_from_mid_rollout(model_path, tmp_path):
    grpo = {
        "method.name": "grpo",
        "method.num_generations": 4,
        "method.kl_loss_coef": 0.05,
        "method.loss_type": "sequence_mean",
        "method.dynamic_sampling": True,
    }
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    run(model_path, straight, 12, **grpo)
    run(model_path, stopped, 6, **grpo)  # two steps into the second rollout
    assert json.loads((stopped / "checkpoint_00006" / "trainer_state.json").read_text())["rollout"] is not None
    run(model_path, stopped, 12, **{**grpo, "train.resume_from_checkpoint": "latest"})
    assert metric_rows(stopped) == metric_rows(straight)
    a, b = weights(stopped / "checkpoint_00012"), weights(straight / "checkpoint_00012")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resuming_with_another_method_is_refused_before_loading(model_path, tmp_path):
    run(model_path, tmp_path, 4, **{"method.name": "grpo", "method.num_generations": 4})
    with pytest.raises(ValueError, match="method.name is ppo but checkpoint .* was written by grpo"):
        run(model_path, tmp_path, 8, **{"train.resume_from_checkpoint": "latest"})


def test_ppo_checkpoint_without_its_value_head_is_refused_before_loading(model_path, tmp_path):
    run(model_path, tmp_path, 4)
    (read_latest(tmp_path) / "value_head.safetensors").unlink()
    with pytest.raises(ValueError, match=r"not a complete trlx checkpoint \(missing value_head\.safetensors\)"):
        run(model_path, tmp_path, 8, **{"train.resume_from_checkpoint": "latest"})


def test_mid_rollout_resume_with_kl_where_there_was_no_reference_is_refused(model_path, tmp_path):
    grpo = {"method.name": "grpo", "method.num_generations": 4, "method.init_kl_coef": 0.0, "method.target": None}
    run(model_path, tmp_path, 6, **grpo)  # mid-rollout: the rollout's reference log-probs are the policy's own
    with pytest.raises(ValueError, match="saved mid-rollout by a run without a reference model"):
        run(model_path, tmp_path, 8, **{**grpo, "method.kl_loss_coef": 0.1, "train.resume_from_checkpoint": "latest"})


@pytest.mark.parametrize("dense", [False, True], ids=["scalar", "dense"])
def test_overlong_penalty_is_part_of_every_reward(dense, model_path, tmp_path):
    from trlx.algorithms.advantages import overlong_penalty
    from trlx.trlx import make_trainer

    def reward_fn(samples, **kwargs):  # 1 per sample; dense: 1/8 on each of exactly 8 tokens
        return [[1.0 / 8] * 8 if dense else 1.0 for _ in samples]

    overrides = {"method.name": "grpo", **GROUP, "method.overlong_buffer": 4}
    if dense:
        overrides["method.gen_kwargs"] = {"max_new_tokens": 8, "min_new_tokens": 8}
    trainer = make_trainer(
        str(model_path), reward_fn=reward_fn, prompts=TINY_PROMPTS, config=tiny_ppo_config(tmp_path, **overrides)
    )
    rollout, _ = trainer.collect_rollout()
    lengths = rollout.response_mask.sum(-1)
    expected = 1.0 + overlong_penalty(lengths, 8, 4)  # 8 new tokens, a 4-token ramp: 1 - 0.25 per token past 4
    assert rollout.scores.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    assert (lengths > 4).any()  # the random policy writes long responses, so the penalty is exercised
    if dense:  # all 8 tokens long: the whole penalty (-1) lands on the last token
        assert rollout.rewards[:, -1].tolist() == pytest.approx([1 / 8 - 1] * len(rollout))
