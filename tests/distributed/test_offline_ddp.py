"""SFT, DPO, ILQL and RFT on 2 processes (torchrun, gloo on CPU): each process trains on its own share of the data
(RFT: of the prompts, its selection evened out so both take the same steps), gradients are averaged, weights
stay in sync and only the main process writes."""

import pytest
import torch
from multiprocess_launch import run_ppo

pytestmark = pytest.mark.distributed

OFFLINE = {
    "train.total_steps": 4,
    "train.batch_size": 2,
    "train.eval_interval": 4,
    "model.num_layers_unfrozen": -1,
    "optimizer.kwargs": {"lr": 1e-2},
}
RFT = {"method.n_generations_per_prompt": 2, "method.n_improve_steps": 1, "method.chunk_size": 4}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from conftest import save_tiny_gpt2

    return save_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


@pytest.mark.parametrize("method", ["sft", "dpo", "ilql", "rft"])
def test_two_processes_stay_in_sync_and_log_once(model_dir, tmp_path, method):
    overrides = {**OFFLINE, "method.name": method, **(RFT if method == "rft" else {})}
    result = run_ppo(model_dir, tmp_path, overrides)
    assert result.returncode == 0, result.log[-5000:]
    rank0, rank1 = result.weights(0), result.weights(1)
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    steps = [r["step"] for r in result.metrics if "loss/total" in r]
    assert steps == [1, 2, 3, 4]
    assert [r["step"] for r in result.metrics if "eval/reward_mean" in r] == [0, 4]
    if method == "dpo":
        assert all("rewards/accuracy" in r for r in result.metrics if "loss/total" in r)
    if method == "rft":
        assert any("rft/selected" in r for r in result.metrics)
    if method == "ilql":  # the target heads too (synced by Polyak steps on each process) stay equal
        assert any(k.startswith("ilql_heads.target_q_heads") for k in rank0)


def test_two_processes_log_each_step_once_to_the_trackers(model_dir, tmp_path):
    """Only the main process starts the trackers and logs: TensorBoard holds each step's loss once."""
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    result = run_ppo(model_dir, tmp_path, {**OFFLINE, "method.name": "sft", "train.tracker": "tensorboard"})
    assert result.returncode == 0, result.log[-5000:]
    events = event_accumulator.EventAccumulator(str(tmp_path / "ckpt" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss/total")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("eval/reward_mean")] == [0, 4]
