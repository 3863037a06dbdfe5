"""Bad input to trlx.train fails with a clear error, and before any model is loaded where it can."""

import math

import pytest
from conftest import TINY_PROMPTS, good_word_reward, tiny_ppo_config

import trlx
import trlx.trlx as trlx_module
from trlx.config import ConfigError
from trlx.faults import TrainingFaultError
from trlx.rewards.scoring import RewardError


@pytest.fixture
def no_model_loading(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(trlx_module, "load_causal_lm", fail)


def test_missing_model_path(tmp_path, no_model_loading):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trlx.train(str(tmp_path / "nope"), reward_fn=good_word_reward, prompts=TINY_PROMPTS)


def test_folder_without_model(tmp_path, no_model_loading):
    with pytest.raises(FileNotFoundError, match="without config.json"):
        trlx.train(str(tmp_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS)


def test_empty_prompts(tiny_gpt2_path, tmp_path, no_model_loading):
    with pytest.raises(ValueError, match="prompts is empty"):
        trlx.train(str(tiny_gpt2_path), reward_fn=good_word_reward, prompts=[], config=tiny_ppo_config(tmp_path))


def test_prompt_longer_than_seq_length(tiny_gpt2_path, tmp_path, no_model_loading):
    long_prompt = " ".join(["good"] * 40)
    with pytest.raises(ValueError, match="prompt 1 has 40 tokens but only 24 fit"):
        trlx.train(
            str(tiny_gpt2_path),
            reward_fn=good_word_reward,
            prompts=["ok", long_prompt],
            config=tiny_ppo_config(tmp_path),
        )


def test_unknown_config_field():
    with pytest.raises(ConfigError, match="unknown field"):
        tiny_ppo_config("x", **{"train.learning_rate": 1.0})


def test_missing_or_uncallable_reward_fn(tiny_gpt2_path, no_model_loading):
    with pytest.raises(ValueError, match="reward_fn is required"):
        trlx.train(str(tiny_gpt2_path), prompts=TINY_PROMPTS)
    with pytest.raises(TypeError, match="reward_fn must be callable"):
        trlx.train(str(tiny_gpt2_path), reward_fn=[1.0], prompts=TINY_PROMPTS)


def test_offline_rl_with_a_reward_per_sample_missing_fails_before_loading(tiny_gpt2_path, no_model_loading):
    with pytest.raises(ValueError, match=r"rewards has 1 values for 2 samples"):
        trlx.train(str(tiny_gpt2_path), samples=["a good film", "a bad film"], rewards=[1.0])


@pytest.mark.parametrize(
    "reward_fn, error, message",
    [
        (lambda samples, **kw: [1.0] * (len(samples) - 1), RewardError, "scores for"),
        (lambda samples, **kw: ["high"] * len(samples), RewardError, "non-number"),
        # NaN is skipped and counted (see docs/bad_inputs.md); only train.max_consecutive_faults in a row stop.
        (lambda samples, **kw: [math.nan] * len(samples), TrainingFaultError, "returned nan"),
    ],
    ids=["wrong-length", "non-number", "nan"],
)
def test_bad_reward_fn_output_stops_before_any_update(tiny_gpt2_path, tmp_path, reward_fn, error, message):
    with pytest.raises(error, match=message):
        trlx.train(str(tiny_gpt2_path), reward_fn=reward_fn, prompts=TINY_PROMPTS, config=tiny_ppo_config(tmp_path))
    metrics = tmp_path / "metrics.jsonl"
    assert not metrics.exists() or all('"policy/loss"' not in line for line in metrics.read_text().splitlines())


def test_metric_fn_that_returns_nothing_is_a_clear_error(tiny_gpt2_path, tmp_path):
    def metric_fn(samples, **kwargs):
        {"length": [len(s) for s in samples]}  # forgot `return`

    with pytest.raises(RewardError, match=r"metric_fn must return a dict .* got NoneType \(did it forget to return"):
        trlx.train(
            str(tiny_gpt2_path),
            reward_fn=good_word_reward,
            prompts=TINY_PROMPTS,
            metric_fn=metric_fn,
            config=tiny_ppo_config(tmp_path),
        )
