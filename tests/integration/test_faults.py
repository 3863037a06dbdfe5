"""Guarded numerics and reward-function failures, injected into a real tiny run.

Each test checks the documented behaviour (docs/bad_inputs.md) and that nothing already saved is lost.
"""

import logging
import math
import threading

import pytest
import torch
from resilience_helpers import EVAL_PROMPTS, PROMPTS, make_tiny_gpt2, metric_rows, reward_fn, run, training_rows

import trlx.trainers.online
from trlx.checkpoint import read_latest, resolve_checkpoint
from trlx.faults import KLDivergenceError, NumericalFault, TrainingFaultError
from trlx.rewards.scoring import NonFiniteRewardError, RewardError, RewardFunctionError, RewardTimeoutError
from trlx.trainers.ppo import PPOTrainer

# Training reward calls: 2 per rollout (16 rollouts in chunks of 8); a rollout gives 4 optimizer steps.
SAVE_AFTER_FIRST_ROLLOUT = {"train.checkpoint_interval": 4}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


def misbehaving(change, change_eval=lambda call, scores: scores):
    """`reward_fn`, except that `change(call, scores)` rewrites the result of the call-th training call
    (and `change_eval` that of the call-th evaluation call)."""
    calls = {"n": 0, "eval": 0}

    def reward(samples, prompts, outputs, **kwargs):
        scores = reward_fn(samples, prompts, outputs)
        if prompts[0] in EVAL_PROMPTS:
            calls["eval"] += 1
            return change_eval(calls["eval"], scores)
        calls["n"] += 1
        return change(calls["n"], scores)

    reward.calls = calls
    return reward


def only_first_checkpoint_left(run_dir):
    """The checkpoint written after the first rollout is still the last one, complete and resumable."""
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == ["best_checkpoint", "checkpoint_00004"]
    assert read_latest(run_dir) == run_dir / "checkpoint_00004"
    assert resolve_checkpoint(run_dir, "latest") == run_dir / "checkpoint_00004"
    assert training_rows(run_dir)[-1]["step"] == 4


def test_nonfinite_reward_or_logprobs_skip_the_rollout_and_are_counted(model_path, tmp_path, monkeypatch, caplog):
    def nan_on_third_call(call, scores):
        return [scores[0], math.nan, *scores[2:]] if call == 3 else scores

    def inf_in_second_evaluation(call, scores):
        return [math.inf, *scores[1:]] if call == 2 else scores

    real_score, score_calls = PPOTrainer.score, {"n": 0}

    def score_with_nan(self, generation, from_sampling=False):
        chunk = real_score(self, generation, from_sampling)
        score_calls["n"] += 1
        if score_calls["n"] == 7:  # the first chunk of rollout 4 (every rollout scores 2 chunks, skipped or not)
            chunk.logprobs[0, 0] = math.nan
        return chunk

    monkeypatch.setattr(PPOTrainer, "score", score_with_nan)
    caplog.set_level(logging.WARNING, logger="trlx.faults")
    # Rollouts: 1 ok, 2 NaN reward, 3 ok, 4 NaN log-prob, 5 ok -> 12 steps, two skipped rollouts.
    # The evaluation at step 3 gets an inf reward: it is skipped (no eval row, no best_checkpoint update).
    run(model_path, tmp_path, 12, reward=misbehaving(nan_on_third_call, inf_in_second_evaluation))

    rows = training_rows(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert rows[-1]["faults/skipped_rollouts"] == 2 and rows[-1]["faults/skipped_steps"] == 0
    skips = [r for r in metric_rows(tmp_path) if "reward/mean" not in r and "faults/skipped_rollouts" in r]
    assert [(r["step"], r["faults/skipped_rollouts"]) for r in skips] == [(4, 1), (8, 2)]
    warnings = [r.getMessage() for r in caplog.records]
    assert any("reward_fn returned nan for score 1" in w and any(p in w for p in PROMPTS) for w in warnings)
    assert any("logprobs has 1 non-finite value(s) in sample(s) [0]" in w for w in warnings)
    assert any("skipped evaluation at step 3" in w and "reward_fn returned inf for score 0" in w for w in warnings)
    evals = [r["step"] for r in metric_rows(tmp_path) if "eval/reward_mean" in r]
    assert evals == [0, 6, 9, 12]


def test_nonfinite_loss_or_gradient_skips_the_step(model_path, tmp_path, monkeypatch):
    real_policy_loss, real_value_loss, calls = trlx.trainers.online.policy_loss, trlx.trainers.online.value_loss, {}

    def nan_loss_on_step_2(*args, **kwargs):
        out = real_policy_loss(*args, **kwargs)
        calls["policy"] = calls.get("policy", 0) + 1
        return out._replace(loss=out.loss * math.nan) if calls["policy"] == 2 else out

    def nan_gradient_on_step_5(*args, **kwargs):
        out = real_value_loss(*args, **kwargs)
        calls["value"] = calls.get("value", 0) + 1
        if calls["value"] == 5:  # the loss stays finite; only its gradient is poisoned
            out.loss.register_hook(lambda grad: grad * math.nan)
        return out

    monkeypatch.setattr(trlx.trainers.online, "policy_loss", nan_loss_on_step_2)
    monkeypatch.setattr(trlx.trainers.online, "value_loss", nan_gradient_on_step_5)
    trainer = run(model_path, tmp_path, 8)

    rows = training_rows(tmp_path)
    skipped = [r["step"] for r in rows if "loss/total" not in r]
    assert skipped == [2, 5]
    assert [r["faults/skipped_steps"] for r in rows] == [0, 1, 1, 1, 2, 2, 2, 2]
    # Two of the eight steps never reached the optimizer or the schedule, and no weight became NaN.
    assert trainer.optimizer.state_dict()["state"][0]["step"].item() == 6
    assert trainer.scheduler.state_dict()["_step_count"] == 1 + 6
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())


