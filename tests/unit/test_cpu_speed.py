"""The CPU speed settings: the fused Adam kernel by default, and glibc keeping freed memory for reuse."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from trlx.config import OptimizerConfig
from trlx.trainers.optim import make_optimizer


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((7, 5), (5,), (3, 4, 2))]


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_adam_is_fused_by_default_and_steps_like_the_per_tensor_loop(name):
    kwargs = {"lr": 1e-2, "betas": [0.9, 0.95], "weight_decay": 0.1}
    fused, loop = _params(0), _params(0)
    opt = make_optimizer(OptimizerConfig(name=name, kwargs=kwargs), fused)
    ref = make_optimizer(OptimizerConfig(name=name, kwargs={**kwargs, "foreach": False}), loop)
    assert opt.defaults["fused"] is True
    assert not ref.defaults.get("fused")  # an explicit foreach/fused choice is the user's
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        grads = [torch.randn(p.shape, generator=g) for p in fused]
        for a, b, grad in zip(fused, loop, grads):
            a.grad, b.grad = grad.clone(), grad.clone()
        opt.step()
        ref.step()
    for a, b, start in zip(fused, loop, _params(0)):
        assert (a - start).abs().max() > 1e-3  # the steps moved the parameters
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_sgd_is_not_fused():
    assert not make_optimizer(OptimizerConfig(name="sgd", kwargs={"lr": 0.1}), _params(0)).defaults.get("fused")


STEP_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    from trlx.memory import retain_freed_memory

    if sys.argv[1] == "retain":
        assert retain_freed_memory() is True

    def step():  # a training step's pattern: activations, then a big gradient and a sum made from it, all freed
        activations = [torch.ones(4 * 2**20) for _ in range(8)]  # 8 x 16 MiB
        gradient = torch.zeros(28 * 2**20)  # 112 MiB, like SmolLM2's tied embedding
        total = gradient + 1
        del activations, gradient
        return total.sum()

    step(), step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 5)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_retained_memory_is_reused_without_new_page_faults():
    # Under glibc's defaults every large block is a fresh mmap whose pages fault in (zero-filled) on first
    # touch, step after step; with the memory retained the steps after the first reuse pages already mapped.
    def faults_per_step(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", STEP_SCRIPT, mode], capture_output=True, text=True, check=True)
        return int(run.stdout)

    pages = (8 * 16 + 112 + 112) * 2**20 // 4096  # what one step allocates
    default = faults_per_step("default")
    assert default > pages // 2
    # Not 0: glibc's heap still fragments (aligned blocks rarely fit a freed one exactly); 0-13% measured.
    assert faults_per_step("retain") < min(default, pages) // 4
