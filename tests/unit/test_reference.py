"""Memory-light references: the hydra reference (shared frozen trunk) and the LoRA reference (adapters off)
must give exactly the initial model's log-probs, for GPT-2 and for Llama (rotary embeddings, GQA)."""

import copy

import pytest
import torch
from conftest import random_gpt2, random_llama

from trlx.models.policy import PolicyWithValueHead, freeze_bottom_layers, parameters_below, transformer_blocks
from trlx.models.reference import HydraReference, make_reference, owned_parameters
from trlx.models.trunk import FrozenTrunk
from trlx.rollout.scoring import reference_forward, score_response

VOCAB = 60


def tiny_gpt2():
    return random_gpt2(VOCAB, layers=4)


def tiny_llama():
    return random_llama(VOCAB, layers=4)


MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def batch(seed: int = 1):
    """Left-padded queries and right-padded responses, as the rollout produces them."""
    g = torch.Generator().manual_seed(seed)
    query = torch.randint(1, VOCAB, (3, 6), generator=g)
    query_mask = torch.ones_like(query)
    query_mask[0, :3] = 0
    query_mask[2, :1] = 0
    response = torch.randint(1, VOCAB, (3, 5), generator=g)
    response_mask = torch.ones_like(response)
    response_mask[1, 2:] = 0
    return query, query_mask, response, response_mask


def numel(params) -> int:
    return sum(p.numel() for p in params)


@pytest.mark.parametrize("arch", MODELS)
def test_hydra_reference_equals_initial_model_and_copies_only_the_top(arch):
    lm = MODELS[arch]()
    initial = copy.deepcopy(lm)
    freeze_bottom_layers(lm, 1)
    reference = make_reference(lm, "hydra", num_layers_unfrozen=1)
    trunk = FrozenTrunk(lm, 1)
    policy = PolicyWithValueHead(lm)
    q, qm, r, rm = batch()
    with torch.no_grad():
        expected = score_response(reference_forward(initial), q, qm, r, rm).logprobs
        with trunk.capture() as captured:
            policy_logprobs = score_response(policy, q, qm, r, rm).logprobs
        ref_alone = score_response(reference.forward_fn(), q, qm, r, rm).logprobs
        with trunk.replay(captured[0]):  # the shared blocks return the policy's trunk output instead of running
            ref_replayed = score_response(reference.forward_fn(), q, qm, r, rm).logprobs
    assert trunk.replays == 1
    assert torch.equal(policy_logprobs, expected)
    torch.testing.assert_close(ref_alone, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(ref_replayed, expected, rtol=0, atol=1e-6)

    # Only what the policy trains is copied: the top block, the final norm and (when untied) the head.
    top = transformer_blocks(lm)[-1]
    trainable = [p for p in lm.parameters() if p.requires_grad]
    assert owned_parameters(reference.model, lm) == numel(trainable)
    assert numel(top.parameters()) < numel(trainable) < numel(lm.parameters()) / 2
    assert owned_parameters(copy.deepcopy(lm), lm) == numel(lm.parameters())  # what a full copy would cost


@pytest.mark.parametrize("arch", MODELS)
def test_hydra_reference_stays_initial_while_the_policy_trains(arch):
    lm = MODELS[arch]()
    initial = copy.deepcopy(lm)
    freeze_bottom_layers(lm, 2)
    reference = make_reference(lm, "hydra", num_layers_unfrozen=2)
    trunk = FrozenTrunk(lm, 2)
    policy = PolicyWithValueHead(lm)
    with torch.no_grad():
        for p in lm.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    q, qm, r, rm = batch(seed=2)
    with torch.no_grad():
        expected = score_response(reference_forward(initial), q, qm, r, rm).logprobs
        with trunk.capture() as captured:
            policy_logprobs = score_response(policy, q, qm, r, rm).logprobs
        with trunk.replay(captured[0]):
            ref_replayed = score_response(reference.forward_fn(), q, qm, r, rm).logprobs
        ref_alone = score_response(reference.forward_fn(), q, qm, r, rm).logprobs
    assert not torch.allclose(policy_logprobs, expected, atol=1e-3)
    torch.testing.assert_close(ref_replayed, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(ref_alone, expected, rtol=0, atol=1e-6)


def test_freeze_bottom_layers_freezes_everything_below_the_top_blocks():
    lm = tiny_gpt2()
    freeze_bottom_layers(lm, 1)
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    # Position embeddings run before the blocks: training them would change the shared trunk.
    assert "transformer.wpe.weight" not in trainable and "transformer.wte.weight" not in trainable
    assert all(n.startswith(("transformer.h.3.", "transformer.ln_f.")) for n in trainable)
    below = {id(p) for p in parameters_below(lm, transformer_blocks(lm)[3])}
    assert id(lm.transformer.ln_f.weight) not in below and id(lm.transformer.wpe.weight) in below


def test_hydra_refuses_a_trainable_trunk():
    lm = tiny_gpt2()
    with pytest.raises(ValueError, match="must be frozen"):
        HydraReference(lm, 1)  # freeze_bottom_layers was not called
    with pytest.raises(ValueError, match="trainable top blocks"):
        HydraReference(lm, 4)


@pytest.mark.parametrize("arch", MODELS)
def test_lora_reference_is_the_base_model(arch):
    pytest.importorskip("peft")
    from trlx.models.lora import add_lora

    lm = MODELS[arch]()
    initial = copy.deepcopy(lm)
    peft_lm = add_lora(lm, {"r": 4, "lora_alpha": 8, "target_modules": None if arch == "gpt2" else ["q_proj"]})
    reference = make_reference(peft_lm, "lora")
    policy = PolicyWithValueHead(peft_lm)
    with torch.no_grad():  # trained adapters: B is zero at init, so give it values
        for name, p in peft_lm.named_parameters():
            if "lora_B" in name:
                p.normal_()
    q, qm, r, rm = batch(seed=5)
    with torch.no_grad():
        expected = score_response(reference_forward(initial), q, qm, r, rm).logprobs
        policy_logprobs = score_response(policy, q, qm, r, rm).logprobs
        ref_logprobs = score_response(reference.forward_fn(), q, qm, r, rm).logprobs
    assert not torch.allclose(policy_logprobs, expected, atol=1e-3)
    assert torch.equal(ref_logprobs, expected)
    assert owned_parameters(peft_lm, peft_lm) == 0  # no second model at all
