"""ILQL end to end on a tiny GPT-2: from random behaviour data, the advantage-shifted policy (gen_kwargs.beta > 0)
samples far more reward than the data holds; checkpoints keep the LM loadable and the heads beside it; a run
stopped and resumed equals an uninterrupted one bit for bit; trlX's calls and YAML work unchanged; bad rewards
are refused before the model loads."""

import random

import pytest
import torch
import yaml
from conftest import TINY_PROMPTS, save_tiny_gpt2
from resilience_helpers import metric_rows, weights
from transformers import AutoModelForCausalLM

import trlx
from trlx.checkpoint import CheckpointError, read_latest
from trlx.config import ConfigError, TRLConfig
from trlx.data.default_configs import default_ilql_config, default_ppo_config
from trlx.logging import read_metrics

WORDS = ["good", "bad", "movie", "film", "the", "plot"]


def behaviour_data(n=256, seed=0):
    """Random 6-word continuations, rewarded by their share of "good" (about 1/6 on average)."""
    rng = random.Random(seed)
    samples = [[TINY_PROMPTS[i % 6], " " + " ".join(rng.choice(WORDS) for _ in range(6))] for i in range(n)]
    return samples, [good_share(s[1]) for s in samples]


def good_share(text):
    return text.split().count("good") / 6


def reward_fn(samples, prompts, outputs, **kwargs):
    return [good_share(o) for o in outputs]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


def ilql_config(run_dir, **overrides):
    base = {
        "train.total_steps": 200,
        "train.batch_size": 32,
        "train.seq_length": 32,
        "train.eval_interval": 100,
        "train.checkpoint_interval": 1000,
        "train.checkpoint_dir": str(run_dir),
        "train.progress_bar": False,
        "optimizer.kwargs.lr": 1e-3,
        "method.alpha": 0.1,
        "method.gen_kwargs.max_new_tokens": 6,
        "method.gen_kwargs.top_k": 0,
        "method.gen_kwargs.beta": 16.0,
    }
    return default_ilql_config().evolve(**{**base, **overrides})


def test_the_ilql_policy_samples_more_reward_than_the_behaviour_data(model, tmp_path):
    samples, rewards = behaviour_data()
    data_mean = sum(rewards) / len(rewards)
    trainer = trlx.train(
        str(model),
        samples=samples,
        rewards=rewards,
        eval_prompts=TINY_PROMPTS[:12],
        reward_fn=reward_fn,
        config=ilql_config(tmp_path),
    )
    evals = [r["eval/reward_mean"] for r in read_metrics(tmp_path / "metrics.jsonl") if "eval/reward_mean" in r]
    assert evals[-1] > 3 * data_mean, (data_mean, evals)
    # The same trained model with beta 0 samples its LM, which clones the behaviour: near the data's mean.
    trainer.model.beta = 0.0
    cloned = trainer.evaluate()["eval/reward_mean"]
    assert cloned < 2 * data_mean < evals[-1], (data_mean, cloned, evals[-1])
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if "loss/q" in r]
    assert {"loss/v", "loss/cql", "loss/awac", "values/advantage_mean"} <= rows[-1].keys()
    assert rows[-1]["loss/awac"] < rows[0]["loss/awac"]  # the LM learns the data (beta 0: behaviour cloning)
    # The checkpoint: the LM loads by itself, the heads (Q, target Q, V) lie beside it.
    final = read_latest(tmp_path)
    assert AutoModelForCausalLM.from_pretrained(final) is not None
    heads = weights(final)
    assert {"ilql_heads.q_heads.1.2.weight", "ilql_heads.target_q_heads.0.2.weight", "ilql_heads.v_head.0.weight"} <= (
        heads.keys()
    )
    assert not (final / "value_head.safetensors").exists()


