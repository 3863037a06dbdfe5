"""End to end: a tiny random GPT-2 learns an easy reward through `trlx.train` and through the CLI."""

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import TINY_PROMPTS, good_word_reward, save_tiny_gpt2, tiny_ppo_config
from transformers import AutoModelForCausalLM, AutoTokenizer

import trlx
from trlx.logging import read_metrics
from trlx.models.policy import load_causal_lm

REQUIRED_KEYS = {
    "step",
    "reward/mean",
    "reward/std",
    "kl/mean",
    "kl/coef",
    "policy/loss",
    "policy/approx_kl",
    "policy/clipfrac",
    "value/loss",
    "value/explained_variance",
    "time/rollout_s",
    "time/optimize_s",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, request):
    """One 128-step run shared by the assertions below (about 10 s on 2 cores)."""
    tmp = tmp_path_factory.mktemp("train")
    model_path = request.getfixturevalue("tiny_gpt2_module_path")
    config = tiny_ppo_config(tmp / "run", **{"train.total_steps": 128, "train.eval_interval": 64})
    trainer = trlx.train(str(model_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    return model_path, tmp / "run", trainer


@pytest.fixture(scope="module")
def tiny_gpt2_module_path(tmp_path_factory):
    return save_tiny_gpt2(tmp_path_factory.mktemp("model") / "tiny-gpt2")


def test_reward_rises(trained):
    _, run_dir, _ = trained
    rewards = [r["reward/mean"] for r in read_metrics(run_dir / "metrics.jsonl") if "reward/mean" in r]
    first, last = rewards[0], rewards[-1]
    # One rollout is 16 consecutive rows; the policy starts near 1/64 "good" words.
    assert last > first + 0.1, f"reward did not rise: first {first:.3f}, last {last:.3f}"
    evals = [r["eval/reward_mean"] for r in read_metrics(run_dir / "metrics.jsonl") if "eval/reward_mean" in r]
    assert len(evals) == 3 and evals[-1] > evals[0]


def test_metrics_rows_have_namespaced_keys(trained):
    _, run_dir, _ = trained
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "reward/mean" in r]
    assert [r["step"] for r in rows] == list(range(1, 129))
    for row in rows:
        assert REQUIRED_KEYS <= row.keys()
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {0, 64, 128} and {"prompt", "output", "reward"} <= samples[0].keys()


def test_policy_changed_reference_did_not(trained):
    model_path, _, trainer = trained
    initial = load_causal_lm(str(model_path)).state_dict()
    policy = trainer.accelerator.unwrap_model(trainer.policy).lm.state_dict()
    reference_model = trainer.reference.model  # the default reference: a frozen full copy
    reference = reference_model.state_dict()
    changed = [k for k in initial if not torch.equal(initial[k], policy[k])]
    assert len(changed) > len(initial) // 2
    for key, value in initial.items():
        assert torch.equal(value, reference[key]), f"reference parameter {key} changed"
    assert all(not p.requires_grad for p in reference_model.parameters())
    assert not any(id(p) in trainer.optimizer.state for p in reference_model.parameters())


def test_checkpoints_load_with_transformers(trained):
    _, run_dir, trainer = trained
    final = run_dir / "checkpoint_00128"
    assert (final / "model.safetensors").is_file() and (final / "value_head.safetensors").is_file()
    assert (run_dir / "best_checkpoint" / "config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    trained_state = trainer.accelerator.unwrap_model(trainer.policy).lm.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained_state[key])
    ids = tokenizer("the movie was", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4


def test_cli_train(tiny_gpt2_path: Path, tmp_path: Path):
    (tmp_path / "task_reward.py").write_text(
        textwrap.dedent(
            """
            def reward(samples, prompts, outputs, **kwargs):
                return [o.split().count("good") / 8 for o in outputs]
            """
        )
    )
    (tmp_path / "prompts.txt").write_text("\n".join(TINY_PROMPTS) + "\n")
    config = tiny_ppo_config(tmp_path / "unused").to_dict()
    config["task"] = {"reward_fn": f"{tmp_path}/task_reward.py:reward", "prompts": str(tmp_path / "prompts.txt")}
    config_path = tmp_path / "config.yml"
    import yaml

    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "cli_run"
    cmd = [
        sys.executable,
        "-m",
        "trlx",
        "train",
        str(config_path),
        f"model.model_path={tiny_gpt2_path}",
        f"train.checkpoint_dir={run_dir}",
        "train.total_steps=8",
        "train.eval_interval=8",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert max(r["step"] for r in rows) == 8
    # The end-of-run summary says where things went and the headline numbers, from metrics.jsonl.
    evals = [r["eval/reward_mean"] for r in rows if "eval/reward_mean" in r]
    assert "trlx: ppo finished at step 8 in " in result.stdout
    assert f"eval/reward_mean {evals[0]:.4g} (step 0) -> {evals[-1]:.4g} (step 8)" in result.stdout
    assert f"checkpoint       {run_dir / 'checkpoint_00008'}" in result.stdout
    assert f"logs             {run_dir / 'metrics.jsonl'}, {run_dir / 'samples.jsonl'}" in result.stdout
    # transformers' loading/saving bars and DeepSpeed's no-GPU notice are not the user's concern.
    for noise in ("Loading weights", "Writing model shards", "Setting accelerator to CPU"):
        assert noise not in result.stderr, result.stderr[-2000:]
    assert AutoModelForCausalLM.from_pretrained(run_dir / "checkpoint_00008") is not None


def test_cli_rejects_bad_override(tmp_path: Path):
    config_path = tmp_path / "config.yml"
    config_path.write_text("train:\n  seed: 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "trlx", "train", str(config_path), "train.sed=3"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown field 'train.sed'" in result.stderr


def test_cli_refuses_a_used_run_folder_in_one_line(tiny_gpt2_path: Path, tmp_path: Path, capsys):
    from trlx import cli

    run_dir = tmp_path / "used"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 3}\n')
    root = Path(__file__).resolve().parents[2]
    args = [str(root / "configs" / "ppo_smollm2.yml"), f"model.model_path={tiny_gpt2_path}"]
    args += [f"train.checkpoint_dir={run_dir}", f"task.prompts={root / 'configs/data/imdb_openings.txt'}"]
    assert cli.train_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("trlx train: CheckpointError: train.checkpoint_dir:") and "Traceback" not in err
    assert "train.resume_from_checkpoint=latest" in err and "train.overwrite_output_dir=true" in err
    assert (run_dir / "metrics.jsonl").read_text() == '{"step": 3}\n'


@pytest.mark.slow
def test_readme_train_commands_run_as_written(tmp_path: Path):
    """Each README `trlx train` line, run from a copy of the repository root (so runs/ stays clean), trains
    the real SmolLM2 and writes its checkpoint; only the console script is swapped for `python -m trlx`
    where the venv's bin is not on PATH."""
    import shutil

    from conftest import readme_train_commands

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(root / "configs", tmp_path / "configs")
    for words in readme_train_commands():
        cmd = [sys.executable, "-m", "trlx", *words[words.index("train") :]]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    for run_dir in ("runs/ppo_smollm2", "runs/seed3"):
        rows = read_metrics(tmp_path / run_dir / "metrics.jsonl")
        assert max(r["step"] for r in rows) == 16 and any("eval/reward_mean" in r for r in rows)
        assert AutoModelForCausalLM.from_pretrained(tmp_path / run_dir / "checkpoint_00016") is not None


@pytest.mark.parametrize("command", [[], ["train"], ["label"], ["train-rm"]], ids=["trlx", "train", "label", "rm"])
def test_help_does_not_import_torch(command):
    """`--help` answers without loading torch/transformers (seconds of imports) or anything heavy."""
    code = (
        "import sys, trlx.cli\n"
        f"try:\n    trlx.cli.main({[*command, '--help']!r})\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout and "HEAVY []" in result.stdout, result.stdout[-500:]


def test_readme_python_quick_start_runs_as_written(tiny_gpt2_path: Path, tmp_path: Path, monkeypatch):
    """Every line of the README's Python quick start runs; only the model (tiny) and the run's size shrink."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = re.search(r"## Quick start \(Python\)\n\n```python\n(.*?)```", readme, re.S).group(1)
    real_train, called = trlx.train, {}

    def small_train(model_path, config, **kwargs):
        called.update(model_path=model_path, config=config)
        small = {
            "train.total_steps": 2,
            "train.batch_size": 8,
            "train.seq_length": 32,
            "method.num_rollouts": 16,
            "method.chunk_size": 16,
            "method.gen_kwargs.max_new_tokens": 4,
            "train.progress_bar": False,
        }
        return real_train(str(tiny_gpt2_path), config=config.evolve(**small), **kwargs)

    monkeypatch.setattr(trlx, "train", small_train)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md quick start", "exec"), namespace)
    assert called["model_path"] == "gguf:smollm2-135m" and called["config"].train.checkpoint_dir == "runs/excited"
    assert namespace["trainer"].step == 2
    rows = read_metrics(tmp_path / "runs" / "excited" / "metrics.jsonl")
    assert any("eval/length" in r for r in rows)  # the README's metric_fn reached the log


def test_every_checkpoint_has_a_model_card(trained, tmp_path):
    """Hugging Face format: YAML front matter (base model, library, method, latest evaluation) and markdown that
    says how to load the folder."""
    import yaml

    _, run_dir, trainer = trained
    for folder in (run_dir / "checkpoint_00128", run_dir / "best_checkpoint"):
        text = (folder / "README.md").read_text()
        front, body = text.split("---\n")[1], text.split("---\n", 2)[2]
        meta = yaml.safe_load(front)
        assert meta["base_model"] == trainer.config.model.model_path
        assert meta["library_name"] == "transformers" and {"trlx", "ppo", "rlhf"} <= set(meta["tags"])
        assert meta["trlx"]["method"] == "ppo" and "eval/reward_mean" in meta["trlx"]["eval"]
        assert f'AutoModelForCausalLM.from_pretrained("{folder}")' in body
    trainer.save_pretrained(tmp_path / "exported")
    assert yaml.safe_load((tmp_path / "exported" / "README.md").read_text().split("---\n")[1])["trlx"]["step"] == 128
