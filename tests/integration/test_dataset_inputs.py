"""Hugging Face `datasets` as inputs: a Dataset of prompts (its other columns reach reward_fn as lists), of
samples (SFT, ILQL with a reward column), and .json / .parquet files named in the YAML task section."""

import pytest
from conftest import TINY_PROMPTS, tiny_ppo_config

import trlx
from trlx.data.default_configs import default_sft_config

datasets = pytest.importorskip("datasets")


def test_a_dataset_of_prompts_passes_its_other_columns_to_reward_fn(tiny_gpt2_path, tmp_path):
    texts = TINY_PROMPTS[:16]
    table = datasets.Dataset.from_dict(
        {"text": texts, "target": ["t:" + t for t in texts], "weight": [float(len(t)) for t in texts]}
    )
    seen = []

    def reward_fn(samples, prompts, outputs, target, weight, **kwargs):
        seen.append((list(prompts), target, weight))
        return [w / 16 for w in weight]

    overrides = {
        "train.total_steps": 2,
        "method.num_rollouts": 16,
        "method.chunk_size": 16,
        "task.prompt_field": "text",
    }
    config = tiny_ppo_config(tmp_path, **overrides)
    trlx.train(
        str(tiny_gpt2_path), reward_fn=reward_fn, prompts=table, eval_prompts=table.select(range(4)), config=config
    )
    assert [len(call[0]) for call in seen[:2]] == [4, 16]  # the step-0 evaluation, then the first rollout
    for prompts, targets, weights in seen:  # each row's metadata travels with its own prompt, as lists
        assert isinstance(targets, list) and isinstance(weights, list)
        assert all(t == "t:" + p and w == len(p) for p, t, w in zip(prompts, targets, weights))
    with pytest.raises(ValueError, match=r"prompts: the dataset has no 'prompt' column \(task.prompt_field\)"):
        trlx.train(str(tiny_gpt2_path), reward_fn=reward_fn, prompts=table, config=tiny_ppo_config(tmp_path / "b"))


def test_datasets_of_samples_train_sft_and_ilql(tiny_gpt2_path, tmp_path):
    texts = datasets.Dataset.from_dict({"text": ["the movie was good", "a fine film"] * 4})
    config = default_sft_config().evolve(
        train={"total_steps": 2, "checkpoint_dir": str(tmp_path / "sft"), "progress_bar": False, "seq_length": 32}
    )
    assert trlx.train(str(tiny_gpt2_path), samples=texts, config=config).step == 2
    rewarded = datasets.Dataset.from_dict(
        {"prompt": ["the movie"] * 8, "completion": [" good", " bad"] * 4, "reward": [1.0, 0.0] * 4}
    )
    trainer = trlx.train(
        str(tiny_gpt2_path),
        samples=rewarded,
        config=config.evolve(method={"name": "ilql"}, train={"checkpoint_dir": str(tmp_path / "ilql")}),
    )
    assert trainer.config.method.name == "ilql" and trainer.objective.returns.tolist() == pytest.approx(
        [0.935, -0.935] * 4, abs=1e-3
    )  # the labels, normalised over the dataset


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_the_yaml_task_section_reads_json_and_parquet_files_through_datasets(tiny_gpt2_path, tmp_path, suffix):
    table = datasets.Dataset.from_dict({"question": TINY_PROMPTS[:16], "label": list(range(16))})
    path = tmp_path / f"prompts{suffix}"
    table.to_json(str(path)) if suffix == ".json" else table.to_parquet(str(path))
    (tmp_path / "rewards.py").write_text("def reward(samples, label, **kw):\n    return [l / 16 for l in label]\n")
    config = tiny_ppo_config(
        tmp_path / "run",
        **{
            "train.total_steps": 2,
            "method.num_rollouts": 16,
            "method.chunk_size": 16,
            "task.prompts": str(path),
            "task.prompt_field": "question",
            "task.reward_fn": f"{tmp_path / 'rewards.py'}:reward",
        },
    )
    trainer = trlx.train(str(tiny_gpt2_path), config=config)
    assert trainer.step == 2 and len(trainer.train_prompts) == 16