def test_nan_rewards_in_a_row_stop_the_run_naming_the_sample(model_path, tmp_path):
    def nan_from_third_call(call, scores):
        return [scores[0], math.nan, *scores[2:]] if call >= 3 else scores

    with pytest.raises(TrainingFaultError, match=r"train\.max_consecutive_faults=3") as excinfo:
        run(model_path, tmp_path, 40, reward=misbehaving(nan_from_third_call), **SAVE_AFTER_FIRST_ROLLOUT)
    message = str(excinfo.value)
    assert "reward_fn returned nan for score 1" in message and any(p in message for p in PROMPTS)
    assert isinstance(excinfo.value.__cause__, NumericalFault)
    only_first_checkpoint_left(tmp_path)


def test_raising_reward_fn_is_reported_with_the_batch_prompts(model_path, tmp_path):
    def server_down(call, scores):
        if call == 3:
            raise ConnectionError("reward server unreachable")
        return scores

    with pytest.raises(RewardFunctionError, match="ConnectionError: reward server unreachable") as excinfo:
        run(model_path, tmp_path, 40, reward=misbehaving(server_down), **SAVE_AFTER_FIRST_ROLLOUT)
    assert sum(p in str(excinfo.value) for p in PROMPTS) >= 2
    assert isinstance(excinfo.value.__cause__, ConnectionError)
    only_first_checkpoint_left(tmp_path)


def test_reward_fn_timeout(model_path, tmp_path):
    release = threading.Event()

    def hang(call, scores):
        if call == 3:
            release.wait(60)
        return scores

    try:
        with pytest.raises(RewardTimeoutError, match=r"train\.reward_timeout_s=2\.0"):
            overrides = {"train.reward_timeout_s": 2.0, **SAVE_AFTER_FIRST_ROLLOUT}
            run(model_path, tmp_path, 40, reward=misbehaving(hang), **overrides)
    finally:
        release.set()
    only_first_checkpoint_left(tmp_path)


def test_kl_past_bound_stops_with_last_checkpoint_intact(model_path, tmp_path, monkeypatch):
    real_kl_penalty, calls = trlx.trainers.online.kl_penalty, {"n": 0}

    def kl_blows_up_in_second_rollout(*args, **kwargs):
        calls["n"] += 1
        return real_kl_penalty(*args, **kwargs) + (100.0 if calls["n"] == 2 else 0.0)

    monkeypatch.setattr(trlx.trainers.online, "kl_penalty", kl_blows_up_in_second_rollout)
    with pytest.raises(KLDivergenceError, match=r"exceeded method\.kl_max=50") as excinfo:
        run(model_path, tmp_path, 40, **{"method.kl_max": 50.0, **SAVE_AFTER_FIRST_ROLLOUT})
    assert str(tmp_path / "checkpoint_00004") in str(excinfo.value)
    only_first_checkpoint_left(tmp_path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda call, scores: scores[:-1], "reward_fn returned 7 scores for 8 samples"),
        (lambda call, scores: ["high"] * len(scores), "reward_fn returned a non-number for score 0: 'high'"),
    ],
    ids=["wrong_length", "non_number"],
)
def test_malformed_rewards_raise_at_once(model_path, tmp_path, change, message):
    reward = misbehaving(change)
    with pytest.raises(RewardError, match=message) as excinfo:
        run(model_path, tmp_path, 40, reward=reward)
    assert not isinstance(excinfo.value, NonFiniteRewardError)  # a programming error: not skipped, not retried
    assert reward.calls["n"] == 1
