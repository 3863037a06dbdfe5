"""`train.fused_blocks`: Llama RMSNorm and SwiGLU MLP with hand-written backward passes that save less."""

from __future__ import annotations

import contextlib
import copy
import functools
import weakref
from collections.abc import Iterator
from unittest import mock

import pytest
import torch
from conftest import random_llama, vocab_sized_allocations

from trlx.models import fused
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


@contextlib.contextmanager
def _saved_bytes(model) -> Iterator[dict[int, int]]:
    """Bytes autograd saves for backward while inside, by storage, parameters left out. Inside a fused decoder
    layer trlx's own saved-tensor hooks run instead of any outer one: what they keep is counted there."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def record(kept):
        if isinstance(kept, torch.Tensor) and kept.untyped_storage().data_ptr() not in params:
            saved[kept.untyped_storage().data_ptr()] = kept.untyped_storage().nbytes()
        return kept

    with (
        mock.patch.object(fused, "_pack", lambda outputs, t, pack=fused._pack: record(pack(outputs, t))),
        torch.autograd.graph.saved_tensors_hooks(record, lambda t: t),
    ):
        yield saved


def _run_block(model, ids, weights, **kwargs):
    """Logits and every parameter's gradient of a forward + weighted-sum backward, and the bytes autograd saved
    for backward outside the parameters (each storage counted once)."""
    model.zero_grad(set_to_none=True)
    with _saved_bytes(model) as saved:
        logits = model(ids, **kwargs).logits
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
    # 2 x (2 norms + 1 MLP + the block) + the final norm, and the model's attention function (grouped-query SDPA)
    assert use_fused_blocks(fused) == 10 and use_fused_blocks(fused) == 0
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
    # fused one only the input and 1/rms; in a fused block the linears after its two norms save a recipe instead
    # of their input (the norm's output); a plain MLP saves gate, silu(gate), up and their product, a fused one
    # gate and up. So the fused model saves 2 hidden-sized tensors per block norm and 1 for the final one less,
    # and two intermediate-sized ones per MLP: (9 * 32 + 2 * 2 * 64) floats per token, exactly.
    tokens, hidden, inter = 3 * 9, 32, 64
    assert saved_p - saved_f == (9 * hidden + 2 * 2 * inter) * tokens * 4


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
    # Only GPT-2's tied embedding and head (plain nn.Embedding and nn.Linear); its blocks are not Llama's
    assert use_fused_blocks(gpt2) == 2
    assert {type(m).__name__ for m in gpt2.modules()} & {"FusedEmbedding", "FusedLinear"} == {
        "FusedEmbedding",
        "FusedLinear",
    }
    untied = random_llama(vocab=50, layers=1)
    assert use_fused_blocks(untied.lm_head, untied.model.embed_tokens) == 0  # not tied: nothing to share
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

    model = random_llama(vocab=50, layers=1, tie_word_embeddings=True)
    use_fused_blocks(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)  # the fused classes are made at run time: pickle cannot look them up by name
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    for twin in (loaded, copy.deepcopy(model)):
        assert type(twin.model.layers[0].mlp) is type(model.model.layers[0].mlp)
        assert type(twin.model.norm).__name__ == "FusedLlamaRMSNorm"
        assert twin.model.norm.weight is not model.model.norm.weight
        assert twin.lm_head._trlx_tie is twin.model.embed_tokens._trlx_tie is not model.lm_head._trlx_tie
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


def _gradients(model, ids, weights) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    (model(ids).logits * weights).sum().backward()
    return {n: p.grad for n, p in model.named_parameters()}  # the next zero_grad sets new tensors


@pytest.mark.parametrize("onednn", [False, True] if onednn_available() else [False])
@pytest.mark.parametrize("batch", [3, 4])  # 27 head rows < 32 hidden: its weight gradient is made at the end
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_tied_embedding_and_head_make_one_vocab_sized_gradient(arch, batch, onednn):
    from conftest import random_gpt2

    plain = random_llama(vocab=3000, layers=1, tie_word_embeddings=True) if arch == "llama" else random_gpt2(3000, 1)
    plain.get_input_embeddings().padding_idx = 3  # as F.embedding: the padding row gets no gradient from it
    if onednn:
        use_onednn_linears(plain)
    fused = copy.deepcopy(plain)
    use_fused_blocks(fused)
    assert type(fused.get_output_embeddings()).__name__ == ("FusedOneDNNLinear" if onednn else "FusedLinear")
    ids = torch.randint(0, 3000, (batch, 9), generator=torch.Generator().manual_seed(1))
    ids[0, :4] = 3
    weights = torch.randn(batch, 9, 3000, generator=torch.Generator().manual_seed(2))
    assert torch.equal(fused(ids).logits, plain(ids).logits)  # the head's own kernel: bitwise the same
    grads, allocated = {}, {}
    for name, model in (("plain", plain), ("fused", fused)):
        step = functools.partial(
            lambda name, model: grads.update({name: _gradients(model, ids, weights)}), name, model
        )
        allocated[name] = vocab_sized_allocations(step, (3000, 32), exact=True)
    # autograd: the head's gradient, the embedding's dense one and (unless it can add in place) their sum;
    # fused: the head's only, which the embedding's rows are added to and .grad takes
    assert len(allocated["plain"]) >= 2 and len(allocated["fused"]) == 1, allocated
    grads_p, grads_f = ({n: g.clone() for n, g in grads[name].items()} for name in ("plain", "fused"))
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    # Gradients accumulate over backward passes as usual (micro-batches), and autograd.grad sees the same total.
    for model in (plain, fused):
        for half in (ids[:2], ids[2:]):
            (model(half).logits * weights[: len(half)]).sum().backward()
    weight = fused.get_input_embeddings().weight
    torch.testing.assert_close(weight.grad, plain.get_input_embeddings().weight.grad, rtol=1e-4, atol=1e-4)
    (grad,) = torch.autograd.grad((fused(ids).logits * weights).sum(), weight)
    tied = next(n for n, p in plain.named_parameters() if p.shape[0] == 3000)
    torch.testing.assert_close(grad, grads_p[tied], rtol=1e-4, atol=1e-4)


def test_a_tied_head_without_its_embedding_or_under_autocast_trains_as_before():
    plain = random_llama(vocab=50, layers=1, tie_word_embeddings=True)
    fused = copy.deepcopy(plain)
    use_fused_blocks(fused)
    ids = torch.randint(0, 50, (2, 5))
    for model in (plain, fused):
        model.zero_grad(set_to_none=True)
        embeds = torch.nn.functional.embedding(ids, model.get_input_embeddings().weight).detach()  # head unlinked
        model(inputs_embeds=embeds).logits.square().sum().backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):  # the head falls back; the embedding's own gradient adds
            model(ids).logits.float().square().sum().backward()
    torch.testing.assert_close(fused.lm_head.weight.grad, plain.lm_head.weight.grad, rtol=1e-3, atol=1e-3)


def test_grouped_query_attention_with_a_padding_mask_runs_in_sdpa_without_repeated_keys():
    plain = random_llama(vocab=50, layers=2)  # 4 query heads, 2 key/value heads of size 8
    fused = copy.deepcopy(plain)
    use_fused_blocks(fused)
    assert fused.config._attn_implementation == "trlx_cpu_gqa_sdpa" and plain.config._attn_implementation == "sdpa"
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[0, :2] = mask[2, :1] = 0  # left padding: transformers then passes a mask and, for SDPA, repeats k and v
    weights = torch.randn(3, 7, 50, generator=torch.Generator().manual_seed(2))
    repeated = copy.deepcopy(fused)
    repeated.set_attn_implementation("sdpa")  # fused blocks, transformers' attention: only the attention differs
    results = [_run_block(model, ids, weights, attention_mask=mask) for model in (repeated, fused)]
    (logits_p, grads_p, saved_p), (logits_f, grads_f, saved_f) = results
    assert torch.equal(logits_f, logits_p)
    for name, grad in grads_p.items():
        torch.testing.assert_close(grads_f[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    # SDPA keeps k and v with 2 heads instead of repeated to 4: 2 x (4 - 2) x 8 floats per token and layer
    assert saved_p - saved_f == 2 * (4 - 2) * 8 * 3 * 7 * 2 * 4
    # Decoding (one query token) is transformers' own path; greedy generation is unchanged.
    prompt = dict(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(fused.generate(**prompt), plain.generate(**prompt))


def test_a_block_keeps_no_norm_output_alive_and_saves_one_edited_in_place():
    plain = random_llama(vocab=50, layers=1)
    fused = copy.deepcopy(plain)
    use_fused_blocks(fused)
    ids = torch.randint(0, 50, (2, 5), generator=torch.Generator().manual_seed(1))
    norms = [fused.model.layers[0].input_layernorm, fused.model.layers[0].post_attention_layernorm]
    refs = []
    handles = [norm.register_forward_hook(lambda m, i, out: refs.append(weakref.ref(out))) for norm in norms]
    logits = fused(ids).logits
    assert len(refs) == 2 and all(ref() is None for ref in refs)  # the linears after them saved recipes
    logits.sum().backward()
    for handle in handles:
        handle.remove()
    # A hook that edits a norm's output in place (activation steering): backward must see the edited values, so
    # that output is saved itself rather than recomputed from the norm's input.
    grads = []
    for model in (plain, fused):
        model.zero_grad(set_to_none=True)
        model.model.layers[0].post_attention_layernorm.register_forward_hook(lambda m, i, out: out.mul_(3.0))
        model(ids).logits.square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_an_untied_head_takes_its_own_gradient():
    model = random_llama(vocab=50, layers=1, tie_word_embeddings=True)
    use_fused_blocks(model)
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())  # untied after fusing
    reference = copy.deepcopy(model)
    reference.lm_head.__class__, reference.model.embed_tokens.__class__ = torch.nn.Linear, torch.nn.Embedding
    ids = torch.randint(0, 50, (2, 5))
    for lm in (model, reference):
        lm(ids).logits.square().sum().backward()
    for (name, param), ref in zip(model.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(param.grad, ref.grad, msg=name)
