"""fp32 `nn.Linear` layers on CPU computed by oneDNN instead of torch's BLAS (`train.onednn_linear`).

torch's x86 CPU wheels run fp32 matmuls through Intel MKL, which on AMD processors takes a slow code path: on a
2-core AMD EPYC (AVX-512) VM, MKL reached ~210 GFLOP/s on a (752, 576) @ (576, 1536) block matmul and oneDNN,
also shipped in the wheel, ~460. On a 2-core Intel Xeon (AVX-512, AMX) VM it is the other way round: MKL was
faster on every W1 shape (forward ~12%, the weight gradient up to 40%, because oneDNN copies a transposed
operand), so `train.onednn_linear: auto` uses oneDNN on AMD processors only (`onednn_preferred`).

`OneDNNLinear` is `nn.Linear` with the forward and both backward matmuls done by
`torch.ops.mkldnn._linear_pointwise` (what inductor uses on CPU); the parameters, state dict and module tree are
unchanged, so checkpoints, LoRA, DDP and copies of the model see a plain `nn.Linear`. It falls back to
`nn.Linear.forward` for anything but fp32 CPU tensors outside autocast.
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

import torch
from torch import Tensor, nn


def onednn_available() -> bool:
    """Whether this torch build has oneDNN's linear kernel."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpuinfo_field(name: str) -> str:
    """The first `name` entry of /proc/cpuinfo (`vendor_id`, `model name`, ...); empty where there is none."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return ""
    return next((line.partition(":")[2].strip() for line in lines if line.split(":")[0].strip() == name), "")


def cpu_vendor() -> str:
    """The CPU vendor (`AuthenticAMD`, `GenuineIntel`, ...): /proc/cpuinfo's, else `platform.processor()`'s."""
    return cpuinfo_field("vendor_id") or platform.processor()


@functools.cache
def onednn_preferred(vendor: str | None = None) -> bool:
    """`train.onednn_linear: auto`: oneDNN where torch's BLAS (MKL) is measured slower, i.e. on AMD x86 processors
    (`vendor`, default this machine's, names AuthenticAMD); elsewhere torch's own BLAS (MKL on Intel, where it
    was the faster one)."""
    vendor = cpu_vendor() if vendor is None else vendor
    return "AuthenticAMD" in vendor and onednn_available()


def onednn_matmul_t(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """a @ b.T (+ bias) by oneDNN. a: (M, K), b: (N, K), either may be strided (a transpose), bias: (N,);
    returns (M, N)."""
    return torch.ops.mkldnn._linear_pointwise(a, b, bias, "none", [], "")


class _OneDNNLinearFn(torch.autograd.Function):
    """y = x @ W.T + b with oneDNN matmuls in forward and backward. x: (..., K), W: (N, K), b: (N,) or None."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # type: ignore[override]
        x2 = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(x2, weight)
        ctx.input_shape, ctx.has_bias = x.shape, bias is not None
        return onednn_matmul_t(x2, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # type: ignore[override]
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])  # (M, N)
        grad_x = onednn_matmul_t(g2, weight.t()).view(ctx.input_shape) if ctx.needs_input_grad[0] else None  # g @ W
        grad_w = onednn_matmul_t(g2.t(), x2.t()) if ctx.needs_input_grad[1] else None  # g.T @ x: (N, K)
        grad_b = g2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class OneDNNLinear(nn.Linear):
    """`nn.Linear` whose fp32 CPU forward and backward run on oneDNN (set by `use_onednn_linears`)."""

    def forward(self, input: Tensor) -> Tensor:
        fp32_cpu = input.dtype == torch.float32 and self.weight.dtype == torch.float32 and input.device.type == "cpu"
        if not fp32_cpu or self.weight.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return super().forward(input)
        return _OneDNNLinearFn.apply(input, self.weight, self.bias)


def use_onednn_linears(*modules: nn.Module | None) -> int:
    """Turn every plain `nn.Linear` inside `modules` into a `OneDNNLinear` (in place, by class); returns how many.
    Does nothing when this torch build lacks oneDNN."""
    if not onednn_available():
        return 0
    linears = [m for module in modules if module is not None for m in module.modules() if type(m) is nn.Linear]
    for layer in linears:
        layer.__class__ = OneDNNLinear
    return len(linears)
