"""The verifiable-reward example's checker, prompts and config (the 8-minute training run itself is not a test)."""

import re
from pathlib import Path

import pytest

from trlx.config import TRLConfig
from trlx.demos import arithmetic
from trlx.task import load_function, load_prompts

ROOT = Path(__file__).resolve().parents[2]


def test_checker_reads_the_last_answer_line_exactly():
    outputs = ["5 + 7 = 12\nAnswer: 12", "Answer: 11\nAnswer: 12", "12", "Answer: 120", "Answer:-3"]
    assert arithmetic.correct(outputs, [12, 12, 12, 12, -3]) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert arithmetic.formatted(outputs) == [1.0, 1.0, 0.0, 1.0, 1.0]
    scores = arithmetic.reward_fn(outputs, ["p"] * 5, outputs, answer=[12, 12, 12, 12, -3])
    assert scores == pytest.approx([1.2, 1.2, 0.0, 0.2, 1.2])
    assert arithmetic.reward_fn.last_metrics == {"reward/correct": 0.6, "reward/format": 0.8}
    assert arithmetic.metric_fn(outputs=outputs[:2], answer=[12, 13]) == {"accuracy": [1.0, 0.0], "format": [1.0, 1.0]}


def test_prompts_are_chat_conversations_with_answers_and_the_splits_are_disjoint():
    train, held_out = arithmetic.train_prompts(), arithmetic.eval_prompts()
    assert len(train) == arithmetic.N_TRAIN and len(held_out) == arithmetic.N_EVAL
    question = {p["messages"][0]["content"] for p in train}
    assert len(question) == len(train) and not question & {p["messages"][0]["content"] for p in held_out}
    for p in train[:50]:
        text = p["messages"][0]["content"]
        a, b = (int(n) for n in re.findall(r"\d+", text))
        assert p["answer"] == (a + b if "more" in text else a - b) and p["answer"] >= 0


def test_config_names_functions_that_resolve():
    config = TRLConfig.load_yaml(ROOT / "configs" / "arithmetic.yml")
    assert config.method.name == "grpo" and not config.method.uses_reference and not config.method.has_value_head
    assert load_function(config.task.reward_fn, "task.reward_fn") is arithmetic.reward_fn
    assert load_prompts(config.task.eval_prompts) == arithmetic.eval_prompts()
