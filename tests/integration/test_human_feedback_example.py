"""examples/human_feedback_imdb.py --quick on tiny models: IMDB comparisons -> reward model -> normalise -> PPO.

test_ppo_reward_model.py checks that PPO raises a reward model's score; this one checks the example's plumbing:
every artifact it promises is written and loads back.
"""

import importlib.util
import json
from pathlib import Path

import pytest

from trlx.datasets.imdb import load_imdb
from trlx.feedback.store import read_comparisons
from trlx.rewards.reward_model import RewardModel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "human_feedback_imdb.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("human_feedback_imdb", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_synthetic_labeller_prefers_the_positive_review(example):
    reviews = load_imdb(40)
    endings = {" " + " ".join(r.text.split()[-12:]): r.label for r in reviews}
    comparisons = example.synthetic_comparisons(reviews, 30, words=12, prompt_words=8)
    assert len(comparisons) == 30
    assert {c.choice for c in comparisons} == {0, 1}, "the positive snippet should not always sit in one place"
    for c in comparisons:
        assert [endings[text] for text in c.candidates][c.choice] == 1
        assert len(c.prompt.split()) == 8


def test_quick_run_writes_comparisons_reward_model_and_ppo_checkpoint(
    example, tmp_path, tiny_gpt2_path, tiny_bert_path
):
    from transformers import AutoModelForCausalLM

    workdir = tmp_path / "run"
    argv = ["--quick", "--workdir", str(workdir), "--rm-backbone", str(tiny_bert_path)]
    assert example.main([*argv, f"model.model_path={tiny_gpt2_path}", "demo.num_threads=null"]) == 0

    assert len(read_comparisons(workdir / "prefs.jsonl")) == 64
    reward_model = RewardModel.from_pretrained(workdir / "reward_model")
    # Normalised on the initial policy's samples before saving, so the stored gain is no longer the identity.
    assert reward_model.reward_gain.item() != 1.0
    assert reward_model.score(["the movie was good", "the movie was bad"]).shape == (2,)

    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["ppo_steps"] == 2 and summary["comparisons"] == 64
    for key in ("rm_eval_accuracy", "rm_before", "rm_after", "vader_before", "vader_after", "kl_per_token_final"):
        assert isinstance(summary[key], float), key
    policy = AutoModelForCausalLM.from_pretrained(workdir / "ppo" / "checkpoint_00002")
    assert policy.config.n_layer == 2
