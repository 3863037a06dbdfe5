import pytest
import torch

from trlx.data.prompts import PromptPipeline, PromptSampler, position_ids_from_mask, to_prompts
from trlx.rollout.generation import truncate_responses


def test_position_ids_start_at_first_real_token():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    expected = torch.tensor([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4], [0, 0, 0, 0, 0]])
    assert torch.equal(position_ids_from_mask(mask), expected)


def test_left_padding(tiny_tokenizer):
    pipeline = PromptPipeline(to_prompts(["the movie", "this film is very good"]), tiny_tokenizer, 16)
    batch = pipeline.batch([0, 1])
    pad = tiny_tokenizer.pad_token_id
    assert batch.input_ids.shape == (2, 5)
    assert batch.input_ids[0, :3].tolist() == [pad] * 3  # padding on the left, prompt ends in the last column
    assert batch.attention_mask[0].tolist() == [0, 0, 0, 1, 1]
    assert tiny_tokenizer.decode(batch.input_ids[0, 3:]) == "the movie"


def test_prompt_validation(tiny_tokenizer):
    with pytest.raises(ValueError, match="prompts is empty"):
        to_prompts([])
    with pytest.raises(ValueError, match=r"prompts\[1\] is an empty prompt"):
        to_prompts(["ok", "  "])
    with pytest.raises(ValueError, match=r"without a 'prompt' \(or 'messages'\) key"):
        to_prompts([{"text": "x"}])
    with pytest.raises(TypeError, match=r"prompts\[0\] must be a string"):
        to_prompts([3])
    with pytest.raises(ValueError, match="prompt 0 has 5 tokens but only 4 fit"):
        PromptPipeline(to_prompts(["this film is very good"]), tiny_tokenizer, 4)


def test_dict_prompts_carry_metadata():
    prompts = to_prompts([{"prompt": "a", "label": 1}, {"prompt": "b", "label": 0}])
    assert [p.metadata for p in prompts] == [{"label": 1}, {"label": 0}]


def test_sampler_covers_every_prompt_each_pass_and_resumes():
    sampler = PromptSampler(num_prompts=5, seed=0)
    first_pass = sampler.take(5)
    assert sorted(first_pass) == [0, 1, 2, 3, 4]
    sampler.take(2)
    state = sampler.state_dict()
    expected = sampler.take(7)
    resumed = PromptSampler(num_prompts=5, seed=0)
    resumed.load_state_dict(state)
    assert resumed.take(7) == expected


def test_truncate_after_eos(tiny_tokenizer):
    eos, pad = tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id
    good, movie = tiny_tokenizer.convert_tokens_to_ids(["good", "movie"])
    response = torch.tensor([[good, eos, movie, movie], [good, movie, movie, good]])
    ids, mask, outputs = truncate_responses(response, tiny_tokenizer, {eos}, [])
    assert ids.tolist() == [[good, eos, pad, pad], [good, movie, movie, good]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert outputs == ["good", "good movie movie good"]


def test_truncate_at_stop_sequence(tiny_tokenizer):
    eos = tiny_tokenizer.eos_token_id
    tokens = tiny_tokenizer.convert_tokens_to_ids(["good", "movie", ".", "bad", "film"])
    ids, mask, outputs = truncate_responses(torch.tensor([tokens]), tiny_tokenizer, {eos}, [" ."])
    # The stop sequence's tokens stay in the trained response (the policy chose them) but leave the text.
    assert mask.sum().item() == 3 and ids[0, :3].tolist() == tokens[:3]
    assert outputs == ["good movie"]
    # The earliest of several stop sequences wins.
    _, mask, outputs = truncate_responses(torch.tensor([tokens]), tiny_tokenizer, {eos}, ["film", "bad"])
    assert outputs == ["good movie . "] and mask.sum().item() == 4
