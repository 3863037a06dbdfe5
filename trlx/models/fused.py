"""Leaner training forward and backward passes for transformers' standard blocks (`train.fused_blocks`).

Autograd keeps every intermediate an op needs for its gradient. For a Llama block that is most of the
activation memory of a PPO update: an RMSNorm stores its input, the normalised input and the scaled output; an
MLP `down(silu(gate) * up)` stores `gate`, `silu(gate)`, `up` and the product; with a padding mask,
transformers repeats grouped keys and values to every query head before SDPA, and the repeats are stored. On
SmolLM2-135M at 16 x 46 tokens (4 rows left-padded) that is 1.06 GB for the 30 blocks. Here a block stores
0.52 GB, and nothing is recomputed but element-wise products and the norms' outputs:

- RMSNorm and the SwiGLU MLP have hand-written backward passes that save the norm's input and its reciprocal
  RMS, and the MLP's `gate` and `up` (`_RMSNormFn`, `_SwiGLUDownFn`).
- Inside a block, the linear layers after each norm save a recipe for their input (the norm's output) instead
  of the tensor: in backward it is recomputed from what the norm saved anyway (`_FusedDecoderLayer`).
- Grouped-query attention runs inside torch's CPU flash kernel, which takes the padding mask and the grouped
  heads together, so keys and values are stored unrepeated (`_cpu_gqa_sdpa`).
- An LM head tied to the input embedding (GPT-2, SmolLM2, ...) makes one (V, H) gradient per step instead of
  three: the head's, the embedding's dense one and autograd's sum (`_TiedHeadFn`, `_TiedEmbeddingFn`).

Forward results are bitwise those of the modules they replace (the same ops in the same order, the same
kernels), so sampling, scoring and the update see the same numbers; gradients agree up to float rounding.
Modules are switched by class, like `trlx.models.onednn`: parameters, state dict and module tree are unchanged,
and a pickled or deep-copied module is the fused one again; the attention is switched by the model's
`attn_implementation` (not saved with it). A norm or MLP qualifies when its `forward` is exactly Llama's
(transformers copies it into Mistral, Qwen2/3, Granite, SmolLM3, ...) and, for the MLP, its activation is SiLU.
Anything but fp32 tensors outside autocast, or a `down_proj` that is not a plain linear layer (a LoRA adapter,
say) or carries hooks, runs the original forward; a block under activation checkpointing runs as before.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from types import CodeType
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.activations import SiLUActivation
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from trlx.models.onednn import OneDNNLinear, onednn_matmul_t


class _RMSNormFn(torch.autograd.Function):
    """y = w * x / sqrt(mean(x^2) + eps) over the last dim. x: (..., D), w: (D,) -> (y, 1/rms: (..., 1)).

    Saves x and 1/rms (returned too, without gradient, so that `_NormRecipe` can recompute y from them)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        ctx.mark_non_differentiable(rstd)
        return _normed(x, weight, rstd), rstd

    @staticmethod
    def backward(ctx: Any, grad: Tensor, _grad_rstd: Tensor | None) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight, rstd = ctx.saved_tensors
        x_hat = x * rstd
        grad_w = (grad * x_hat).reshape(-1, x.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
        grad_x_hat = grad * weight
        # d(x * rstd)/dx = rstd * (I - x_hat x_hat^T / D): the normalisation removes the component along x_hat.
        grad_x = rstd * (grad_x_hat - x_hat * (grad_x_hat * x_hat).mean(-1, keepdim=True))
        return (grad_x if ctx.needs_input_grad[0] else None), grad_w, None


def _normed(x: Tensor, weight: Tensor, rstd: Tensor) -> Tensor:
    return weight * (x * rstd)  # the forward's exact ops, so a recomputed output is bitwise the same


class _NormRecipe:
    """How to recompute an RMSNorm output from what the norm saves anyway (its input and 1/rms). A block's two
    norm outputs are saved by the linear layers they feed (q/k/v, gate/up); inside `_FusedDecoderLayer` those
    layers save this instead, and the first of them to run backward recomputes the output for all of them."""

    def __init__(self, x: Tensor, weight: Tensor, rstd: Tensor) -> None:
        self.inputs = (x, weight, rstd)
        self.output: Tensor | None = None

    def recompute(self) -> Tensor:
        if self.output is None:
            with torch.no_grad():
                self.output = _normed(*self.inputs)
        return self.output


class _NormOutput(NamedTuple):
    recipe: _NormRecipe
    tensor: Tensor  # held until the layer returns, so that no other tensor can take its address meanwhile
    version: int  # changed by an in-place edit (a steering hook, say): then the tensor itself is saved


# Norm outputs of the decoder layer now running forward, by storage address. Set by `_FusedDecoderLayer`, and
# emptied when the layer returns: the pack hook lives as long as what it packed, and must not hold them.
_NORM_OUTPUTS: ContextVar[dict[int, _NormOutput] | None] = ContextVar("trlx_norm_outputs", default=None)


def _pack(outputs: dict[int, _NormOutput], t: Tensor) -> Any:
    known = outputs.get(t.untyped_storage().data_ptr())
    if known is None or t.dtype != known.tensor.dtype or t._version != known.version:
        return t.detach()  # detached: a saved output returned as itself would make a cycle through its grad_fn
    return known.recipe, t.shape, t.stride(), t.storage_offset()  # the output or a view of it (a linear's input)


def _unpack(packed: Any) -> Tensor:
    if isinstance(packed, Tensor):
        return packed
    recipe, shape, stride, offset = packed
    return recipe.recompute().as_strided(shape, stride, offset)


def _matmul_t(a: Tensor, b: Tensor, onednn: bool, bias: Tensor | None = None) -> Tensor:
    """a @ b.T (+ bias): a (M, K), b (N, K) -> (M, N), by oneDNN or by torch (as the replaced layer would)."""
    return onednn_matmul_t(a, b, bias) if onednn else F.linear(a, b, bias)


class _SwiGLUDownFn(torch.autograd.Function):
    """out = (silu(gate) * up) @ W.T + b. gate, up: (..., I), W: (H, I), b: (H,) or None -> (..., H).

    Saves gate, up and W; silu(gate) and the product are recomputed in backward."""

    @staticmethod
    def forward(ctx: Any, gate: Tensor, up: Tensor, weight: Tensor, bias: Tensor | None, onednn: bool) -> Tensor:
        hidden = F.silu(gate) * up
        ctx.save_for_backward(gate, up, weight)
        ctx.onednn, ctx.has_bias = onednn, bias is not None
        out = _matmul_t(hidden.reshape(-1, hidden.shape[-1]), weight, onednn, bias)
        return out.view(*hidden.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        gate, up, weight = ctx.saved_tensors
        sig = torch.sigmoid(gate)
        silu = gate * sig
        grad_2d = grad.reshape(-1, grad.shape[-1])  # (M, H)
        grad_w = None
        if ctx.needs_input_grad[2]:
            hidden = (silu * up).reshape(-1, up.shape[-1])
            grad_w = _matmul_t(grad_2d.t(), hidden.t(), ctx.onednn)  # grad.T @ hidden: (H, I)
        grad_b = grad_2d.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        grad_hidden = _matmul_t(grad_2d, weight.t(), ctx.onednn).view(up.shape)  # grad @ W: (..., I)
        grad_up = grad_hidden * silu
        grad_gate = grad_hidden * up * (sig * (1 + gate * (1 - sig)))  # silu'(g) = s + g s (1 - s)
        return grad_gate, grad_up, grad_w, grad_b, None


def _fast_path(x: Tensor, weight: Tensor) -> bool:
    return x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type)


_PLAIN_LINEARS = (nn.Linear, OneDNNLinear)  # layers whose weight the fused functions may multiply by themselves


def _on_onednn(layer: nn.Module, x: Tensor) -> bool:
    """Whether `layer` (one of `_PLAIN_LINEARS`) computes `x` with oneDNN, so a fused function must as well."""
    return isinstance(layer, OneDNNLinear) and x.device.type == "cpu"


class _Fused:
    """What the fused mixins share: pickling as the plain module, fused again on load (the fused classes are
    made at run time, so pickle could not find them by name; `torch.save(model)` and `copy.deepcopy` use this)."""

    _unfused: type  # the class the mixin was put in front of, and the mixin (both set by `_fused_class`)
    _mixin: type

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        plain = object.__new__(self._unfused)
        plain.__dict__ = self.__dict__  # the same parameters and buffers, pickled as the plain class's
        return _fuse, (plain, self._mixin)


def _fuse(module: nn.Module, mixin: type) -> nn.Module:
    module.__class__ = _fused_class(type(module), mixin)
    return module


class _FusedRMSNorm(_Fused):
    """Mixed in before a Llama-style RMSNorm class (`weight`, `variance_epsilon`)."""

    weight: nn.Parameter
    variance_epsilon: float

    def forward(self, hidden_states: Tensor) -> Tensor:
        if not _fast_path(hidden_states, self.weight):
            return super().forward(hidden_states)  # type: ignore[misc]
        out, rstd = _RMSNormFn.apply(hidden_states, self.weight, self.variance_epsilon)
        outputs = _NORM_OUTPUTS.get()
        if outputs is not None and out.requires_grad:
            recipe = _NormRecipe(hidden_states, self.weight, rstd)
            outputs[out.untyped_storage().data_ptr()] = _NormOutput(recipe, out, out._version)
        return out


class _FusedDecoderLayer(_Fused):
    """Mixed in before a transformers decoder layer whose norms are fused: while it runs forward with autograd
    recording, the linear layers save a recipe for their input instead of a block's two norm outputs
    (`_NormRecipe`). Under activation checkpointing the layer runs as before (checkpointing saves nothing)."""

    gradient_checkpointing: bool

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled() or (self.gradient_checkpointing and self.training):
            return super().forward(*args, **kwargs)  # type: ignore[misc]
        outputs: dict[int, _NormOutput] = {}
        token = _NORM_OUTPUTS.set(outputs)
        try:
            with torch.autograd.graph.saved_tensors_hooks(functools.partial(_pack, outputs), _unpack):
                return super().forward(*args, **kwargs)  # type: ignore[misc]
        finally:
            _NORM_OUTPUTS.reset(token)
            outputs.clear()


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


class _FusedSwiGLU(_Fused):
    """Mixed in before a Llama-style MLP class (`gate_proj`, `up_proj`, `down_proj`, SiLU `act_fn`)."""

    gate_proj: nn.Module
    up_proj: nn.Module
    down_proj: nn.Module

    def forward(self, x: Tensor) -> Tensor:
        down = self.down_proj
        # The fast path uses down_proj's weight without calling it, so a hook on it (a probe, an adapter) would
        # silently not run: such a layer takes the original forward, as does anything but a plain linear layer.
        if type(down) not in _PLAIN_LINEARS or _has_hooks(down) or not _fast_path(x, down.weight):
            return super().forward(x)  # type: ignore[misc]
        return _SwiGLUDownFn.apply(self.gate_proj(x), self.up_proj(x), down.weight, down.bias, _on_onednn(down, x))


class _HeadGrad:
    """One forward's link from a tied LM head to the input embedding: the head's weight gradient waits here for
    the embedding's backward, which adds its rows to it in place.

    The head's gradient grad.T @ x is (V, H); when the head saw fewer than H positions, its input gradient
    (N, V) is the smaller of the two, so that is kept instead and multiplied out only in the embedding's
    backward, when the blocks' activations are freed (PPO scores only the response positions: N = B x R)."""

    __slots__ = ("grad", "later")

    def __init__(self) -> None:
        self.grad: Tensor | None = None
        self.later: list[tuple[Tensor, Tensor, bool]] = []

    def add(self, grad_2d: Tensor, x_2d: Tensor, onednn: bool) -> None:
        """grad_2d: (N, V) gradient of the head's output, x_2d: (N, H) its input."""
        if grad_2d.shape[0] < x_2d.shape[1]:
            self.later.append((grad_2d, x_2d, onednn))
        else:
            self._accumulate(grad_2d, x_2d, onednn)

    def _accumulate(self, grad_2d: Tensor, x_2d: Tensor, onednn: bool) -> None:
        grad_w = _matmul_t(grad_2d.t(), x_2d.t(), onednn)  # grad.T @ x: (V, H), laid out as the weight
        self.grad = grad_w if self.grad is None else self.grad.add_(grad_w)

    def take(self) -> Tensor | None:
        """The head's whole (V, H) weight gradient (a fresh tensor), or None if it had none; empties the box."""
        later, self.later = self.later, []
        for pending in later:
            self._accumulate(*pending)
        grad, self.grad = self.grad, None
        return grad


class _TiedEmbeddingFn(torch.autograd.Function):
    """F.embedding(ids, W) for a weight the LM head shares. ids: (...), W: (V, H) -> ((..., H), link).

    `link` is an empty tensor the tied head takes as an input, so autograd runs this backward after the head's
    and within the same pass. The head's weight gradient arrives through `box` (`_HeadGrad`) and the
    embedding's rows are index-added to it in place: the tied weight then has one (V, H) gradient per step
    instead of three (the head's, the embedding's dense one, and autograd's sum of the two)."""

    @staticmethod
    def forward(ctx: Any, ids: Tensor, weight: Tensor, padding_idx: int | None, box: _HeadGrad) -> Any:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(ids)
        ctx.padding_idx, ctx.box, ctx.weight_shape = padding_idx, box, weight.shape
        return F.embedding(ids, weight, padding_idx), weight.new_empty(0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor | None, _link: Tensor | None) -> tuple[Tensor | None, ...]:
        (ids,) = ctx.saved_tensors
        grad_w = ctx.box.take()
        if grad is not None:
            rows, index = grad.reshape(-1, grad.shape[-1]), ids.reshape(-1)
            if ctx.padding_idx is not None:  # as F.embedding: the padding row gets no gradient
                keep = index != ctx.padding_idx
                rows, index = rows[keep], index[keep]
            if grad_w is None:
                grad_w = rows.new_zeros(ctx.weight_shape)
            grad_w.index_add_(0, index, rows)
        return None, grad_w, None, None


class _TiedHeadFn(torch.autograd.Function):
    """x @ W.T for the LM head tied to the input embedding, by torch or oneDNN as the head's own layer would.
    x: (..., H), W: (V, H) -> (..., V).

    Its weight gradient grad.T @ x goes to the embedding's backward through `box` (`_HeadGrad`) rather than to
    W directly; `link` orders the two."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, link: Tensor, box: _HeadGrad, onednn: bool) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.box, ctx.onednn = box, onednn
        return _matmul_t(x.reshape(-1, x.shape[-1]), weight, onednn).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad_2d, x_2d = grad.reshape(-1, grad.shape[-1]), x.reshape(-1, x.shape[-1])
        grad_x = _matmul_t(grad_2d, weight.t(), ctx.onednn).view(x.shape) if ctx.needs_input_grad[0] else None
        ctx.box.add(grad_2d, x_2d, ctx.onednn)
        return grad_x, None, grad.new_empty(0), None, None


class _Tie:
    """Shared by a tied embedding and head: the link of the latest training forward, until the head takes it."""

    def __init__(self) -> None:
        self.pending: tuple[Tensor, _HeadGrad, Tensor] | None = None  # (link, box, the embedding's weight)

    def __getstate__(self) -> dict[str, Any]:
        return {"pending": None}  # a link belongs to one forward's graph: never copied or pickled


def _trains_in_fp32(weight: Tensor) -> bool:
    return torch.is_grad_enabled() and weight.requires_grad and _fast_path(weight, weight)


class _FusedTiedEmbedding(_Fused):
    """Mixed in before `nn.Embedding` when the LM head shares its weight (`_trlx_tie`)."""

    weight: nn.Parameter
    padding_idx: int | None
    _trlx_tie: _Tie

    def forward(self, ids: Tensor) -> Tensor:
        self._trlx_tie.pending = None
        if not _trains_in_fp32(self.weight):
            return super().forward(ids)  # type: ignore[misc]
        box = _HeadGrad()
        out, link = _TiedEmbeddingFn.apply(ids, self.weight, self.padding_idx, box)
        self._trlx_tie.pending = (link, box, self.weight)
        return out


class _FusedTiedHead(_Fused):
    """Mixed in before the `nn.Linear` LM head (no bias) that shares the input embedding's weight."""

    weight: nn.Parameter
    _trlx_tie: _Tie

    def forward(self, x: Tensor) -> Tensor:
        pending, self._trlx_tie.pending = self._trlx_tie.pending, None
        # No linked embedding, untied since, or not training in fp32: the head's own forward.
        linked = pending is not None and pending[2] is self.weight
        if not linked or not _trains_in_fp32(self.weight) or x.dtype != self.weight.dtype:
            return super().forward(x)  # type: ignore[misc]
        link, box, _ = pending
        return _TiedHeadFn.apply(x, self.weight, link, box, _on_onednn(self, x))


def _tie_embedding_and_head(module: nn.Module) -> int:
    """Switch a causal LM's input embedding and LM head to `_FusedTiedEmbedding`/`_FusedTiedHead` when they share
    one weight and are plain `nn.Embedding` and `nn.Linear` (or `OneDNNLinear`) layers (no bias, max_norm, sparse
    or frequency scaling)."""
    get_in, get_out = getattr(module, "get_input_embeddings", None), getattr(module, "get_output_embeddings", None)
    if get_in is None or get_out is None:
        return 0
    try:
        embedding, head = get_in(), get_out()
    except (NotImplementedError, AttributeError):
        return 0
    if not (
        type(embedding) is nn.Embedding
        and type(head) in _PLAIN_LINEARS
        and head.bias is None
        and embedding.weight is head.weight
        and embedding.max_norm is None
        and not embedding.scale_grad_by_freq
        and not embedding.sparse
    ):
        return 0
    tie = _Tie()
    for sub, mixin in ((embedding, _FusedTiedEmbedding), (head, _FusedTiedHead)):
        sub._trlx_tie = tie
        _fuse(sub, mixin)
    return 2


GQA_SDPA = "trlx_cpu_gqa_sdpa"
SDPA_TAKES_GQA = torch.__version__ >= (2, 5)  # SDPA's enable_gqa came with torch 2.5 (a TorchVersion compares)


def _cpu_gqa_sdpa(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' SDPA attention, except that on CPU grouped-query attention runs inside SDPA (`enable_gqa`)
    even with a padding mask. query: (B, Hq, T, D), key/value: (B, Hkv, S, D) -> ((B, T, Hq, D), None).

    transformers repeats the keys and values Hq/Hkv times first whenever there is a mask (CUDA's flash kernel
    cannot take both), and autograd then stores the repeated copies: 2 of a Llama block's ~8 (B, T, H)
    activations. torch's CPU flash kernel takes the mask and the grouped heads together, with the same forward
    result. Anything else (decoding, a cache longer than the query, position bias, another device) is
    transformers' own function."""
    if (
        getattr(module, "num_key_value_groups", 1) == 1
        or query.device.type != "cpu"
        or query.shape[2] == 1
        or kwargs.get("position_bias") is not None
        or kwargs.get("softcap") is not None
        or (attention_mask is None and key.shape[2] != query.shape[2])
    ):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, is_causal, **kwargs)
    causal = attention_mask is None and (is_causal if is_causal is not None else getattr(module, "is_causal", True))
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=True,
    )
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(GQA_SDPA, _cpu_gqa_sdpa)
AttentionMaskInterface.register(GQA_SDPA, sdpa_mask)


