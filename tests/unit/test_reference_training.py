"""The reference choices and the memory switches inside a real (tiny) PPO run: hydra and LoRA references start at
zero KL and keep what must stay frozen; gradient accumulation and checkpointing give the same update; bf16
autocast is applied."""

import copy

import pytest
import torch
from accelerate.state import AcceleratorState, GradientState
from conftest import TINY_PROMPTS, good_word_reward, tiny_ppo_config
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModelForCausalLM

import trlx
from trlx.logging import read_metrics
from trlx.models.policy import load_causal_lm, transformer_blocks
from trlx.rollout.scoring import reference_forward, score_response
from trlx.trlx import make_trainer


@pytest.fixture
def fresh_accelerate():
    """accelerate keeps one process-wide state; settings such as mixed precision need a fresh one."""
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def small_run(tmp_path, **overrides):
    base = {
        "train.total_steps": 4,
        "train.batch_size": 8,
        "train.eval_interval": 1000,
        "method.num_rollouts": 16,
        "method.chunk_size": 16,
    }
    return tiny_ppo_config(tmp_path / "run", **{**base, **overrides})


def distinct_words(samples, prompts, outputs, **kwargs):
    """A reward every sample earns some of, so advantages (and the update) are never all zero."""
    return [len(set(o.split())) / 8 for o in outputs]


