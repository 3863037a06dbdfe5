"""Chat prompts: the tokenizer's template is applied once, generation ends at its end-of-turn token, reward_fn
gets the completion and the prompt's metadata, and a tokenizer without a template is refused."""

import json

import pytest
import torch
from conftest import build_word_tokenizer, tiny_ppo_config
from transformers import GPT2Config, GPT2LMHeadModel

from trlx.data.prompts import PromptPipeline, end_of_turn_ids, to_prompts
from trlx.trlx import make_trainer

TEMPLATE = (
    "{% for m in messages %}[BOS] {{ m['content'] }}{% if m['role'] == 'assistant' %} [EOT]{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}[BOS]{% endif %}"
)
CHATS = [
    {"messages": [{"role": "user", "content": "the movie was"}], "answer": "good"},
    {"messages": [{"role": "user", "content": "the plot is"}], "answer": "bad"},
]


def chat_tokenizer(template=TEMPLATE):
    tokenizer = build_word_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["[EOT]"]})
    tokenizer.chat_template = template
    return tokenizer


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "tiny-chat-gpt2"
    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=128, vocab_size=len(tokenizer))
    config.eos_token_id, config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_template_is_applied_once_with_the_generation_prompt():
    tokenizer = chat_tokenizer()
    pipeline = PromptPipeline(to_prompts(CHATS), tokenizer, 32)
    assert pipeline.is_chat and pipeline.prompts[0].text == "[BOS] the movie was [BOS]"
    ids = pipeline.token_ids[0]
    assert ids == tokenizer("[BOS] the movie was [BOS]", add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 2  # the template's two, and no third from the tokenizer
    assert pipeline.prompts[1].metadata == {"answer": "bad"}
    assert end_of_turn_ids(tokenizer) == (tokenizer.convert_tokens_to_ids("[EOT]"),)


def test_a_bare_conversation_and_bad_messages():
    assert to_prompts([[{"role": "user", "content": "hi"}]])[0].messages == ({"role": "user", "content": "hi"},)
    with pytest.raises(ValueError, match=r"prompts\[0\]\[0\] must be a message"):
        to_prompts([[{"role": "user"}]])
    with pytest.raises(ValueError, match=r"prompts\[0\]\['messages'\] must be a non-empty list"):
        to_prompts([{"messages": []}])


def test_tokenizer_without_a_chat_template_is_refused():
    with pytest.raises(ValueError, match="prompt 0 is a chat conversation but tokenizer .* has no chat template"):
        PromptPipeline(to_prompts(CHATS), build_word_tokenizer(), 32)


def test_generation_stops_at_end_of_turn_and_reward_fn_gets_the_metadata(chat_model, tmp_path):
    seen = {}

    def reward_fn(samples, prompts, outputs, answer, **kwargs):
        seen.update(prompts=prompts, outputs=outputs, answer=answer)
        return [float(a in o.split()) for o, a in zip(outputs, answer)]

    config = tiny_ppo_config(tmp_path, **{"train.total_steps": 1, "train.batch_size": 4, "method.num_rollouts": 4})
    trainer = make_trainer(str(chat_model), reward_fn=reward_fn, prompts=CHATS, config=config)
    eot = trainer.tokenizer.convert_tokens_to_ids("[EOT]")
    assert eot in trainer.sampling.eos_token_ids
    # Make [EOT] the model's only likely token: every response is then that one token, and its text is empty.
    head = trainer.accelerator.unwrap_model(trainer.policy).lm.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, out: out + 100 * (torch.arange(out.shape[-1]) == eot))
    try:
        generation = trainer.generate(trainer.train_prompts.batch([0, 1]))
    finally:
        handle.remove()
    assert generation.response_mask.sum(-1).tolist() == [1, 1] and generation.outputs == ["", ""]
    trainer.learn()
    assert seen["answer"] and set(seen["answer"]) <= {"good", "bad"}
    assert all(p.endswith("[BOS]") for p in seen["prompts"])  # the rendered prompt, as the model read it


def test_plain_prompts_keep_the_model_eos_only(chat_model, tmp_path):
    config = tiny_ppo_config(tmp_path, **{"train.total_steps": 1})
    trainer = make_trainer(
        str(chat_model), reward_fn=lambda samples, **kw: [0.0] * len(samples), prompts=["the movie was"], config=config
    )
    assert trainer.tokenizer.convert_tokens_to_ids("[EOT]") not in trainer.sampling.eos_token_ids


@pytest.mark.slow  # the real SmolLM2 (about 45 s)
def test_arithmetic_config_trains_through_the_cli_with_the_real_chat_template(tmp_path):
    """configs/arithmetic.yml as `trlx train` runs it, shortened to one step: SmolLM2's own chat template, its
    <|im_end|> as end of turn, the exact-answer checker as reward and metric."""
    import subprocess
    import sys
    from pathlib import Path

    from trlx.logging import read_metrics

    config = Path(__file__).resolve().parents[2] / "configs" / "arithmetic.yml"
    overrides = ["train.total_steps=1", "method.num_rollouts=16", "method.chunk_size=16", "train.batch_size=16"]
    overrides += [f"train.checkpoint_dir={tmp_path}", "method.gen_kwargs.max_new_tokens=16"]
    result = subprocess.run(
        [sys.executable, "-m", "trlx", "train", str(config), *overrides], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(tmp_path / "metrics.jsonl")
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 1] and all(0 <= r["eval/format"] <= 1 for r in evals)
    train = next(r for r in rows if "reward/mean" in r)
    assert "reward/correct" in train and "groups/zero_std_fraction" in train and "value/loss" not in train
    samples = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert samples[0]["prompt"].endswith("<|im_start|>assistant\n") and "<|im_end|>" not in samples[0]["output"]
