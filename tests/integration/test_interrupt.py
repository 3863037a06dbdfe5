"""Ctrl-C / SIGTERM: finish the step, write a checkpoint, exit saying how to resume; a second Ctrl-C exits at once.

The SIGINT tests signal a real subprocess (`python resilience_helpers.py ...`), as a user's terminal would.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from resilience_helpers import (
    REWARD_HANG_ENV,
    REWARD_SLEEP_ENV,
    make_tiny_gpt2,
    metric_rows,
    reward_fn,
    run,
    training_rows,
)

from trlx.checkpoint import load_state, read_latest
from trlx.faults import TrainingInterrupted

HELPERS = Path(__file__).with_name("resilience_helpers.py")
N = 12


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


@pytest.fixture(scope="module")
def straight(model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    run(model_path, out, N)
    return out


def start_run(model_path, run_dir, log, **env):
    return subprocess.Popen(
        [sys.executable, str(HELPERS), str(model_path), str(run_dir), str(N)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def wait_for(condition, proc, log_path, limit_s=180):
    """Poll until `condition()`; fail with the subprocess's stderr if it exits first."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"run exited with {proc.returncode} too early:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"condition not reached:\n{log_path.read_text()}")
        time.sleep(0.05)


def test_sigint_writes_checkpoint_and_the_run_resumes_exactly(model_path, straight, tmp_path):
    run_dir, log_path = tmp_path / "run", tmp_path / "stderr.txt"
    with log_path.open("w") as log:
        proc = start_run(model_path, run_dir, log, **{REWARD_SLEEP_ENV: "0.2"})
        try:
            wait_for(lambda: (run_dir / "metrics.jsonl").is_file() and training_rows(run_dir), proc, log_path)
            proc.send_signal(signal.SIGINT)
            returncode = proc.wait(timeout=180)
        finally:
            proc.kill()
    stderr = log_path.read_text()
    assert returncode == 128 + signal.SIGINT, stderr
    assert "SIGINT received: finishing the current step" in stderr
    assert "trlx: stopped by SIGINT at step" in stderr
    assert "trlx train CONFIG train.resume_from_checkpoint=latest" in stderr
    assert "'train.resume_from_checkpoint': 'latest'" in stderr
    latest = read_latest(run_dir)
    assert latest is not None and f"checkpoint saved to {latest}" in stderr
    assert 1 <= load_state(latest)["step"] < N

    run(model_path, run_dir, N, **{"train.resume_from_checkpoint": "latest"})
    assert metric_rows(run_dir) == metric_rows(straight)


def test_second_sigint_exits_at_once(model_path, tmp_path):
    run_dir, log_path, hanging = tmp_path / "run", tmp_path / "stderr.txt", tmp_path / "hanging"
    with log_path.open("w") as log:
        proc = start_run(model_path, run_dir, log, **{REWARD_HANG_ENV: str(hanging)})
        try:
            wait_for(hanging.is_file, proc, log_path)  # inside a reward_fn call that would last 10 minutes
            proc.send_signal(signal.SIGINT)
            wait_for(lambda: "SIGINT received" in log_path.read_text(), proc, log_path)
            proc.send_signal(signal.SIGINT)
            returncode = proc.wait(timeout=60)
        finally:
            proc.kill()
    stderr = log_path.read_text()
    assert returncode == -signal.SIGINT, stderr  # Python re-raises an unhandled KeyboardInterrupt as SIGINT
    assert "KeyboardInterrupt" in stderr and "stopped by" not in stderr
    assert read_latest(run_dir) is None  # no checkpoint: the run was abandoned mid-rollout


def test_sigterm_in_process_raises_training_interrupted_and_resumes(model_path, straight, tmp_path):
    calls = {"n": 0}

    def terminated_during_first_rollout(samples, prompts, outputs, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # the eval at step 0 is call 1; calls 2-3 score the first rollout
            os.kill(os.getpid(), signal.SIGTERM)
        return reward_fn(samples, prompts, outputs)

    with pytest.raises(TrainingInterrupted) as excinfo:
        run(model_path, tmp_path, N, reward=terminated_during_first_rollout)
    assert excinfo.value.code == 128 + signal.SIGTERM
    assert "stopped by SIGTERM at step 0" in str(excinfo.value)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the run
    # Stopped after the rollout was collected: it is saved in flight, so resume does not collect it again.
    assert load_state(read_latest(tmp_path))["rollout"]["minibatch_index"] == 0

    run(model_path, tmp_path, N, **{"train.resume_from_checkpoint": "latest"})
    assert metric_rows(tmp_path) == metric_rows(straight)
