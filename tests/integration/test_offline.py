"""SFT and DPO end to end on a tiny GPT-2: the data's likelihood rises (SFT), held-out preference accuracy rises
(DPO), a run stopped and resumed equals an uninterrupted one bit for bit, and evaluation, checkpoints and bad
input behave as in the online loop."""

import pytest
import torch
from conftest import TINY_PROMPTS, save_tiny_gpt2
from resilience_helpers import metric_rows, weights
from transformers import AutoModelForCausalLM

import trlx
from trlx.data.default_configs import default_dpo_config, default_ppo_config, default_sft_config
from trlx.data.samples import collate, preference_examples, sft_examples
from trlx.logging import read_metrics
from trlx.models.policy import load_causal_lm, load_tokenizer
from trlx.rollout.scoring import reference_forward
from trlx.trainers.objectives import DPOObjective, pair_metrics, sequence_logprobs

SFT_SAMPLES = [[p, " good good good"] for p in TINY_PROMPTS] + ["the movie was very good", "the ending is good"]
TRAIN_PROMPTS, HELD_OUT_PROMPTS = TINY_PROMPTS[:12], TINY_PROMPTS[12:]


def pairs(prompts):
    return [{"prompt": p, "chosen": " good great good", "rejected": " bad awful bad"} for p in prompts]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


def small(config, run_dir, **overrides):
    base = {
        "train.total_steps": 12,
        "train.seq_length": 32,
        "train.checkpoint_interval": 1000,
        "train.eval_interval": 6,
        "train.checkpoint_dir": str(run_dir),
        "train.progress_bar": False,
        "method.gen_kwargs.max_new_tokens": 6,
    }
    return config.evolve(**{**base, **overrides})


def sft_config(run_dir, **overrides):
    return small(default_sft_config(), run_dir, **{"optimizer.kwargs.lr": 3e-3, **overrides})


def dpo_config(run_dir, **overrides):
    return small(default_dpo_config(), run_dir, **{"optimizer.kwargs.lr": 1e-3, **overrides})


def data_nll(lm, tokenizer, samples):
    """The token-mean negative log-likelihood of the samples' learned tokens under `lm`."""
    batch = collate(sft_examples(samples, tokenizer, 32), tokenizer.pad_token_id)
    with torch.no_grad():
        logprobs = sequence_logprobs(reference_forward(lm), batch)
    return (-logprobs.sum() / batch.loss_mask.sum()).item()


def test_sft_raises_the_likelihood_of_the_data_and_evaluates_with_metric_fn(model, tmp_path):
    before = data_nll(load_causal_lm(str(model)), load_tokenizer(str(model)), SFT_SAMPLES)
    metric_fn = lambda samples, outputs, **kw: {"goods": [o.split().count("good") for o in outputs]}  # noqa: E731
    trainer = trlx.train(
        str(model),
        samples=SFT_SAMPLES,
        eval_prompts=TINY_PROMPTS[:4],
        metric_fn=metric_fn,
        config=sft_config(tmp_path),
    )
    after = data_nll(trainer.model.lm, trainer.tokenizer, SFT_SAMPLES)
    assert after < 0.6 * before, (before, after)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    nll = [r["sft/nll"] for r in rows if "sft/nll" in r]
    assert len(nll) == 12 and nll[-1] < nll[0]
    evals = [r for r in rows if "eval/goods" in r]
    assert [r["step"] for r in evals] == [0, 6, 12]
    samples = read_metrics(tmp_path / "samples.jsonl")
    assert len(samples) == 3 * 4 and all(r["reward"] is None for r in samples)  # the samples table, unscored
    assert not any("eval/reward_mean" in r for r in rows)  # no reward_fn: samples and metrics only
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "checkpoint_00012") is not None
    assert not (tmp_path / "checkpoint_00012" / "value_head.safetensors").exists()


def test_sft_with_gradient_accumulation_takes_the_same_step(model, tmp_path):
    """A token mean over the whole batch, whatever the micro-batching: 2 micro-batches give the 1-batch step.
    (SGD: Adam would turn float noise in near-zero gradients into full-size steps.)"""
    sgd = {"train.total_steps": 2, "optimizer.name": "sgd", "optimizer.kwargs": {"lr": 0.1}}
    one = trlx.train(str(model), samples=SFT_SAMPLES, config=sft_config(tmp_path / "a", **sgd))
    accumulated = sft_config(tmp_path / "b", **sgd, **{"train.gradient_accumulation_steps": 2})
    two = trlx.train(str(model), samples=SFT_SAMPLES, config=accumulated)
    a, b = one.model.lm.state_dict(), two.model.lm.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not torch.equal(
        a["transformer.h.0.attn.c_attn.weight"],
        load_causal_lm(str(model)).state_dict()["transformer.h.0.attn.c_attn.weight"],
    )


