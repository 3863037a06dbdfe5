"""Through the trainer: the sampled distribution is the scored one, whatever the checkpoint's generation_config.json
says; left padding does not change scores; EOS ids come from the tokenizer and the model; the KV cache is used."""

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType
from conftest import TINY_PROMPTS, good_word_reward, save_tiny_gpt2, tiny_ppo_config
from transformers import AutoModelForCausalLM, GenerationConfig

from trlx.config import ConfigError
from trlx.data.prompts import PromptPipeline, to_prompts
from trlx.models.policy import load_tokenizer
from trlx.rollout.options import SamplingParams
from trlx.rollout.scoring import reference_forward, score_response
from trlx.trainers.online import reuse_sampled_setting
from trlx.trlx import make_trainer


def sharpen(model, scale=1.0, seed=0):
    """A random init is nearly uniform; sharpen it so that differences between distributions show."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def opinionated_model(tmp_path_factory):
    """A tiny GPT-2 whose generation_config.json asks for a very different distribution than trlx's defaults."""
    path = save_tiny_gpt2(tmp_path_factory.mktemp("model") / "opinionated")
    model = sharpen(AutoModelForCausalLM.from_pretrained(path), scale=0.15)
    model.generation_config = GenerationConfig(
        repetition_penalty=1.5, top_k=3, top_p=0.5, temperature=0.3, do_sample=True, no_repeat_ngram_size=1
    )
    model.save_pretrained(path)
    return path


