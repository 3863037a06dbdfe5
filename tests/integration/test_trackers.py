"""train.tracker through accelerate's trackers, each read back with its own library: W&B (offline run files),
MLflow (a local file store), TensorBoard (event files). Each holds the logged metrics, the resolved config and the
eval samples table; metrics.jsonl is written as always; a missing tracker package is a clear error."""

import json
import subprocess
import sys

import pytest
from conftest import TINY_PROMPTS, good_word_reward, tiny_ppo_config

import trlx
from trlx.config import ConfigError
from trlx.logging import read_metrics

RUN = {"train.total_steps": 4, "train.eval_interval": 2, "train.project_name": "trlx-tests", "train.tags": ["tiny"]}


def run(tiny_gpt2_path, run_dir, tracker, **overrides):
    config = tiny_ppo_config(run_dir, **{**RUN, "train.tracker": tracker, **overrides})
    return trlx.train(str(tiny_gpt2_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)


def logged(run_dir, key):
    """(step, value) of `key` in metrics.jsonl, the source of truth the trackers must agree with."""
    return [(r["step"], r[key]) for r in read_metrics(run_dir / "metrics.jsonl") if r.get(key) is not None]


def same_series(got, expected):
    """(step, value) lists: the same steps, values equal up to float32 storage."""
    return [s for s, _ in got] == [s for s, _ in expected] and [v for _, v in got] == pytest.approx(
        [v for _, v in expected], rel=1e-6
    )


def wandb_records(run_dir):
    """The offline run's records (its .wandb transaction log), read with wandb's own reader."""
    out = subprocess.run(
        [sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir / "wandb" / "latest-run")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def history(records):
    return [r["history"]["item"] for r in records if r["type"] == "history"]


def test_wandb_offline_run_holds_metrics_config_and_samples(tiny_gpt2_path, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(tiny_gpt2_path, tmp_path, "wandb", **{"train.run_name": "tiny-run"})
    records = wandb_records(tmp_path)
    rows = history(records)
    losses = [(h["_step"], h["policy/loss"]) for h in rows if "policy/loss" in h]
    assert same_series(losses, logged(tmp_path, "policy/loss"))
    assert [h["_step"] for h in rows if "eval/reward_mean" in h] == [0, 2, 4]
    tables = [h for h in rows if h.get("eval/samples._type") == "table-file"]  # the samples table, per eval
    assert [h["_step"] for h in tables] == [0, 2, 4]
    table = json.loads((tmp_path / "wandb" / "latest-run" / "files" / tables[-1]["eval/samples.path"]).read_text())
    samples = [r for r in read_metrics(tmp_path / "samples.jsonl") if r["step"] == 4]
    assert table["columns"] == ["prompt", "output", "reward"]
    assert [row[1] for row in table["data"]] == [r["output"] for r in samples]
    config = {}
    for record in records:
        if record["type"] == "config":
            config.update(record["config"]["update"])
    assert config["train.seed"] == 1000 and config["method.name"] == "ppo"
    (run_record,) = [r["run"] for r in records if r["type"] == "run"]
    assert run_record["project"] == "trlx-tests" and run_record["display_name"] == "tiny-run"
    assert run_record["tags"] == ["tiny"]


def test_mlflow_file_store_holds_metrics_params_and_samples(tiny_gpt2_path, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "store").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it with a file: store
    run(tiny_gpt2_path, tmp_path / "run", "mlflow", **{"train.run_name": "tiny-run"})
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("trlx-tests")
    (mlflow_run,) = client.search_runs([experiment.experiment_id])
    assert mlflow_run.info.run_name == "tiny-run" and mlflow_run.data.tags["tiny"] == "true"
    history = [(m.step, m.value) for m in client.get_metric_history(mlflow_run.info.run_id, "policy/loss")]
    assert same_series(sorted(history), logged(tmp_path / "run", "policy/loss"))
    assert mlflow_run.data.params["train.seed"] == "1000" and mlflow_run.data.params["method.name"] == "ppo"
    artifacts = [a.path for a in client.list_artifacts(mlflow_run.info.run_id, "eval_samples")]
    assert artifacts == [f"eval_samples/step_{s:05d}.json" for s in (0, 2, 4)]
    assert mlflow_run.info.status == "FINISHED"


def test_mlflow_defaults_to_a_store_in_the_run_folder(tiny_gpt2_path, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run(tiny_gpt2_path, tmp_path, "mlflow")
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    (mlflow_run,) = client.search_runs([client.get_experiment_by_name("trlx-tests").experiment_id])
    assert len(client.get_metric_history(mlflow_run.info.run_id, "policy/loss")) == 4


def test_tensorboard_and_wandb_together_each_get_every_row(tiny_gpt2_path, tmp_path, monkeypatch):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run(tiny_gpt2_path, tmp_path, ["tensorboard", "wandb"])
    events = event_accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert same_series([(e.step, e.value) for e in events.Scalars("policy/loss")], logged(tmp_path, "policy/loss"))
    assert "eval/samples/text_summary" in events.Tags()["tensors"]
    assert len([h for h in history(wandb_records(tmp_path)) if "policy/loss" in h]) == 4


def test_a_missing_tracker_package_names_its_extra(tiny_gpt2_path, tmp_path, monkeypatch):
    import trlx.trackers

    real = trlx.trackers.find_spec
    monkeypatch.setattr(trlx.trackers, "find_spec", lambda name: None if name == "mlflow" else real(name))
    with pytest.raises(
        ImportError, match=r"train.tracker=mlflow needs the mlflow package.*pip install 'trlx\[mlflow\]'"
    ):
        run(tiny_gpt2_path, tmp_path, "mlflow")
    with pytest.raises(ConfigError, match=r"train.tracker: allowed: tensorboard, wandb, mlflow, a list of them"):
        tiny_ppo_config(tmp_path, **{"train.tracker": "comet"})