def test_target_heads_follow_the_q_heads_by_polyak_steps(model, tmp_path):
    """alpha 1 every 3 steps: the target heads equal the Q heads right after steps 3, 6, ..., and lag between."""
    samples, rewards = behaviour_data(32)
    config = ilql_config(
        tmp_path, **{"train.total_steps": 3, "method.alpha": 1.0, "method.steps_for_target_q_sync": 3}
    )
    heads = trlx.train(str(model), samples=samples, rewards=rewards, config=config).model.ilql_heads
    assert all(torch.equal(a, b) for a, b in zip(heads.q_heads.parameters(), heads.target_q_heads.parameters()))
    config = config.evolve(train={"total_steps": 2, "checkpoint_dir": str(tmp_path / "b")})
    heads = trlx.train(str(model), samples=samples, rewards=rewards, config=config).model.ilql_heads
    assert not any(torch.equal(a, b) for a, b in zip(heads.q_heads.parameters(), heads.target_q_heads.parameters()))


def test_ilql_stop_and_resume_equals_an_uninterrupted_run(model, tmp_path):
    samples, rewards = behaviour_data(48)
    overrides = {
        "train.checkpoint_interval": 5,
        "train.batch_size": 8,
        "train.eval_interval": 5,
        "train.total_steps": 12,
    }
    kwargs = {"samples": samples, "rewards": rewards, "eval_prompts": TINY_PROMPTS[:4], "reward_fn": reward_fn}
    # steps_for_target_q_sync 2 with alpha 0.5: the target heads move at steps on both sides of the stop.
    ilql = {"method.steps_for_target_q_sync": 2, "method.alpha": 0.5}
    trlx.train(str(model), config=ilql_config(tmp_path / "straight", **overrides, **ilql), **kwargs)
    split = ilql_config(tmp_path / "split", **{**overrides, **ilql, "train.total_steps": 7})
    trlx.train(str(model), config=split, **kwargs)
    resumed = ilql_config(tmp_path / "split", **overrides, **ilql, **{"train.resume_from_checkpoint": "latest"})
    trlx.train(str(model), config=resumed, **kwargs)
    assert metric_rows(tmp_path / "split") == metric_rows(tmp_path / "straight")
    a, b = weights(tmp_path / "split" / "checkpoint_00012"), weights(tmp_path / "straight" / "checkpoint_00012")
    assert any(k.startswith("ilql_heads.target_q_heads") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trlx_calls_and_yaml_work_unchanged(model, tmp_path, monkeypatch):
    """trlX's `trlx.train(samples=, rewards=)` without a config (default_ilql_config), its `dataset=` form, and its
    configs/ilql_config.yml (ILQLConfig, AccelerateILQLTrainer, gen_kwargs.beta)."""
    monkeypatch.chdir(tmp_path)
    samples, rewards = behaviour_data(16)
    trainer = trlx.train(str(model), samples=[s[0] + s[1] for s in samples], rewards=rewards)
    assert trainer.config.method.name == "ilql" and trainer.config.train.batch_size == 128
    assert trainer.step == 100  # trlX's train.epochs 100 over the 16 samples, one batch each
    assert trainer.model.beta == 1.0 and len(trainer.model.ilql_heads.q_heads) == 2
    trlx_yaml = {
        "train": {
            "seq_length": 64,
            "batch_size": 128,
            "epochs": 2,
            "total_steps": 1000,
            "checkpoint_interval": 1000,
            "eval_interval": 100,
            "pipeline": "PromptPipeline",
            "trainer": "AccelerateILQLTrainer",
            "seed": 1000,
            "checkpoint_dir": str(tmp_path / "yaml"),
        },
        "model": {"model_path": str(model), "num_layers_unfrozen": -1},
        "tokenizer": {"tokenizer_path": str(model), "truncation_side": "right"},
        "optimizer": {
            "name": "adamw",
            "kwargs": {"lr": 5.0e-5, "betas": [0.9, 0.95], "eps": 1.0e-8, "weight_decay": 1.0e-6},
        },
        "scheduler": {"name": "cosine_annealing", "kwargs": {"T_max": 100000000000, "eta_min": 0}},
        "method": {
            "name": "ilqlconfig",
            "tau": 0.7,
            "gamma": 0.99,
            "cql_scale": 0.1,
            "awac_scale": 1,
            "alpha": 0.001,
            "beta": 0,
            "steps_for_target_q_sync": 5,
            "two_qs": True,
            "gen_kwargs": {"max_new_tokens": 56, "top_k": 20, "beta": 4, "temperature": 1.0},
        },
    }
    path = tmp_path / "ilql_config.yml"
    path.write_text(yaml.safe_dump(trlx_yaml))
    config = TRLConfig.load_yaml(str(path))
    trainer = trlx.train(dataset=(samples, rewards), eval_prompts=TINY_PROMPTS[:2], reward_fn=reward_fn, config=config)
    assert trainer.step == 2 and trainer.model.beta == 4.0
    assert [r["step"] for r in read_metrics(tmp_path / "yaml" / "metrics.jsonl") if "eval/reward_mean" in r] == [0, 2]


def test_cli_trains_ilql_from_a_rewarded_samples_file(model, tmp_path, capsys):
    import json

    from trlx import cli

    samples, rewards = behaviour_data(16)
    rows = [{"sample": s, "reward": r} for s, r in zip(samples, rewards)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"model": {"model_path": str(model)}, "train": {"progress_bar": False}}))
    argv = [
        "train",
        str(config),
        "method.name=ilql",
        f"task.samples={tmp_path / 'data.jsonl'}",
        f"train.checkpoint_dir={tmp_path / 'run'}",
        "train.total_steps=3",
        "train.seq_length=32",
    ]
    assert cli.main(argv) == 0
    assert "trlx: ilql finished at step 3" in capsys.readouterr().out


