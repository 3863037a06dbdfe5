"""Offline datasets: how each SFT sample form is tokenized and masked, preference pairs, and length-grouped
batches that cover the data once per pass and resume exactly."""

import json

import pytest
import torch
from conftest import build_word_tokenizer

from trlx.data.samples import collate, preference_examples, sft_example, sft_examples
from trlx.trainers.offline import LENGTH_GROUP_WINDOW, LengthGroupedBatches

TEMPLATE = (
    "{% for m in messages %}[BOS] {{ m['content'] }}{% if m['role'] == 'assistant' %} [EOT]{% endif %} {% endfor %}"
    "{% if add_generation_prompt %}[BOS]{% endif %}"
)


@pytest.fixture
def tokenizer():
    tokenizer = build_word_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["[EOT]"]})
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def words(tokenizer, ids):
    return tokenizer.convert_ids_to_tokens(ids)


def learned(tokenizer, example):
    return [t for t, keep in zip(words(tokenizer, example.response), example.learn) if keep]


def test_a_string_is_learned_whole_after_bos_and_ends_with_eos(tokenizer):
    e = sft_example("the movie was good", tokenizer, "s")
    assert words(tokenizer, e.query) == ["[BOS]"]
    assert learned(tokenizer, e) == ["the", "movie", "was", "good", "[EOS]"]


def test_a_pair_learns_the_completion_only(tokenizer):
    e = sft_example(["the movie was", "good"], tokenizer, "s")
    assert words(tokenizer, e.query) == ["the", "movie", "was"]
    assert learned(tokenizer, e) == ["good", "[EOS]"]
    already = sft_example(["the movie was", "good [EOS]"], tokenizer, "s")  # no second EOS
    assert learned(tokenizer, already) == ["good", "[EOS]"]


def test_alternating_turns_learn_the_outputs_only(tokenizer):
    e = sft_example(["the movie", "was good", "the plot", "was bad"], tokenizer, "s")
    assert words(tokenizer, e.response) == ["was", "good", "the", "plot", "was", "bad", "[EOS]"]
    assert learned(tokenizer, e) == ["was", "good", "was", "bad", "[EOS]"]


def test_chat_messages_learn_the_assistant_turns_with_their_end_of_turn(tokenizer):
    chat = [
        {"role": "user", "content": "the movie"},
        {"role": "assistant", "content": "was good"},
        {"role": "user", "content": "the plot"},
        {"role": "assistant", "content": "was bad"},
    ]
    e = sft_example(chat, tokenizer, "s")
    assert words(tokenizer, e.query) == ["[BOS]", "the", "movie", "[BOS]"]  # the assistant's opening is context
    assert learned(tokenizer, e) == ["was", "good", "[EOT]", "was", "bad", "[EOT]"]
    assert learned(tokenizer, sft_example({"messages": chat}, tokenizer, "s")) == learned(tokenizer, e)