def trainer_for(model_path, tmp_path, gen_kwargs, **overrides):
    config = tiny_ppo_config(tmp_path / "run", **{"method.gen_kwargs": gen_kwargs, **overrides})
    return make_trainer(str(model_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)


GEN_KWARGS = {
    "defaults": {},
    "temperature": {"temperature": 0.7},
    "top_k": {"top_k": 5},
    "top_p": {"top_p": 0.8},
    "top_k_top_p_temperature": {"top_k": 10, "top_p": 0.9, "temperature": 1.3},
    "min_new_tokens": {"min_new_tokens": 6},
    "everything": {"min_new_tokens": 3, "top_k": 8, "top_p": 0.95, "temperature": 0.9, "do_sample": True},
}


@pytest.mark.parametrize("extra", GEN_KWARGS.values(), ids=GEN_KWARGS.keys())
def test_sampling_logprobs_equal_scored_old_logprobs(opinionated_model, tmp_path, extra):
    trainer = trainer_for(opinionated_model, tmp_path, {"max_new_tokens": 8, **extra})
    torch.manual_seed(0)
    generation = trainer.generate(trainer.train_prompts.batch(list(range(16))))
    rollout = trainer.score(generation)
    mask = generation.response_mask.bool()
    assert mask.sum() > 16  # several tokens per sample were sampled and compared
    torch.testing.assert_close(generation.logprobs[mask], rollout.logprobs[mask], atol=1e-4, rtol=0)
    if "min_new_tokens" in extra:  # EOS was banned early on, so every response is at least that long
        assert (generation.response_mask.sum(-1) >= extra["min_new_tokens"]).all()


@pytest.mark.parametrize(
    "model", [{}, {"model.reference": "hydra", "model.num_layers_unfrozen": 1}], ids=["copy", "hydra"]
)
def test_sampler_records_the_values_and_log_probs_the_policy_forward_computes(opinionated_model, tmp_path, model):
    """With the sampler's records (`from_sampling`) the rollout equals the one scored by a second policy forward;
    the value head is randomised so that its values are not all zero."""
    trainer = trainer_for(opinionated_model, tmp_path, {"max_new_tokens": 8, "top_k": 10}, **model)
    head = trainer.accelerator.unwrap_model(trainer.policy).value_head
    with torch.no_grad():
        head.weight.normal_(), head.bias.fill_(0.3)
    torch.manual_seed(0)
    generation = trainer.generate(trainer.train_prompts.batch(list(range(16))), record_trunk=True, values=True)
    scored, recorded = trainer.score(generation), trainer.score(generation, from_sampling=True)
    mask = generation.response_mask.bool()
    assert mask.sum() > 16 and scored.values[mask].abs().min() > 1e-3
    torch.testing.assert_close(recorded.values[mask], scored.values[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(recorded.logprobs[mask], scored.logprobs[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(recorded.ref_logprobs, scored.ref_logprobs, atol=0, rtol=0)
    assert trainer.generate(trainer.train_prompts.batch([0])).values is None  # recorded only when asked


def test_logprobs_from_sampling_is_decided_by_the_first_rollout_unless_set(opinionated_model, tmp_path):
    auto = trainer_for(opinionated_model, tmp_path / "auto", {"max_new_tokens": 4})
    assert auto.reuse_sampled is None
    auto.collect_rollout()
    assert auto.reuse_sampled is True  # fp32: the gap is ~1e-6
    _, metrics = auto.collect_rollout()
    assert "rollout/logprob_gap_max" not in metrics  # not scored again
    never = trainer_for(
        opinionated_model, tmp_path / "never", {"max_new_tokens": 4}, **{"method.logprobs_from_sampling": False}
    )
    assert never.reuse_sampled is False
    # Under autocast the decode and the full forward round differently: scored again. Under DeepSpeed/FSDP the
    # sampler cannot run the sharded value head: scored again, and asking for it is an error.
    policy = never.accelerator.unwrap_model(never.policy)
    for engine, precision, expected in [("NO", "bf16", False), ("NO", "no", None), ("DEEPSPEED", "no", False)]:
        accelerator = SimpleNamespace(
            distributed_type=DistributedType[engine], mixed_precision=precision, unwrap_model=lambda m: m
        )
        assert reuse_sampled_setting(None, accelerator, policy) is expected
    with pytest.raises(ConfigError, match="logprobs_from_sampling"):
        reuse_sampled_setting(True, accelerator, policy)


def test_sampled_distribution_ignores_the_checkpoints_generation_config(opinionated_model, tmp_path):
    """The first token's empirical distribution over 6000 draws is the model's softmax at temperature 1, computed
    here by hand; the checkpoint's repetition penalty, top_k=3, top_p=0.5 and temperature 0.3 would be far off."""
    trainer = trainer_for(opinionated_model, tmp_path, {"max_new_tokens": 1})
    pipeline = PromptPipeline(to_prompts(["the movie was"]), trainer.tokenizer, 20)
    batch = pipeline.batch([0] * 6000)
    torch.manual_seed(0)
    first = trainer.generate(batch).response_ids[:, 0]
    freq = torch.bincount(first, minlength=len(trainer.tokenizer)).float() / len(first)
    lm = AutoModelForCausalLM.from_pretrained(opinionated_model)
    with torch.no_grad():
        expected = torch.softmax(lm(batch.input_ids[:1]).logits[0, -1], -1)
    assert (expected > 0.01).sum() > 5  # the exact distribution is spread out, unlike a top-3 cut
    assert 0.5 * (freq - expected).abs().sum() < 0.05  # total variation distance


def test_padded_and_unpadded_prompts_score_the_same(tiny_gpt2_path):
    tokenizer = load_tokenizer(str(tiny_gpt2_path))
    model = sharpen(AutoModelForCausalLM.from_pretrained(tiny_gpt2_path))
    pipeline = PromptPipeline(to_prompts(["the movie", "this film is very good and"]), tokenizer, 20)
    response = torch.tensor(tokenizer(["was good .", "fun ."], add_special_tokens=False)["input_ids"][:1] * 2)
    mask = torch.ones_like(response)
    both, alone = pipeline.batch([0, 1]), pipeline.batch([0])
    assert both.attention_mask[0].sum() < both.attention_mask.shape[1]  # row 0 really is padded
    params = SamplingParams(max_new_tokens=3)
    forward = reference_forward(model)
    lp_both = score_response(forward, both.input_ids, both.attention_mask, response, mask, params).logprobs
    lp_alone = score_response(forward, alone.input_ids, alone.attention_mask, response[:1], mask[:1], params).logprobs
    torch.testing.assert_close(lp_both[0], lp_alone[0], atol=1e-5, rtol=1e-5)


def test_scoring_applies_temperature_to_the_full_forward(tiny_gpt2_path):
    tokenizer = load_tokenizer(str(tiny_gpt2_path))
    model = sharpen(AutoModelForCausalLM.from_pretrained(tiny_gpt2_path))
    batch = PromptPipeline(to_prompts(["the movie"]), tokenizer, 20).batch([0])
    response = torch.tensor([tokenizer.convert_tokens_to_ids(["good", "fun"])])
    mask = torch.ones_like(response)
    params = SamplingParams(max_new_tokens=2, temperature=2.0)
    hot = score_response(reference_forward(model), batch.input_ids, batch.attention_mask, response, mask, params)
    with torch.no_grad():
        logits = model(torch.cat([batch.input_ids, response], 1)).logits  # no padding: default positions
    expected = torch.log_softmax(logits[0, 1:3] / 2.0, -1).gather(-1, response[0][:, None]).squeeze(-1)
    torch.testing.assert_close(hot.logprobs[0], expected, atol=1e-5, rtol=1e-5)


def test_eos_ids_of_the_models_generation_config_end_responses(tmp_path):
    """generation_config.json lists [EOS] plus "!" (a chat model's end-of-turn); the tokenizer knows only EOS. The
    model is biased to say "!" first: responses must stop there and be scored up to it."""
    path = save_tiny_gpt2(tmp_path / "two-eos")
    tokenizer = load_tokenizer(str(path))
    bang = tokenizer.convert_tokens_to_ids("!")
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # tied to the embedding: zero it, then favour "!" through the bias of wte...
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight[bang] = 3.0  # ...so that "!" gets a logit of 3 * 32 at every position
    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id, bang])
    model.save_pretrained(path)
    trainer = trainer_for(path, tmp_path, {"max_new_tokens": 6})
    assert trainer.sampling.eos_token_ids == (tokenizer.eos_token_id, bang)
    torch.manual_seed(0)
    generation = trainer.generate(trainer.train_prompts.batch(list(range(8))))
    assert generation.response_mask.sum(-1).tolist() == [1] * 8  # stopped right after "!"
    assert generation.response_ids[:, 0].tolist() == [bang] * 8
    rollout = trainer.score(generation)
    assert rollout.response_mask.sum() == 8 and (rollout.logprobs[:, 0] > -1e-3).all()


def test_generation_feeds_one_token_per_step_through_the_kv_cache(tiny_gpt2_path, tmp_path):
    trainer = trainer_for(tiny_gpt2_path, tmp_path, {"max_new_tokens": 5, "min_new_tokens": 5})
    lm = trainer.accelerator.unwrap_model(trainer.policy).lm
    widths = []
    handle = lm.register_forward_pre_hook(
        lambda m, args, kwargs: widths.append(kwargs["input_ids"].shape[1]), with_kwargs=True
    )
    try:
        batch = trainer.train_prompts.batch([0, 1])
        generation = trainer.generate(batch)
    finally:
        handle.remove()
    assert widths == [batch.input_ids.shape[1], 1, 1, 1, 1]
    assert generation.response_ids.shape == (2, 5)


def test_scoring_keeps_vocabulary_sized_temporaries_to_what_the_warp_needs():
    """With EOS banned early (min_new_tokens), forward makes the LM-head output and the fused log-prob buffer
    (the ban is applied inside it), and backward the fused gradient only. A masked copy of the logits and its
    masked gradient once added one (B, R, V) buffer to each, and a no-op slice of the logits a zeros + copy."""
    from conftest import vocab_sized_allocations

    g = torch.Generator().manual_seed(0)
    batch, prompt, width, hidden, vocab = 2, 3, 4, 4, 20_000
    head = torch.randn(vocab, hidden, generator=g, requires_grad=True)
    states = torch.randn(batch, prompt + width - 1, hidden, generator=g, requires_grad=True)

    def forward(input_ids, attention_mask, position_ids, keep):
        return states[:, -keep:] @ head.t(), None

    query = torch.randint(0, vocab, (batch, prompt), generator=g)
    response = torch.randint(1, vocab, (batch, width), generator=g)
    ones = torch.ones(batch, prompt, dtype=torch.bool), torch.ones(batch, width, dtype=torch.bool)
    params = SamplingParams(max_new_tokens=width, min_new_tokens=2, eos_token_ids=(0,))
    scored = []
    allocated = vocab_sized_allocations(
        lambda: scored.append(score_response(forward, query, ones[0], response, ones[1], params)),
        (batch, width, vocab),
    )
    assert len(allocated) == 2, allocated
    backward = vocab_sized_allocations(lambda: scored[0].logprobs.sum().backward(), (batch, width, vocab))
    assert len(backward) == 1, backward  # the head's (V, H) gradient is half a (B, R, V) buffer here
