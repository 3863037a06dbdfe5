"""Resume: a run stopped at any step, even mid-rollout, then resumed, matches one uninterrupted run bit for bit.

On CPU with the same thread count every kernel is deterministic, so metrics and weights must be identical,
not merely close: any piece of state resume forgot (an RNG, the KL coefficient, the reward statistics, the
optimizer moments, the minibatch position inside a rollout) shows up as a differing number.
"""

import json
import shutil

import pytest
import torch
from resilience_helpers import STEPS_PER_ROLLOUT, make_tiny_gpt2, metric_rows, run, training_rows, weights
from transformers import AutoModelForCausalLM

import trlx.checkpoint
from trlx.checkpoint import load_state, read_latest

N = 20  # 5 rollouts of 4 steps; checkpoints every 5 steps, so those at 5, 10 and 15 fall mid-rollout


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return make_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


@pytest.fixture(scope="module")
def straight(model_path, tmp_path_factory):
    """One uninterrupted run of N steps; tests copy its folder and never modify it."""
    out = tmp_path_factory.mktemp("straight")
    run(model_path, out, N, **{"train.save_total_limit": 3})
    return out


def assert_same_run(resumed, straight):
    assert metric_rows(resumed) == metric_rows(straight)
    a, b = weights(resumed / f"checkpoint_{N:05d}"), weights(straight / f"checkpoint_{N:05d}")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stop_mid_rollout_then_resume_matches_uninterrupted_run(model_path, straight, tmp_path):
    k = 6  # two steps into the second rollout
    run(model_path, tmp_path, k)
    state = load_state(tmp_path / "checkpoint_00006")
    assert state["rollout"]["minibatch_index"] == k % STEPS_PER_ROLLOUT
    assert (tmp_path / "checkpoint_00006" / "rollout_0.safetensors").is_file()

    # A best_checkpoint better than the one the checkpoint knows of (say, from the final evaluation) is kept.
    best_state = tmp_path / "best_checkpoint" / "trainer_state.json"
    best_state.write_text(json.dumps({**json.loads(best_state.read_text()), "best_reward": 1e9}))

    trainer = run(model_path, tmp_path, N, **{"train.resume_from_checkpoint": "latest"})
    assert_same_run(tmp_path, straight)
    assert trainer.best_reward == 1e9 and load_state(tmp_path / "best_checkpoint")["best_reward"] == 1e9


def test_resume_from_periodic_checkpoint_replays_the_same_log(model_path, straight, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    for later in ("checkpoint_00015", "checkpoint_00020"):
        shutil.rmtree(run_dir / later)
    # metrics.jsonl still holds rows past step 10: resume must cut them, or replayed steps are logged twice.
    run(model_path, run_dir, N, **{"train.resume_from_checkpoint": str(run_dir / "checkpoint_00010")})
    assert_same_run(run_dir, straight)


def test_crash_during_checkpoint_write_keeps_previous_checkpoint(model_path, straight, tmp_path, monkeypatch):
    real_save_file = trlx.checkpoint.save_file

    def disk_full_at_step_15(tensors, filename, metadata=None):
        if "checkpoint_00015" in str(filename):
            raise OSError("No space left on device (simulated)")
        return real_save_file(tensors, filename, metadata=metadata)

    monkeypatch.setattr(trlx.checkpoint, "save_file", disk_full_at_step_15)
    with pytest.raises(OSError, match="simulated"):
        run(model_path, tmp_path, N)
    monkeypatch.undo()

    # No half-written checkpoint and no temporary folder; `latest` still names the last complete checkpoint.
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "best_checkpoint",
        "checkpoint_00005",
        "checkpoint_00010",
    ]
    assert read_latest(tmp_path) == tmp_path / "checkpoint_00010"
    AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint_00010")

    run(model_path, tmp_path, N, **{"train.resume_from_checkpoint": "latest"})
    assert_same_run(tmp_path, straight)


def test_save_total_limit_keeps_newest_checkpoints_and_the_best(straight):
    assert sorted(p.name for p in straight.iterdir() if p.is_dir()) == [
        "best_checkpoint",
        "checkpoint_00010",
        "checkpoint_00015",
        "checkpoint_00020",
        "report",  # the report's figures
    ]
    assert read_latest(straight) == straight / "checkpoint_00020"
    evals = [row["eval/reward_mean"] for row in metric_rows(straight) if "eval/reward_mean" in row]
    assert load_state(straight / "best_checkpoint")["best_reward"] == max(evals)
    # Tensors only in safetensors, state in JSON/YAML: nothing a resume would have to unpickle.
    suffixes = {p.suffix for p in (straight / "checkpoint_00020").iterdir()}
    # .md: the model card, plain text
    assert suffixes <= {".json", ".safetensors", ".yml", ".md"}, suffixes


def test_rerun_into_a_used_folder_is_refused_and_overwrite_starts_clean(model_path, straight, tmp_path):
    """A second run into a folder never mixes into the first one's results: refused unless told to overwrite,
    and an overwrite leaves exactly one run's logs and checkpoints (and the user's own files)."""
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    (run_dir / "notes.txt").write_text("mine")
    before = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    with pytest.raises(trlx.checkpoint.CheckpointError, match="already holds another run's results"):
        run(model_path, run_dir, 8)
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before  # nothing touched
    run(model_path, run_dir, 8, **{"train.overwrite_output_dir": True})
    assert [row["step"] for row in training_rows(run_dir)] == list(range(1, 9))
    assert training_rows(run_dir) == training_rows(straight)[:8]  # a fresh run, not a continuation
    assert sorted(p.name for p in run_dir.glob("checkpoint_*")) == ["checkpoint_00005", "checkpoint_00008"]
    assert read_latest(run_dir).name == "checkpoint_00008"
    assert (run_dir / "notes.txt").read_text() == "mine"