def test_bad_ilql_input_is_refused_before_the_model_loads(model, tmp_path):
    samples, rewards = behaviour_data(8)
    config = ilql_config(tmp_path)
    with pytest.raises(ValueError, match=r"rewards has 7 values for 8 samples: give one reward per sample"):
        trlx.train(str(model), samples=samples, rewards=rewards[:7], config=config)
    with pytest.raises(ValueError, match=r"rewards\[2\] is nan: rewards must be finite \(1 are not\)"):
        trlx.train(str(model), samples=samples, rewards=[*rewards[:2], float("nan"), *rewards[3:]], config=config)
    with pytest.raises(TypeError, match=r"rewards\[0\] must be a number, got 'high'"):
        trlx.train(str(model), samples=samples, rewards=["high", *rewards[1:]], config=config)
    with pytest.raises(ValueError, match=r"method.name ilql learns from rewarded samples: pass rewards="):
        trlx.train(str(model), samples=samples, config=config)
    with pytest.raises(ValueError, match=r"samples\[1\]: the completion is empty"):
        trlx.train(str(model), samples=[samples[0], ["the movie", " "]], rewards=[1.0, 0.0], config=config)
    with pytest.raises(ConfigError, match=r"method.gen_kwargs.beta: is ILQL's advantage scale when sampling"):
        default_ppo_config().evolve(method={"gen_kwargs": {"beta": 1.0}})
    with pytest.raises(ConfigError, match=r"method.tau: must be in \(0, 1\), got 1.5"):
        default_ilql_config().evolve(method={"tau": 1.5})
    with pytest.raises(ConfigError, match=r"method.gen_kwargs.beta: must be a number >= 0, got -1"):
        default_ilql_config().evolve(method={"gen_kwargs": {"beta": -1}})


def test_a_checkpoint_without_its_heads_is_refused(model, tmp_path):
    samples, rewards = behaviour_data(16)
    trlx.train(str(model), samples=samples, rewards=rewards, config=ilql_config(tmp_path, **{"train.total_steps": 2}))
    (read_latest(tmp_path) / "ilql_heads.safetensors").unlink()
    resumed = ilql_config(tmp_path, **{"train.total_steps": 4, "train.resume_from_checkpoint": "latest"})
    with pytest.raises(CheckpointError, match=r"not a complete trlx checkpoint \(missing ilql_heads\.safetensors\)"):
        trlx.train(str(model), samples=samples, rewards=rewards, config=resumed)
