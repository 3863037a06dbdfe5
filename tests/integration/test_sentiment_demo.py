"""The sentiment demo end to end on a tiny GPT-2: every artifact is written and the model loads."""

import json
from pathlib import Path

import pytest

from trlx.demos.sentiment import run
from trlx.logging import read_metrics as read_jsonl

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "sentiment.yml"


def tiny_overrides(model_path: Path, out: Path, steps: int = 2) -> list[str]:
    """configs/sentiment.yml shrunk to seconds: the tiny GPT-2, 8 rollouts of 6 tokens, a few prompts."""
    return [
        f"model.model_path={model_path}",
        "model.num_layers_unfrozen=1",
        f"train.total_steps={steps}",
        "train.batch_size=8",
        "train.eval_interval=100",
        "train.progress_bar=false",
        "method.num_rollouts=8",
        "method.chunk_size=8",
        "method.ppo_epochs=1",
        "method.gen_kwargs.max_new_tokens=6",
        "demo.n_train_prompts=16",
        "demo.n_eval_prompts=4",
        "demo.num_threads=null",
        f"demo.output_dir={out}",
    ]


def test_demo_config_loads_with_demo_section_and_overrides():
    config, demo = run.load_config(CONFIG, ["demo.reward=learned", "train.seed=7"])
    assert demo.reward == "learned" and config.train.seed == 7
    assert config.model.model_path == run.SMOLLM2
    with pytest.raises(run.ConfigError, match="demo.reward"):
        run.load_config(CONFIG, ["demo.reward=sarcasm"])
    with pytest.raises(run.ConfigError, match="unknown demo field"):
        run.load_config(CONFIG, ["demo.colour=blue"])
    with pytest.raises(run.ConfigError, match="train.total_steps"):  # TRLConfig's own checks apply too
        run.load_config(CONFIG, ["train.total_steps=0"])


def test_tiny_demo_run_writes_all_artifacts(tiny_gpt2_path, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    config, demo = run.load_config(CONFIG, tiny_overrides(tiny_gpt2_path, out))
    summary = run.run_demo(config, demo)

    for name in ("metrics.jsonl", "samples.jsonl", "report.html", "report/reward.png", "summary.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert json.loads((out / "summary.json").read_text()) == summary
    assert summary["steps"] == 2 and summary["eval_prompts"] == 4 and summary["reward"] == "vader"
    for key in ("eval_reward_before", "eval_reward_after", "kl_per_token_final", "wall_time_s"):
        assert isinstance(summary[key], float), key
    # Before = the step-0 evaluation, after = the final one: both in samples.jsonl, both in the HTML.
    steps = sorted({row["step"] for row in read_jsonl(out / "samples.jsonl")})
    assert steps == [0, 2]
    page = (out / "report.html").read_text()
    assert page.count("<tr><td class='num'>") == 4  # the 4 eval prompts, first vs latest
    assert "eval reward on 4 held-out prompts" in capsys.readouterr().out

    model = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    assert model.config.n_layer == 2
    assert not list(Path(summary["final_model"]).glob("optimizer*")), "final_model/ carries resume-only files"


def test_second_run_moves_previous_output_aside(tiny_gpt2_path, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 99}\n')
    config, demo = run.load_config(CONFIG, tiny_overrides(tiny_gpt2_path, out, steps=1))
    run.run_demo(config, demo)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("run-")]
    assert len(moved) == 1 and (moved[0] / "metrics.jsonl").read_text() == '{"step": 99}\n'
    assert all(row["step"] != 99 for row in read_jsonl(out / "metrics.jsonl"))


class FakeLearnedReward:
    """Stands in for the MiniLM reward model (fitting it takes minutes): scores by the word "good"."""

    metadata = {"eval_accuracy": 0.5}

    def __init__(self):
        self.calls = 0

    def __call__(self, samples, prompts, outputs, **kwargs):
        self.calls += 1
        return [float("good" in o) for o in outputs]


def test_learned_reward_choice_is_used_by_the_trainer(tiny_gpt2_path, tmp_path, monkeypatch):
    import trlx.demos.sentiment.rewards as rewards

    fake = FakeLearnedReward()
    monkeypatch.setattr(rewards, "train_or_load_sentiment_rm", lambda: fake)
    monkeypatch.setattr(rewards, "vader_reward", lambda *a, **k: pytest.fail("VADER used despite demo.reward=learned"))
    out = tmp_path / "run"
    config, demo = run.load_config(CONFIG, [*tiny_overrides(tiny_gpt2_path, out, steps=1), "demo.reward=learned"])
    summary = run.run_demo(config, demo)
    assert summary["reward"] == "learned"
    assert fake.calls >= 3  # step-0 eval, one rollout, final eval
    assert {row["reward"] for row in read_jsonl(out / "samples.jsonl")} <= {0.0, 1.0}


def test_main_reports_config_errors_without_a_traceback(capsys):
    assert run.main([str(CONFIG), "demo.n_eval_prompts=0"]) == 2
    assert "demo.n_eval_prompts" in capsys.readouterr().err
    assert run.main([]) == 2


@pytest.mark.slow
def test_real_model_demo_runs_a_few_steps(tmp_path):
    """The default config on SmolLM2-135M, shortened to one rollout (a few minutes on 2 CPU cores)."""
    out = tmp_path / "run"
    overrides = [
        "train.total_steps=2",
        "train.progress_bar=false",
        "method.num_rollouts=32",
        "method.chunk_size=32",
        "method.ppo_epochs=1",
        "demo.n_train_prompts=32",
        "demo.n_eval_prompts=8",
        f"demo.output_dir={out}",
    ]
    config, demo = run.load_config(CONFIG, overrides)
    summary = run.run_demo(config, demo)
    # The logged rewards are VADER's compound score of each output, recomputed here, and the summary is their mean.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    first = [row for row in read_jsonl(out / "samples.jsonl") if row["step"] == 0]
    assert len(first) == 8
    for row in first:
        assert row["reward"] == pytest.approx(vader.polarity_scores(row["output"])["compound"], abs=1e-6)
    assert summary["eval_reward_before"] == pytest.approx(sum(r["reward"] for r in first) / 8, abs=1e-6)
    assert (out / "final_model" / "config.json").is_file()
