"""Left padding must not change what the models compute: position ids come from the attention mask."""

import torch
from transformers import AutoModelForCausalLM

from trlx.data.prompts import PromptPipeline, to_prompts
from trlx.models.policy import PolicyWithValueHead, load_tokenizer
from trlx.rollout.generation import generate, generation_config
from trlx.rollout.scoring import reference_forward, score_response


def _perturbed_model(path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():  # a random init is nearly uniform; sharpen it so differences would show
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    return model


def test_padded_and_unpadded_prompts_score_the_same(tiny_gpt2_path):
    tokenizer = load_tokenizer(str(tiny_gpt2_path))
    model = _perturbed_model(tiny_gpt2_path)
    pipeline = PromptPipeline(to_prompts(["the movie", "this film is very good and"]), tokenizer, 20)
    response = torch.tensor(tokenizer(["was good .", "fun ."], add_special_tokens=False)["input_ids"][:1] * 2)
    mask = torch.ones_like(response)
    both, alone = pipeline.batch([0, 1]), pipeline.batch([0])
    assert both.attention_mask[0].sum() < both.attention_mask.shape[1]  # row 0 really is padded
    lp_both, _ = score_response(reference_forward(model), both.input_ids, both.attention_mask, response, mask)
    lp_alone, _ = score_response(
        reference_forward(model), alone.input_ids, alone.attention_mask, response[:1], mask[:1]
    )
    torch.testing.assert_close(lp_both[0], lp_alone[0], atol=1e-5, rtol=1e-5)


def test_policy_logprobs_match_reference_at_init_and_values_start_at_zero(tiny_gpt2_path):
    tokenizer = load_tokenizer(str(tiny_gpt2_path))
    model = _perturbed_model(tiny_gpt2_path)
    policy = PolicyWithValueHead(model)
    batch = PromptPipeline(to_prompts(["the movie", "it was"]), tokenizer, 20).batch([0, 1])
    generation = generate(model, batch, tokenizer, generation_config(tokenizer, {"max_new_tokens": 5}))
    args = (batch.input_ids, batch.attention_mask, generation.response_ids, generation.response_mask)
    lp_policy, values = score_response(policy, *args)
    lp_ref, none = score_response(reference_forward(model), *args)
    torch.testing.assert_close(lp_policy, lp_ref)
    assert none is None and torch.count_nonzero(values) == 0
    assert (lp_policy <= 0).all()


def test_temperature_scales_logits(tiny_gpt2_path):
    tokenizer = load_tokenizer(str(tiny_gpt2_path))
    model = _perturbed_model(tiny_gpt2_path)
    batch = PromptPipeline(to_prompts(["the movie"]), tokenizer, 20).batch([0])
    response = torch.tensor([tokenizer.convert_tokens_to_ids(["good", "fun"])])
    mask = torch.ones_like(response)
    forward = reference_forward(model)
    hot, _ = score_response(forward, batch.input_ids, batch.attention_mask, response, mask, temperature=2.0)
    logits, _ = forward(
        torch.cat([batch.input_ids, response], 1),
        torch.cat([batch.attention_mask, mask], 1),
        torch.arange(batch.input_ids.shape[1] + 2)[None],
    )
    expected = torch.log_softmax(logits[0, 1:3] / 2.0, -1).gather(-1, response[0][:, None]).squeeze(-1)
    torch.testing.assert_close(hot[0], expected, atol=1e-5, rtol=1e-5)


def test_generation_uses_the_kv_cache_and_exact_sampling_defaults(tiny_gpt2_path):
    tokenizer = load_tokenizer(str(tiny_gpt2_path))
    config = generation_config(tokenizer, {"max_new_tokens": 5, "temperature": 0.7})
    assert config.use_cache is True
    # A checkpoint's own generation_config (often top_p < 1) must not change what PPO's log-probs describe.
    assert (config.top_k, config.top_p, config.do_sample, config.temperature) == (0, 1.0, True, 0.7)
    assert config.pad_token_id == tokenizer.pad_token_id and config.eos_token_id == tokenizer.eos_token_id
