"""train.tracker=tensorboard mirrors the metrics.jsonl scalars into TensorBoard events."""

import pytest
from conftest import TINY_PROMPTS, good_word_reward, tiny_ppo_config

import trlx


def test_tensorboard_events_carry_the_metrics(tiny_gpt2_path, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    config = tiny_ppo_config(
        tmp_path / "run", **{"train.total_steps": 4, "train.eval_interval": 4, "train.tracker": "tensorboard"}
    )
    trlx.train(str(tiny_gpt2_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    logdir = tmp_path / "run" / "tensorboard"
    assert any(p.name.startswith("events.out.tfevents") for p in logdir.iterdir())
    events = event_accumulator.EventAccumulator(str(logdir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"reward/mean", "kl/mean", "policy/loss", "eval/reward_mean"} <= tags
    assert [e.step for e in events.Scalars("policy/loss")] == [1, 2, 3, 4]
