"""The frozen trunk recorded while sampling, replayed in scoring and updates, gives the full forward's numbers
while the bottom blocks do not run."""

import copy

import pytest
import torch
from conftest import random_gpt2, random_llama

from trlx.data.prompts import PromptPipeline, to_prompts
from trlx.models.policy import PolicyWithValueHead, freeze_bottom_layers, load_tokenizer, transformer_blocks
from trlx.models.trunk import FrozenTrunk, frozen_trunk
from trlx.rollout.generation import generate
from trlx.rollout.options import SamplingParams
from trlx.rollout.scoring import score_response


def gpt2(vocab):
    return random_gpt2(vocab, layers=3)


def llama(vocab):
    return random_llama(vocab, layers=3)


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2", "llama"])
def test_trunk_recorded_while_sampling_replays_to_the_full_forward(build, tiny_gpt2_path):
    tokenizer = load_tokenizer(str(tiny_gpt2_path))
    lm = build(len(tokenizer)).eval()
    with torch.no_grad():  # sharpen the random init so differences would show
        for p in lm.parameters():
            p.add_(0.5 * torch.randn_like(p))
    freeze_bottom_layers(lm, 1)
    full = PolicyWithValueHead(copy.deepcopy(lm))
    trunk = FrozenTrunk(lm, 1)
    policy = PolicyWithValueHead(lm)
    with torch.no_grad():
        policy.value_head.weight.normal_()
        full.value_head.load_state_dict(policy.value_head.state_dict())
    prompts = PromptPipeline(to_prompts(["the movie", "this film is very good and", "it"]), tokenizer, 20)
    batch = prompts.batch([0, 1, 2])
    params = SamplingParams(max_new_tokens=6, eos_token_ids=(tokenizer.eos_token_id,))
    torch.manual_seed(0)
    generation = generate(lm, batch, tokenizer, params, trunk=trunk)
    width = batch.input_ids.shape[1] + generation.response_ids.shape[1]
    assert generation.trunk.shape == (3, width, 32)
    args = (batch.input_ids, batch.attention_mask, generation.response_ids, generation.response_mask, params)

    calls = []
    attention = next(m for m in transformer_blocks(lm)[0].modules() if "attention" in type(m).__name__.lower())
    attention.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad(), trunk.replay(generation.trunk):
        replayed = score_response(policy, *args)
    assert calls == []  # the bottom block did not run
    with torch.no_grad():
        expected = score_response(full, *args)
    mask = generation.response_mask.bool()
    torch.testing.assert_close(replayed.logprobs[mask], expected.logprobs[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(replayed.values[mask], expected.values[mask], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(replayed.logprobs[mask], generation.logprobs[mask], atol=1e-5, rtol=1e-5)

    # The update's gradient through the trainable top is the full forward's.
    with trunk.replay(generation.trunk):
        (score_response(policy, *args).logprobs * mask).sum().backward()
    (score_response(full, *args).logprobs * mask).sum().backward()
    ours = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    theirs = {n: p.grad for n, p in full.named_parameters() if p.grad is not None}
    assert ours.keys() == theirs.keys() and ours
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=1e-4)
    assert trunk.replays == 2


def test_frozen_trunk_exists_only_below_trainable_top_blocks(tiny_gpt2_path):
    lm = gpt2(50)
    assert frozen_trunk(lm, -1) is None and frozen_trunk(lm, 3) is None
    assert len(frozen_trunk(lm, 2).bottom) == 1
    with pytest.raises(ValueError, match="1 to 2 trainable top blocks"):
        FrozenTrunk(lm, 3)


def test_a_replay_that_does_not_cover_the_input_is_refused():
    lm = gpt2(50).eval()
    trunk = FrozenTrunk(lm, 1)
    ids = torch.randint(0, 50, (2, 6))
    with torch.no_grad(), trunk.capture() as captured:
        full = lm(input_ids=ids).logits
    recorded = captured[-1]
    with torch.no_grad(), trunk.replay(recorded):  # a forward of a prefix gets the prefix's recorded positions
        torch.testing.assert_close(lm(input_ids=ids[:, :4]).logits, full[:, :4])
    with torch.no_grad(), trunk.replay(recorded[:, :3]), pytest.raises(ValueError, match="does not cover"):
        lm(input_ids=ids[:, :4])