def heldout_accuracy(lm, reference_lm, tokenizer):
    examples = preference_examples(pairs(HELD_OUT_PROMPTS), tokenizer, 32)
    objective = DPOObjective(
        examples, tokenizer.pad_token_id, default_dpo_config().method, reference_forward(reference_lm), "cpu"
    )
    batch = objective.batch(range(len(examples)))
    with torch.no_grad():
        chosen = sequence_logprobs(reference_forward(lm), batch.chosen).sum(-1)
        rejected = sequence_logprobs(reference_forward(lm), batch.rejected).sum(-1)
    return pair_metrics(chosen - batch.ref_chosen, rejected - batch.ref_rejected)["rewards/accuracy"]


@pytest.mark.parametrize("variant", ["dpo", "ipo"])
def test_dpo_held_out_preference_accuracy_rises(model, tmp_path, variant):
    config = dpo_config(tmp_path, **{"method.preference_loss": variant, "train.total_steps": 16})
    trainer = trlx.train(str(model), samples=pairs(TRAIN_PROMPTS), config=config)
    reference = load_causal_lm(str(model))
    assert heldout_accuracy(reference, reference, trainer.tokenizer) == 0.0  # no margin before training
    assert heldout_accuracy(trainer.model.lm, reference, trainer.tokenizer) == 1.0
    rows = [r for r in read_metrics(tmp_path / "metrics.jsonl") if f"loss/{variant}" in r]
    assert rows[0]["rewards/margin"] == pytest.approx(0.0, abs=1e-6)  # the policy starts as the reference
    assert rows[-1]["rewards/margin"] > 0 and rows[-1]["rewards/accuracy"] == 1.0
    assert {"rewards/chosen", "rewards/rejected"} <= rows[-1].keys()


def test_dpo_from_a_trlx_label_file(model, tmp_path):
    import json

    lines = [{"prompt": p, "candidates": [" bad bad", " good good"], "choice": 1} for p in TRAIN_PROMPTS]
    lines.append({"prompt": "the plot", "candidates": [" good", " bad"], "choice": None, "tie": True})
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    trainer = trlx.train(str(model), samples=str(path), config=dpo_config(tmp_path / "run"))
    assert len(trainer.objective.lengths) == len(TRAIN_PROMPTS)  # the tie gave no pair
    last = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "rewards/margin" in r][-1]
    assert last["rewards/margin"] > 0


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_stop_and_resume_equals_an_uninterrupted_run(model, tmp_path, method):
    config_of, samples = (sft_config, SFT_SAMPLES) if method == "sft" else (dpo_config, pairs(TRAIN_PROMPTS))
    overrides = {"train.checkpoint_interval": 5, "train.batch_size": 4, "train.eval_interval": 5}
    eval_kwargs = {
        "eval_prompts": TINY_PROMPTS[:4],
        "reward_fn": lambda outputs, **kw: [o.count("good") for o in outputs],
    }
    trlx.train(str(model), samples=samples, config=config_of(tmp_path / "straight", **overrides), **eval_kwargs)
    trlx.train(
        str(model),
        samples=samples,
        config=config_of(tmp_path / "split", **overrides, **{"train.total_steps": 7}),
        **eval_kwargs,
    )
    resumed = config_of(tmp_path / "split", **overrides, **{"train.resume_from_checkpoint": "latest"})
    trlx.train(str(model), samples=samples, config=resumed, **eval_kwargs)
    assert metric_rows(tmp_path / "split") == metric_rows(tmp_path / "straight")
    a, b = weights(tmp_path / "split" / "checkpoint_00012"), weights(tmp_path / "straight" / "checkpoint_00012")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The epochs (passes over the data) cross the stop: batches come from the saved sampler position.
    assert max(r.get("epoch", 0) for r in metric_rows(tmp_path / "straight")) >= 1


def test_offline_bad_input_is_refused_before_the_model_loads(model, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"samples= is a static dataset, trained on by method.name sft, dpo or ilql, but the config has method.name "
        "ppo",
    ):
        trlx.train(str(model), samples=SFT_SAMPLES, config=default_ppo_config())
    with pytest.raises(ValueError, match=r"method.name sft trains on samples=: pass the dataset as samples"):
        trlx.train(
            str(model),
            reward_fn=lambda samples, **kw: [0.0] * len(samples),
            prompts=TINY_PROMPTS,
            config=default_sft_config(),
        )
    with pytest.raises(ValueError, match=r"rewards= \(one per sample\) is offline RL, method.name ilql, but"):
        trlx.train(str(model), samples=["the movie"], rewards=[1.0], config=default_sft_config())
    with pytest.raises(TypeError, match=r"samples\[0\] must be \(prompt, chosen, rejected\) strings"):
        trlx.train(str(model), samples=["the movie was good"], config=dpo_config(tmp_path))