def test_collate_pads_queries_left_and_responses_right(tokenizer):
    short, long = (
        sft_example(["the", "good"], tokenizer, "a"),
        sft_example(["the movie was", "very good"], tokenizer, "b"),
    )
    batch = collate([short, long], tokenizer.pad_token_id)
    assert batch.query_mask.tolist() == [[0, 0, 1], [1, 1, 1]]
    assert batch.response_mask.tolist() == [[1, 1, 0], [1, 1, 1]]
    assert batch.loss_mask.tolist() == [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    assert batch.query_ids[0, :2].tolist() == [tokenizer.pad_token_id] * 2


def test_long_samples_are_cut_with_a_warning_and_a_prompt_too_long_is_refused(tokenizer):
    with pytest.warns(UserWarning, match=r"1 of 2 samples are longer than train.seq_length \(4\) tokens and were cut"):
        examples = sft_examples([["the", "good"], ["the", "movie was very good"]], tokenizer, 4)
    assert [len(e) for e in examples] == [3, 4]
    with pytest.raises(ValueError, match=r"samples\[0\]: its prompt has 4 tokens, which leave no room"):
        sft_examples([["the movie was good", "yes"]], tokenizer, 4)


@pytest.mark.parametrize(
    "samples, error, message",
    [
        (["the movie", "  "], ValueError, r"samples\[1\] is an empty sample"),
        ([["the movie", ""]], ValueError, r"samples\[0\]: the completion is empty, so there is nothing to learn"),
        ([["the", "movie", "was"]], ValueError, r"samples\[0\] has 3 parts: give \[prompt, completion\]"),
        ([[{"role": "user", "content": "hi"}]], ValueError, r"samples\[0\] has no non-empty assistant turn"),
        ([3], TypeError, r"samples\[0\] must be a string, a \[prompt, completion\] list or a list of chat messages"),
        ("the movie", TypeError, r"samples must be a list of samples, not one string"),
        ([], ValueError, r"samples is empty"),
    ],
    ids=["empty_sample", "empty_completion", "odd_parts", "no_assistant_turn", "not_a_sample", "one_string", "none"],
)
def test_bad_sft_samples_name_the_sample(tokenizer, samples, error, message):
    with pytest.raises(error, match=message):
        sft_examples(samples, tokenizer, 32)


def test_preference_pairs_from_triples_dicts_and_a_label_file(tokenizer, tmp_path):
    dicts = [{"prompt": "the movie", "chosen": "was good", "rejected": "was bad"}]
    ((chosen, rejected),) = preference_examples(dicts, tokenizer, 32)
    assert chosen.query == rejected.query and learned(tokenizer, chosen) == ["was", "good", "[EOS]"]
    assert preference_examples([("the movie", "was good", "was bad")], tokenizer, 32)[0][1] == rejected
    # A `trlx label` file: a choice among 3 candidates is 2 pairs; a tie and a skip give none.
    lines = [
        {"prompt": "the movie", "candidates": ["was good", "was bad", "was dull"], "choice": 0},
        {"prompt": "the plot", "candidates": ["is good", "is bad"], "choice": None, "tie": True},
        {"prompt": "the plot", "candidates": ["is fine", "is bad"], "choice": None, "skipped": True},
    ]
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    pairs = preference_examples(str(path), tokenizer, 32)
    assert [(learned(tokenizer, c), learned(tokenizer, r)) for c, r in pairs] == [
        (["was", "good", "[EOS]"], ["was", "bad", "[EOS]"]),
        (["was", "good", "[EOS]"], ["was", "dull", "[EOS]"]),
    ]


@pytest.mark.parametrize(
    "samples, error, message",
    [
        ([{"prompt": "the", "chosen": "good"}], ValueError, r"samples\[0\] lacks \['rejected'\]"),
        ([("the", "good", "")], ValueError, r"samples\[0\]: the rejected completion is empty"),
        ([("the", "good", "good")], ValueError, r"samples\[0\]: chosen and rejected are the same text"),
        ([("the", "good")], TypeError, r"samples\[0\] must be \(prompt, chosen, rejected\) strings"),
        ("missing.jsonl", FileNotFoundError, r"comparisons file 'missing.jsonl' does not exist"),
    ],
    ids=["missing_key", "empty_rejected", "same_text", "two_items", "missing_file"],
)
def test_bad_preference_samples_name_the_sample(tokenizer, samples, error, message):
    with pytest.raises(error, match=message):
        preference_examples(samples, tokenizer, 32)


def test_length_grouped_batches_cover_each_pass_group_lengths_and_resume():
    lengths = [int(x) for x in torch.randint(1, 100, (203,), generator=torch.Generator().manual_seed(0))]
    sampler = LengthGroupedBatches(lengths, batch_size=4, seed=3, min_size=2)
    batches = [sampler.next() for _ in range(51)]  # 203 = 50 batches of 4 + a last one of 3 (kept: >= 2)
    assert sorted(i for b in batches for i in b) == list(range(203)) and sampler.epoch == 1
    # Within a window rows are sorted by length, so a batch's rows are far closer in length than random ones.
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 15 and LENGTH_GROUP_WINDOW > 1
    # The state resumes the same sequence of batches.
    state = sampler.state_dict()
    expected = [sampler.next() for _ in range(5)]
    resumed = LengthGroupedBatches(lengths, batch_size=4, seed=3, min_size=2)
    resumed.load_state_dict(state)
    assert [resumed.next() for _ in range(5)] == expected
    # A last batch smaller than the micro-batch count is dropped from that pass.
    assert len(LengthGroupedBatches(lengths, batch_size=4, seed=3, min_size=4).plan()) == 50
