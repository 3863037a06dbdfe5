"""`train.fused_blocks`: Llama RMSNorm and SwiGLU MLP with hand-written backward passes that save less."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_llama

from trlx.models.fused import _RMSNormFn, _SwiGLUDownFn, use_fused_blocks
from trlx.models.onednn import onednn_available, use_onednn_linears


def test_the_fused_functions_have_the_analytic_gradients_in_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w: _RMSNormFn.apply(x, w, 1e-5), (x, w))
    gate, up = (torch.randn(2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(2))
    down = torch.randn(6, 4, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(6, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: _SwiGLUDownFn.apply(*a, False), (gate, up, down, bias))
    assert torch.autograd.gradcheck(lambda *a: _SwiGLUDownFn.apply(*a, None, False), (gate, up, down))


def _run_block(model, ids, weights):
    """Logits and every parameter's gradient of a forward + weighted-sum backward, and the bytes autograd saved
    for backward outside the parameters (each storage counted once)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    model.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(ids).logits
    (logits * weights).sum().backward()
    return logits.detach(), {n: p.grad for n, p in model.named_parameters()}, sum(saved.values())


@pytest.mark.parametrize("onednn", [False, True] if onednn_available() else [False])
@pytest.mark.parametrize("mlp_bias", [False, True])
def test_a_fused_llama_computes_the_same_and_saves_less_for_backward(onednn, mlp_bias):
    plain = random_llama(vocab=50, layers=2)
    if mlp_bias:
        plain.config.mlp_bias = True
        for layer in plain.model.layers:
            for name in ("gate_proj", "up_proj", "down_proj"):
                old = getattr(layer.mlp, name)
                new = torch.nn.Linear(old.in_features, old.out_features, bias=True)
                new.weight.data.copy_(old.weight)
                torch.nn.init.normal_(new.bias)
                setattr(layer.mlp, name, new)
    if onednn:
        use_onednn_linears(plain)
    fused = copy.deepcopy(plain)
    keys = list(fused.state_dict())
    # 2 x (2 norms + 1 MLP) + the final norm
    assert use_fused_blocks(fused) == 7 and use_fused_blocks(fused) == 0
    assert list(fused.state_dict()) == keys
    assert type(fused.model.norm).__name__ == "FusedLlamaRMSNorm"
    assert isinstance(fused.model.layers[0].mlp, type(plain.model.layers[0].mlp))
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(3, 9, 50, generator=torch.Generator().manual_seed(2))
    logits_p, grads_p, saved_p = _run_block(plain, ids, weights)
    logits_f, grads_f, saved_f = _run_block(fused, ids, weights)
    assert torch.equal(logits_f, logits_p)  # bitwise: sampling and scoring see the same numbers
    for name, grad in grads_p.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    # A plain norm saves its input, the normalised input and 1/rms (its output is saved by the next linear), a
    # fused one only the input and 1/rms; a plain MLP saves gate, silu(gate), up and their product, a fused one
    # gate and up. So the fused model saves one hidden-sized tensor per norm (2 per block and the final one)
    # and two intermediate-sized ones per MLP less: (5 * 32 + 2 * 2 * 64) floats per token, exactly.
    tokens, hidden, inter = 3 * 9, 32, 64
    assert saved_p - saved_f == (5 * hidden + 2 * 2 * inter) * tokens * 4


def test_fused_blocks_fall_back_outside_fp32_and_under_lora_like_layers():
    model = random_llama(vocab=50, layers=1)
    reference = copy.deepcopy(model)
    use_fused_blocks(model)
    ids = torch.randint(0, 50, (2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, expected = model(ids).logits, reference(ids).logits
    torch.testing.assert_close(logits, expected)
    # The fused functions would mix bf16 activations with fp32 weights in backward ("expected m1 and m2 to have
    # the same dtype"): under autocast the original modules must run, forward and backward.
    logits.float().square().sum().backward()
    expected.float().square().sum().backward()
    for (name, param), ref in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref.grad, msg=name)
    double, ref_double = copy.deepcopy(model).double(), copy.deepcopy(reference).double()
    torch.testing.assert_close(double(ids).logits, ref_double(ids).logits)
    # A down projection that is not a plain linear layer (a LoRA adapter, ...) runs the original forward.
    mlp = model.model.layers[0].mlp
    mlp.down_proj = torch.nn.Sequential(mlp.down_proj)
    reference.model.layers[0].mlp.down_proj = torch.nn.Sequential(reference.model.layers[0].mlp.down_proj)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)


def test_only_llama_style_modules_are_switched():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.models.gemma.modeling_gemma import GemmaMLP, GemmaRMSNorm

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=30))
    assert use_fused_blocks(gpt2) == 0
    gemma_like = random_llama(vocab=50, layers=1).config
    gemma_like.hidden_act = "gelu_pytorch_tanh"
    assert use_fused_blocks(GemmaMLP(gemma_like), GemmaRMSNorm(32)) == 0  # (1 + w) norm, GELU MLP


@pytest.mark.parametrize("mode", [True, "selective"])
def test_fused_blocks_under_gradient_checkpointing_give_the_same_gradients(mode):
    from trlx.models.reference import checkpoint_kwargs

    plain = random_llama(vocab=50, layers=2)
    fused = copy.deepcopy(plain)
    use_fused_blocks(fused)
    for model in (plain, fused):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpoint_kwargs(mode))
        model.train()  # checkpointing is on in train mode only; the tiny Llama has no dropout
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(3, 9, 50, generator=torch.Generator().manual_seed(2))
    logits_p, grads_p, _ = _run_block(plain, ids, weights)
    logits_f, grads_f, _ = _run_block(fused, ids, weights)
    torch.testing.assert_close(logits_f, logits_p)
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_a_fused_model_pickles_and_copies_as_a_fused_model():
    import io

    model = random_llama(vocab=50, layers=1)
    use_fused_blocks(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the fused classes are made at run time: pickle cannot look them up by name
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    for twin in (loaded, copy.deepcopy(model)):
        assert type(twin.model.layers[0].mlp) is type(model.model.layers[0].mlp)
        assert type(twin.model.norm).__name__ == "FusedLlamaRMSNorm"
        assert twin.model.norm.weight is not model.model.norm.weight
        ids = torch.randint(0, 50, (2, 5))
        assert torch.equal(twin(ids).logits, model(ids).logits)


def test_a_hook_on_the_down_projection_still_runs():
    # The fast path reads down_proj's weight without calling the layer; a hooked layer (a probe, an adapter, the
    # pre-hooks trlx.models.policy.parameters_below records with) must see its call and keep its effect.
    model = random_llama(vocab=50, layers=1)
    reference = copy.deepcopy(model)
    use_fused_blocks(model)
    calls = []
    for lm in (model, reference):
        lm.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: calls.append(1) or o * 2)
    ids = torch.randint(0, 50, (2, 5))
    torch.testing.assert_close(model(ids).logits, reference(ids).logits)
    assert len(calls) == 2