def test_cli_trains_sft_and_dpo_from_task_samples(model, tmp_path, capsys):
    import json

    import yaml

    from trlx import cli

    (tmp_path / "sft.jsonl").write_text("".join(json.dumps(s) + "\n" for s in SFT_SAMPLES))
    (tmp_path / "dpo.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs(TRAIN_PROMPTS)))
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"model": {"model_path": str(model)}, "train": {"progress_bar": False}}))
    common = ["train.total_steps=3", "train.seq_length=32", "tokenizer.tokenizer_path=null"]
    sft = [
        str(config),
        "method.name=sft",
        f"task.samples={tmp_path / 'sft.jsonl'}",
        f"train.checkpoint_dir={tmp_path / 'sft'}",
    ]
    assert cli.main(["train", *sft, *common]) == 0
    dpo = [
        str(config),
        "method.name=dpo",
        f"task.samples={tmp_path / 'dpo.jsonl'}",
        f"train.checkpoint_dir={tmp_path / 'dpo'}",
    ]
    assert cli.main(["train", *dpo, *common]) == 0
    assert "trlx: dpo finished at step 3" in capsys.readouterr().out
    assert [r["step"] for r in read_metrics(tmp_path / "dpo" / "metrics.jsonl")] == [1, 2, 3]
    assert cli.main(["train", str(config), "method.name=sft"]) == 2
    assert "method.name sft trains on a dataset: set task.samples" in capsys.readouterr().err


def rft_config(run_dir, **overrides):
    from trlx.data.default_configs import default_rft_config

    base = {
        "optimizer.kwargs.lr": 3e-3,
        "train.batch_size": 16,
        "method.n_generations_per_prompt": 8,
        "method.n_improve_steps": 2,
        "method.chunk_size": 64,
        "method.gen_kwargs.max_new_tokens": 8,
        "train.total_steps": 24,
        "train.eval_interval": 12,
    }
    return small(default_rft_config(), run_dir, **{**base, **overrides})


def good_words(outputs, **kwargs):
    return [o.split().count("good") for o in outputs]


def test_rft_reward_rises_across_growth_steps(model, tmp_path):
    config = rft_config(tmp_path, **{"train.total_steps": 40, "train.eval_interval": 20})
    trlx.train(str(model), reward_fn=good_words, prompts=TINY_PROMPTS, config=config)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    grown = [r["rft/sampled_mean"] for r in rows if "rft/sampled_mean" in r]
    assert len(grown) >= 3 and grown[-1] > 2 * grown[0], grown
    percentiles = [r["rft/percentile"] for r in rows if "rft/percentile" in r]
    assert percentiles[:3] == pytest.approx([0.7, 0.825, 0.7])  # rising over the 2 improve steps, then again
    evals = [r["eval/reward_mean"] for r in rows if "eval/reward_mean" in r]
    assert evals[-1] > evals[0]


def test_rft_stop_and_resume_mid_pass_equals_an_uninterrupted_run(model, tmp_path):
    common = {"train.checkpoint_interval": 5, "train.total_steps": 14}
    trlx.train(
        str(model), reward_fn=good_words, prompts=TINY_PROMPTS, config=rft_config(tmp_path / "straight", **common)
    )
    split = rft_config(tmp_path / "split", **{**common, "train.total_steps": 7})
    trlx.train(str(model), reward_fn=good_words, prompts=TINY_PROMPTS, config=split)
    resumed = rft_config(tmp_path / "split", **{**common, "train.resume_from_checkpoint": "latest"})
    trainer = trlx.train(str(model), reward_fn=good_words, prompts=TINY_PROMPTS, config=resumed)
    assert metric_rows(tmp_path / "split") == metric_rows(tmp_path / "straight")
    a, b = weights(tmp_path / "split" / "checkpoint_00014"), weights(tmp_path / "straight" / "checkpoint_00014")
    assert all(torch.equal(a[k], b[k]) for k in a)
    growth_steps = sum("rft/sampled_mean" in r for r in metric_rows(tmp_path / "straight"))
    assert growth_steps >= 2  # the stop fell after a growth step, whose completions the checkpoint kept
    assert sum(len(c) for c in trainer.objective.completions) == growth_steps * 8 * len(TINY_PROMPTS)


def test_dpo_with_a_cached_frozen_trunk_takes_the_same_steps(model, tmp_path):
    """With the hydra reference the frozen trunk's output is recorded with the reference's log-probs and replayed
    in every update (only the top block runs); the steps match a run that computes the whole model each time."""
    common = {"model.num_layers_unfrozen": 1, "train.total_steps": 4, "train.batch_size": 4}
    cached = trlx.train(
        str(model),
        samples=pairs(TRAIN_PROMPTS),
        config=dpo_config(tmp_path / "a", **common, **{"model.reference": "hydra"}),
    )
    plain = trlx.train(
        str(model),
        samples=pairs(TRAIN_PROMPTS),
        config=dpo_config(tmp_path / "b", **common, **{"model.reference": "copy"}),
    )
    assert cached.objective.trunk is not None and cached.objective.trunk.replays == 2 * 4  # chosen + rejected
    assert plain.objective.trunk is None
    a = [r for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if "loss/dpo" in r]
    b = [r for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if "loss/dpo" in r]
    assert [r["loss/dpo"] for r in a] == pytest.approx([r["loss/dpo"] for r in b], rel=1e-4)
    wa, wb = cached.model.lm.state_dict(), plain.model.lm.state_dict()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