def test_hydra_run_starts_at_zero_kl_and_trains_only_the_top(tiny_gpt2_path, tmp_path):
    config = small_run(tmp_path, **{"model.reference": "hydra", "model.num_layers_unfrozen": 1})
    initial = load_causal_lm(str(tiny_gpt2_path))
    trainer = trlx.train(str(tiny_gpt2_path), reward_fn=distinct_words, prompts=TINY_PROMPTS, config=config)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "kl/mean" in r]
    assert abs(rows[0]["kl/mean"]) < 1e-6  # the reference is the initial policy
    assert trainer.reference.kind == "hydra" and trainer.trunk.replays > 0  # scoring and updates skipped the trunk
    lm = trainer.accelerator.unwrap_model(trainer.policy).lm
    bottom_now, bottom_then = transformer_blocks(lm)[0], transformer_blocks(initial)[0]
    top_now, top_then = transformer_blocks(lm)[1], transformer_blocks(initial)[1]
    assert all(torch.equal(a, b) for a, b in zip(bottom_now.parameters(), bottom_then.parameters()))
    # Moved by gradients, not by weight decay (1e-6 x lr would not change a float32 weight).
    assert rows[0]["optim/grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(top_now.parameters(), top_then.parameters()))
    # The reference's own top block is still the initial one.
    ref_top = transformer_blocks(trainer.reference.model)[1]
    assert all(torch.equal(a, b) for a, b in zip(ref_top.parameters(), top_then.parameters()))


def test_lora_run_changes_only_adapters_and_saves_a_loadable_merged_model(tiny_gpt2_path, tmp_path):
    peft = pytest.importorskip("peft")
    config = small_run(tmp_path, **{"model.peft_config": {"r": 4, "lora_alpha": 8}, "optimizer.kwargs": {"lr": 3e-2}})
    initial = load_causal_lm(str(tiny_gpt2_path))
    trainer = trlx.train(str(tiny_gpt2_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "kl/mean" in r]
    assert abs(rows[0]["kl/mean"]) < 1e-6
    assert trainer.reference.kind == "lora"
    peft_lm = trainer.accelerator.unwrap_model(trainer.policy).lm
    base = dict(peft_lm.get_base_model().named_parameters())
    initial_params = dict(initial.named_parameters())
    adapters = {k: v for k, v in base.items() if ".lora_" in k}
    assert adapters and any(v.abs().sum() > 0 for k, v in adapters.items() if "lora_B" in k)  # B starts at 0
    for name, value in base.items():
        if ".lora_" not in name:
            assert torch.equal(value, initial_params[name.replace(".base_layer.", ".")]), name

    checkpoint = tmp_path / "run" / "checkpoint_00004"
    merged = AutoModelForCausalLM.from_pretrained(checkpoint).eval()
    reloaded = peft.PeftModel.from_pretrained(load_causal_lm(str(tiny_gpt2_path)), checkpoint / "adapter").eval()
    ids = torch.tensor([[5, 9, 12, 30, 7]])
    mask, response = torch.ones_like(ids), torch.tensor([[11, 40, 8]])
    with torch.no_grad():
        want = score_response(reference_forward(peft_lm), ids, mask, response, torch.ones_like(response)).logprobs
        got = score_response(reference_forward(merged), ids, mask, response, torch.ones_like(response)).logprobs
        got_adapter = score_response(
            reference_forward(reloaded), ids, mask, response, torch.ones_like(response)
        ).logprobs
        base_lp = score_response(reference_forward(initial), ids, mask, response, torch.ones_like(response)).logprobs
    assert not torch.allclose(want, base_lp, atol=1e-4)  # the adapters did learn something
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_adapter, want, rtol=0, atol=1e-5)


def one_update(model_path, tmp_path, name, **overrides):
    """Build a trainer, collect one rollout and take one optimizer step.

    Returns (rollout, params after the step, counts, trainer); counts holds the calls of a module inside the first
    block ("block_calls") and the matmul/attention FLOPs of the step, backward included ("flops").
    """
    # Plain SGD: the weight change is the gradient times lr, so equal steps mean equal gradients (Adam would
    # blow up rounding noise in near-zero gradients to a full lr-sized step).
    sgd = {"optimizer.name": "sgd", "optimizer.kwargs": {"lr": 0.1}}
    config = small_run(tmp_path / name, **{**sgd, **overrides})
    trainer = make_trainer(str(model_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    rollout, _ = trainer.collect_rollout()
    # Responses of different lengths, so micro-batches hold different numbers of tokens.
    lengths = torch.arange(len(rollout)) % rollout.response_mask.shape[1] + 1
    rollout.response_mask = (torch.arange(rollout.response_mask.shape[1]) < lengths[:, None]).float()
    # Advantages and returns that do not depend on whether this seed's samples happened to earn any reward.
    generator = torch.Generator().manual_seed(0)
    rollout.advantages = torch.randn(rollout.advantages.shape, generator=generator) * rollout.response_mask
    rollout.returns = torch.randn(rollout.returns.shape, generator=generator) * rollout.response_mask
    lm = trainer.accelerator.unwrap_model(trainer.policy).lm
    calls = []
    # A module inside the first block: recomputed blocks (gradient checkpointing) call it again in backward.
    inner = next(iter(transformer_blocks(lm)[0].children()))
    handle = inner.register_forward_hook(lambda *args: calls.append(1))
    with FlopCounterMode(display=False) as flops:
        trainer.update(next(trainer.minibatches(rollout)))
    handle.remove()
    params = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.policy).state_dict())
    return rollout, params, {"block_calls": len(calls), "flops": flops.get_total_flops()}, trainer


def test_gradient_accumulation_gives_the_same_update(tiny_gpt2_path, tmp_path, fresh_accelerate):
    rollout, plain, plain_counts, _ = one_update(tiny_gpt2_path, tmp_path, "plain")
    GradientState._reset_state()
    rollout2, accumulated, micro_counts, trainer = one_update(
        tiny_gpt2_path, tmp_path, "acc", **{"train.gradient_accumulation_steps": 4}
    )
    assert trainer.accelerator.gradient_accumulation_steps == 4
    assert torch.equal(rollout.response_ids, rollout2.response_ids)  # same data, so the steps must agree
    assert (plain_counts["block_calls"], micro_counts["block_calls"]) == (1, 4)
    # Gradients are freed right after the step, so they do not stay alive through the next rollout.
    assert all(p.grad is None for p in trainer.policy.parameters())
    for key in plain:
        torch.testing.assert_close(accumulated[key], plain[key], rtol=0, atol=1e-6, msg=key)
    initial = load_causal_lm(str(tiny_gpt2_path)).state_dict()
    assert any(not torch.equal(plain[f"lm.{k}"], v) for k, v in initial.items())  # the step moved the weights


def test_gradient_checkpointing_recomputes_blocks_and_gives_the_same_update(tiny_gpt2_path, tmp_path):
    rollout, plain, plain_counts, _ = one_update(tiny_gpt2_path, tmp_path, "plain")
    runs = {
        mode: one_update(tiny_gpt2_path, tmp_path, str(mode), **{"train.gradient_checkpointing": mode})
        for mode in (True, "selective")
    }
    for mode, (rollout2, checkpointed, counts, _) in runs.items():
        assert torch.equal(rollout.response_ids, rollout2.response_ids)
        assert (plain_counts["block_calls"], counts["block_calls"]) == (1, 2), mode  # the block ran again
        for key in plain:
            torch.testing.assert_close(checkpointed[key], plain[key], rtol=0, atol=1e-6, msg=f"{mode} {key}")
    # Whole-block recompute repeats the blocks' matmuls and attention in backward; selective recompute keeps their
    # outputs and redoes only the element-wise ops, so its matmul FLOPs are exactly the plain step's.
    assert runs["selective"][2]["flops"] == plain_counts["flops"] < runs[True][2]["flops"]


def test_bf16_mixed_precision_autocasts_the_policy(tiny_gpt2_path, tmp_path, fresh_accelerate):
    config = small_run(tmp_path, **{"train.mixed_precision": "bf16"})
    trainer = make_trainer(str(tiny_gpt2_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    assert trainer.accelerator.mixed_precision == "bf16"
    lm = trainer.accelerator.unwrap_model(trainer.policy).lm
    dtypes = []
    handle = lm.get_output_embeddings().register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    rollout, metrics = trainer.collect_rollout()
    trainer.update(next(trainer.minibatches(rollout)))
    handle.remove()
    assert dtypes and set(dtypes) == {torch.bfloat16}  # generation, scoring and the update all autocast
    assert abs(metrics["kl/mean"]) < 1e-2  # policy and reference in the same precision
