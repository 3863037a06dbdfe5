"""Llama-family RMSNorm and SwiGLU MLP with hand-written backward passes that store fewer activations
(`train.fused_blocks`).

Autograd keeps every intermediate an op needs for its gradient. For a Llama block that is most of the
activation memory of a PPO update: an RMSNorm stores its input, the normalised input and the scaled output; an
MLP `down(silu(gate) * up)` stores `gate`, `silu(gate)`, `up` and the product. On SmolLM2-135M at 16 x 46
tokens that is 1.03 GB for the 30 blocks. The functions here store only what the gradient cannot be cheaply
recomputed from: the norm's input and its reciprocal RMS, the MLP's `gate` and `up` (the product and the
activation are recomputed element-wise in backward, no matmul is repeated). That is 0.67 GB for the same batch.

Forward results are bitwise those of the modules they replace (the same ops in the same order, and the same
matmul kernel for `down_proj`), so sampling, scoring and the update see the same numbers. Modules are switched
by class, like `trlx.models.onednn`: parameters, state dict and module tree are unchanged, and a pickled or
deep-copied module is the fused one again. A module qualifies
when its `forward` is exactly Llama's (transformers copies it into Mistral, Qwen2/3, Granite, SmolLM3, ...)
and, for the MLP, its activation is SiLU. Anything but fp32 tensors outside autocast, or a `down_proj` that is
not a plain linear layer (a LoRA adapter, say) or carries hooks, runs the original forward.
"""

from __future__ import annotations

import functools
from types import CodeType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import SiLUActivation
from transformers.models.llama.modeling_llama import LlamaMLP, LlamaRMSNorm

from trlx.models.onednn import OneDNNLinear, onednn_matmul_t


class _RMSNormFn(torch.autograd.Function):
    """y = w * x / sqrt(mean(x^2) + eps) over the last dim. x: (..., D), w: (D,); saves x and 1/rms: (..., 1)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (x * rstd)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight, rstd = ctx.saved_tensors
        x_hat = x * rstd
        grad_w = (grad * x_hat).reshape(-1, x.shape[-1]).sum(0) if ctx.needs_input_grad[1] else None
        grad_x_hat = grad * weight
        # d(x * rstd)/dx = rstd * (I - x_hat x_hat^T / D): the normalisation removes the component along x_hat.
        grad_x = rstd * (grad_x_hat - x_hat * (grad_x_hat * x_hat).mean(-1, keepdim=True))
        return (grad_x if ctx.needs_input_grad[0] else None), grad_w, None


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
        return _RMSNormFn.apply(hidden_states, self.weight, self.variance_epsilon)


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
        if type(down) not in (nn.Linear, OneDNNLinear) or _has_hooks(down) or not _fast_path(x, down.weight):
            return super().forward(x)  # type: ignore[misc]
        onednn = type(down) is OneDNNLinear and x.device.type == "cpu"
        return _SwiGLUDownFn.apply(self.gate_proj(x), self.up_proj(x), down.weight, down.bias, onednn)


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
    if _same_code(code, LlamaMLP.forward.__code__) and isinstance(
        getattr(module, "act_fn", None), (SiLUActivation, nn.SiLU)
    ):
        return _FusedSwiGLU
    return None


def use_fused_blocks(*modules: nn.Module | None) -> int:
    """Switch every Llama-style RMSNorm and SwiGLU MLP inside `modules` to its fused twin (in place, by class);
    returns how many were switched."""
    switched = 0
    for module in modules:
        for sub in [] if module is None else list(module.modules()):
            mixin = _mixin_for(sub)
            if mixin is not None:
                sub.__class__ = _fused_class(type(sub), mixin)
                switched += 1
    return switched
