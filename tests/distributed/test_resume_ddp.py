"""Exact resume on 2 processes: each restores its own RNG and in-flight rollout (`*_<rank>.safetensors`)."""

import json
import shutil

import pytest
import torch
from conftest import save_tiny_gpt2
from multiprocess_launch import run_ppo

from trlx.checkpoint import load_state

pytestmark = pytest.mark.distributed

# Per process: 8 rollouts in minibatches of 4, 2 epochs -> 4 steps per rollout; the checkpoint at step 3
# falls mid-rollout, with a different rollout (and RNG stream) on each process.
OVERRIDES = {
    "method.scale_reward": "running",
    "method.ppo_epochs": 2,
    "method.target": 1.0,
    "train.total_steps": 6,
    "train.eval_interval": 2,
    "train.checkpoint_interval": 3,
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


def without_time(result):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in result.metrics]


def test_ddp_resume_mid_rollout_matches_uninterrupted_run(model_dir, tmp_path):
    straight = run_ppo(model_dir, tmp_path / "straight", OVERRIDES)
    assert straight.returncode == 0, straight.log[-5000:]
    checkpoint = tmp_path / "straight" / "ckpt" / "checkpoint_00003"
    assert load_state(checkpoint)["rollout"]["minibatch_index"] == 3
    for rank in (0, 1):
        assert (checkpoint / f"rng_state_{rank}.safetensors").is_file()
        assert (checkpoint / f"rollout_{rank}.safetensors").is_file()

    # Replay from step 3 in a copy without anything written after it (rows past it are cut on resume).
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "ckpt" / "checkpoint_00006")
    for rank in (0, 1):
        (tmp_path / "resumed" / f"weights_{rank}.safetensors").unlink()
    resume_from = str(tmp_path / "resumed" / "ckpt" / "checkpoint_00003")
    resumed = run_ppo(model_dir, tmp_path / "resumed", {**OVERRIDES, "train.resume_from_checkpoint": resume_from})
    assert resumed.returncode == 0, resumed.log[-5000:]
    assert without_time(resumed) == without_time(straight), json.dumps(without_time(resumed))[:2000]
    for rank in (0, 1):
        a, b = resumed.weights(rank), straight.weights(rank)
        assert all(torch.equal(a[k], b[k]) for k in a)
