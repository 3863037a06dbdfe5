"""The same tiny PPO run on 2 processes (torchrun, gloo on CPU): DDP, DeepSpeed ZeRO-2 and ZeRO-3.

Each process generates from its own share of the prompts; the statistics that steer training (reward
moments, KL, advantage whitening) and every logged metric are global, and only the main process writes.
"""

import pytest
import torch
from multiprocess_launch import free_port, run_ppo
from safetensors.torch import load_file

from trlx.algorithms.stats import RunningMoments

pytestmark = pytest.mark.distributed

DEEPSPEED = {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL": "true"}
# 2 processes x 2 reward calls of 4 samples per rollout; 2 rollouts of 2 steps each.
DDP_OVERRIDES = {
    "method.scale_reward": "running",
    "scheduler.name": "linear",
    "scheduler.kwargs": {"start_factor": 1.0, "end_factor": 0.5, "total_iters": 4},
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from conftest import save_tiny_gpt2

    return save_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


@pytest.fixture(scope="module")
def ddp_run(model_dir, tmp_path_factory):
    result = run_ppo(model_dir, tmp_path_factory.mktemp("ddp"), DDP_OVERRIDES)
    assert result.returncode == 0, result.log[-5000:]
    return result


def train_rows(result):
    return {r["step"]: r for r in result.metrics if "reward/mean" in r}


def eval_rows(result):
    return [r for r in result.metrics if "eval/reward_mean" in r]


def test_ddp_weights_stay_in_sync_and_match_the_checkpoint(ddp_run):
    info = [(ddp_run.out_dir / f"done_{rank}.json").read_text() for rank in (0, 1)]
    assert all('"num_processes": 2' in i and "MULTI_CPU" in i for i in info)
    rank0, rank1 = ddp_run.weights(0), ddp_run.weights(1)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = load_file(str(ddp_run.out_dir / "ckpt" / "checkpoint_00004" / "model.safetensors"))
    assert all(torch.equal(saved[k], rank0[f"lm.{k}"]) for k in saved)


def test_ddp_metrics_are_written_once(ddp_run):
    steps = [r["step"] for r in ddp_run.metrics if "reward/mean" in r]
    assert steps == [1, 2, 3, 4]
    assert [r["step"] for r in eval_rows(ddp_run)] == [0, 4]


def test_ddp_reward_statistics_equal_the_single_process_computation(ddp_run):
    """Both processes' scores pooled and scaled in one process give exactly the logged, global statistics."""
    calls = {rank: [c["scores"] for c in ddp_run.reward_calls(rank) if c["split"] == "train"] for rank in (0, 1)}
    assert [len(c) for c in calls.values()] == [4, 4]  # 2 rollouts x 2 chunks on each process
    moments, rows = RunningMoments(), train_rows(ddp_run)
    for iteration, step in ((0, 1), (1, 3)):
        pooled = torch.tensor(
            [s for rank in (0, 1) for call in calls[rank][2 * iteration : 2 * iteration + 2] for s in call],
            dtype=torch.float64,
        )
        assert len(pooled) == 16
        row = rows[step]
        assert row["reward/mean"] == pytest.approx(pooled.mean().item(), abs=1e-6)
        assert row["reward/std"] == pytest.approx(pooled.std(unbiased=False).item(), abs=1e-6)
        # scale_reward=running divides by the std of every score seen so far (both processes, all rollouts).
        seen = torch.tensor(
            [s for rank in (0, 1) for call in calls[rank][: 2 * iteration + 2] for s in call], dtype=torch.float64
        )
        running_std = seen.std().item()
        moments.update(pooled.mean().item(), pooled.var(unbiased=False).item(), len(pooled))
        assert moments.std == pytest.approx(running_std, rel=1e-9)
        assert row["reward/scale_std"] == pytest.approx(running_std, rel=1e-6)
        scaled = (pooled / running_std).clamp(-10.0, 10.0)
        assert row["reward/scaled_mean"] == pytest.approx(scaled.mean().item(), abs=1e-5)


def test_ddp_eval_drops_the_padding_prompts(ddp_run):
    """5 eval prompts on 2 processes: shares of 3 and 2 (+1 repeat); the repeat is generated but not counted."""
    evals = {rank: [c["scores"] for c in ddp_run.reward_calls(rank) if c["split"] == "eval"] for rank in (0, 1)}
    first = evals[0][0] + evals[1][0][:2]  # rank 1's third score is the padding repeat
    assert len(evals[0][0]) == len(evals[1][0]) == 3
    assert eval_rows(ddp_run)[0]["eval/reward_mean"] == pytest.approx(sum(first) / 5, abs=1e-6)
    samples = (ddp_run.out_dir / "ckpt" / "samples.jsonl").read_text().splitlines()
    assert len(samples) == 10  # 5 per evaluation, written once


def test_ddp_learning_rate_schedule_advances_once_per_step(ddp_run):
    rows = train_rows(ddp_run)
    for step in (1, 2, 3, 4):
        assert rows[step]["optim/lr"] == pytest.approx(1e-2 * (1 - 0.5 * step / 4))


@pytest.mark.parametrize(
    "overrides",
    [
        {"model.reference": "hydra", "model.num_layers_unfrozen": 1},
        {"model.peft_config": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1}},
    ],
    ids=["hydra", "lora"],
)
def test_ddp_with_memory_light_references(model_dir, tmp_path, overrides):
    pytest.importorskip("peft")
    result = run_ppo(model_dir, tmp_path, overrides)
    assert result.returncode == 0, result.log[-5000:]
    rank0, rank1 = result.weights(0), result.weights(1)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    rows = train_rows(result)
    assert abs(rows[1]["kl/mean"]) < 1e-6  # the reference is the initial policy on both processes
    for step in (1, 3):  # the first update on each rollout: the policy is still the one that sampled it
        assert rows[step]["policy/approx_kl"] < 1e-6 and rows[step]["policy/clipfrac"] == 0.0, step


def test_deepspeed_zero2_matches_ddp(model_dir, tmp_path, ddp_run):
    pytest.importorskip("deepspeed")
    result = run_ppo(model_dir, tmp_path, DDP_OVERRIDES, env={**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"})
    assert result.returncode == 0, result.log[-5000:]
    assert "DEEPSPEED" in (tmp_path / "done_0.json").read_text()
    rank0, rank1 = result.weights(0), result.weights(1)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    ours, ddp = train_rows(result), train_rows(ddp_run)
    for step in (1, 2, 3, 4):
        for key in ("reward/mean", "kl/mean", "policy/loss", "value/loss", "optim/grad_norm", "optim/lr"):
            assert ours[step][key] == pytest.approx(ddp[step][key], rel=1e-4, abs=1e-6), (step, key)


def test_deepspeed_zero3_generates_in_step_with_a_padding_only_process(model_dir, tmp_path):
    """ZeRO-3 shards the weights: generation must be synced, and with a single eval prompt the second process
    evaluates only a padding repeat; the run must neither hang nor count it, and the checkpoint must be whole."""
    pytest.importorskip("deepspeed")
    overrides = {"num_eval_prompts": 1}
    result = run_ppo(model_dir, tmp_path, overrides, env={**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"})
    assert result.returncode == 0, result.log[-5000:]
    evals = eval_rows(result)
    eval_calls = [c for c in result.reward_calls(0) if c["split"] == "eval"]
    assert evals[0]["eval/reward_mean"] == pytest.approx(eval_calls[0]["scores"][0], abs=1e-6)
    assert evals[0]["eval/reward_std"] is None  # the std of a single score is NaN, written to JSON as null
    saved = load_file(str(tmp_path / "ckpt" / "checkpoint_00004" / "model.safetensors"))
    gathered = result.weights(0)  # the main process's gathered (full) weights
    assert saved and all(torch.equal(saved[k], gathered[f"lm.{k}"]) for k in saved)


def test_fewer_prompts_than_processes_fails_clearly(model_dir, tmp_path):
    result = run_ppo(model_dir, tmp_path, {"num_prompts": 1})
    assert result.returncode != 0
    assert "1 prompt(s) for 2 processes" in result.log


def test_accelerate_launch_runs_the_cli_with_the_shipped_zero2_config(model_dir, tmp_path):
    """`accelerate launch --config_file configs/accelerate/zero2.yaml -m trlx train CONFIG.yml`, unchanged."""
    pytest.importorskip("deepspeed")
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    (tmp_path / "rewards.py").write_text(
        "import os, pathlib\n"
        "def reward(samples, prompts, outputs, **kwargs):\n"
        f"    pathlib.Path({str(tmp_path)!r}, 'rank_' + os.environ['RANK']).touch()\n"
        "    return [len(o.split()) / 6 for o in outputs]\n"
    )
    (tmp_path / "prompts.txt").write_text("the movie was\nthis film is\ni think it\nthe acting\n")
    config = {
        "task": {"reward_fn": f"{tmp_path / 'rewards.py'}:reward", "prompts": str(tmp_path / "prompts.txt")},
        "model": {"model_path": str(model_dir), "num_layers_unfrozen": -1},
        "tokenizer": {"tokenizer_path": None},
        "train": {"seq_length": 24, "batch_size": 2, "total_steps": 1, "eval_interval": 1000},
        "method": {"num_rollouts": 2, "chunk_size": 2, "ppo_epochs": 1, "gen_kwargs": {"max_new_tokens": 4}},
    }
    config["train"]["checkpoint_dir"] = str(tmp_path / "ckpt")
    (tmp_path / "config.yml").write_text(yaml.safe_dump(config))
    accelerate_config = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / "zero2.yaml"
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file", str(accelerate_config)]
    cmd += ["--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port())]
    cmd += ["-m", "trlx", "train", str(tmp_path / "config.yml")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    rows = [r for r in (tmp_path / "ckpt" / "metrics.jsonl").read_text().splitlines() if '"reward/mean"' in r]
    assert (tmp_path / "rank_0").is_file() and (tmp_path / "rank_1").is_file()  # two processes did run
    assert len(rows) == 1  # one step, logged once
    assert (tmp_path / "ckpt" / "checkpoint_00001" / "model.safetensors").is_file()


GRPO_OVERRIDES = {
    "method.name": "grpo",
    "method.num_generations": 4,
    "method.init_kl_coef": 0.0,
    "method.kl_loss_coef": 0.05,
    "method.loss_type": "sequence_mean",
}


def test_grpo_groups_stay_whole_and_statistics_are_global(model_dir, tmp_path):
    result = run_ppo(model_dir, tmp_path, GRPO_OVERRIDES)
    assert result.returncode == 0, result.log[-5000:]
    calls = {rank: [c for c in result.reward_calls(rank) if c["split"] == "train"] for rank in (0, 1)}
    assert [len(c) for c in calls.values()] == [4, 4]  # 2 rollouts x 2 chunks of one group of 4 on each process
    for call in calls[0] + calls[1]:
        assert len(set(call["prompts"])) == 1 and len(call["prompts"]) == 4  # a whole group in one chunk
    rows = train_rows(result)
    for iteration, step in ((0, 1), (1, 3)):
        groups = [
            torch.tensor(c["scores"], dtype=torch.float64) for r in (0, 1) for c in calls[r][2 * iteration :][:2]
        ]
        pooled = torch.cat(groups)
        assert rows[step]["reward/mean"] == pytest.approx(pooled.mean().item(), abs=1e-6)
        group_std = torch.stack([g.std() for g in groups])
        assert rows[step]["reward/group_std_mean"] == pytest.approx(group_std.mean().item(), abs=1e-6)
        assert rows[step]["groups/zero_std_fraction"] == pytest.approx((group_std <= 1e-6).double().mean().item())
    rank0, rank1 = result.weights(0), result.weights(1)
    assert rank0.keys() == rank1.keys() and not any(k.startswith("value_head") for k in rank0)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    assert (
        "policy/kl_loss" in rows[4]
        and not (result.out_dir / "ckpt" / "checkpoint_00004" / "value_head.safetensors").exists()
    )