def _use_gqa_sdpa(module: nn.Module) -> int:
    """Switch a transformers model that uses SDPA with grouped-query attention to `_cpu_gqa_sdpa`."""
    config = getattr(module, "config", None)
    if (
        not SDPA_TAKES_GQA
        or not isinstance(module, PreTrainedModel)
        or not getattr(module, "_supports_attention_backend", False)  # code that may test for "sdpa" by name
        or getattr(config, "_attn_implementation", None) != "sdpa"
    ):
        return 0
    text = config.get_text_config()
    heads, kv_heads = getattr(text, "num_attention_heads", None), getattr(text, "num_key_value_heads", None)
    if not heads or not kv_heads or kv_heads == heads:
        return 0
    module.set_attn_implementation(GQA_SDPA)
    return 1


def _same_code(a: CodeType, b: CodeType) -> bool:
    return (a.co_code, a.co_names, a.co_consts, a.co_varnames) == (b.co_code, b.co_names, b.co_consts, b.co_varnames)


@functools.cache
def _fused_class(cls: type, mixin: type) -> type:
    return type(f"Fused{cls.__name__}", (mixin, cls), {"__module__": cls.__module__, "_unfused": cls, "_mixin": mixin})


def _mixin_for(module: nn.Module) -> type | None:
    forward = getattr(type(module), "forward", None)
    code = getattr(forward, "__code__", None)
    if code is None or isinstance(module, _Fused):
        return None
    if _same_code(code, LlamaRMSNorm.forward.__code__):
        return _FusedRMSNorm
    if isinstance(module, GradientCheckpointingLayer) and any(
        _mixin_for(child) is _FusedRMSNorm or isinstance(child, _FusedRMSNorm) for child in module.children()
    ):
        return _FusedDecoderLayer
    if _same_code(code, LlamaMLP.forward.__code__) and isinstance(
        getattr(module, "act_fn", None), (SiLUActivation, nn.SiLU)
    ):
        return _FusedSwiGLU
    return None


def use_fused_blocks(*modules: nn.Module | None) -> int:
    """Switch every Llama-style RMSNorm, SwiGLU MLP and decoder layer inside `modules` to its fused twin, a tied
    embedding and LM head to `_FusedTiedEmbedding`/`_FusedTiedHead` (in place, by class), and a grouped-query
    SDPA model to `_cpu_gqa_sdpa`; returns how many were switched."""
    switched = 0
    for module in modules:
        for sub in [] if module is None else list(module.modules()):
            mixin = _mixin_for(sub)
            if mixin is not None:
                _fuse(sub, mixin)
                switched += 1
            switched += _tie_embedding_and_head(sub) + _use_gqa_sdpa(sub)
    return switched
