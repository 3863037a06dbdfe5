"""The CPU speed settings: the fused Adam kernel by default, and glibc keeping freed memory for reuse."""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import TINY_PROMPTS, build_word_tokenizer, good_word_reward, random_llama, tiny_ppo_config

from trlx.config import OptimizerConfig
from trlx.models.onednn import OneDNNLinear, onednn_available, use_onednn_linears
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


FREE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from trlx.memory import compact_freed_memory, retain_freed_memory

    assert (compact_freed_memory if sys.argv[1] == "compact" else retain_freed_memory)() is True

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    block = torch.ones(16 * 2**20)  # 64 MiB, touched
    later = torch.ones(1000)  # a small block allocated after it
    before = rss()
    del block
    print(before - rss())
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_compact_memory_returns_freed_large_blocks_and_retain_keeps_them():
    def released(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", FREE_SCRIPT, mode], capture_output=True, text=True, check=True)
        return int(run.stdout)

    # compact: the block was its own mapping, unmapped on free, so it cannot leave a hole in the heap.
    assert released("compact") >= 60 * 2**20
    # retain: it stays in the heap for the next tensors (no page faults), and RSS with it.
    assert released("retain") < 4 * 2**20


@pytest.mark.parametrize(
    ("field", "default", "word", "bad"),
    [("retain_cpu_memory", True, "compact", "small"), ("onednn_linear", "auto", "auto", "fast")],
)
def test_cpu_switches_take_true_false_or_their_word(field, default, word, bad):
    from trlx.config import ConfigError
    from trlx.data.default_configs import default_ppo_config

    assert getattr(default_ppo_config().train, field) == default
    for value in (True, False, word):
        assert getattr(default_ppo_config().evolve(**{f"train.{field}": value}).train, field) == value
    with pytest.raises(ConfigError, match=f"train.{field}"):
        default_ppo_config().evolve(**{f"train.{field}": bad})


# ---------------------------------------------------------------------------------------------- oneDNN linears
needs_onednn = pytest.mark.skipif(not onednn_available(), reason="this torch build has no oneDNN")


@needs_onednn
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_nn_linear_in_forward_and_both_gradients(bias):
    torch.manual_seed(0)
    plain = torch.nn.Linear(24, 40, bias=bias)
    fast = copy.deepcopy(plain)
    assert use_onednn_linears(fast) == 1 and type(fast) is OneDNNLinear
    x = torch.randn(3, 5, 24)
    weights = torch.randn(3, 5, 40)
    outs, grads = [], []
    for layer in (plain, fast):
        xi = x.clone().requires_grad_()
        out = layer(xi[:, 1:])  # a strided input, as from slicing
        (out * weights[:, 1:]).sum().backward()
        outs.append(out)
        grads.append([xi.grad] + [p.grad for p in layer.parameters()])
    # Against float64 too: oneDNN is as exact as BLAS, only the summation order differs.
    exact = torch.nn.functional.linear(
        x[:, 1:].double(), plain.weight.double(), None if not bias else plain.bias.double()
    )
    torch.testing.assert_close(outs[1].double(), exact, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    assert len(grads[1]) == (3 if bias else 2)
    for a, b in zip(grads[0], grads[1]):
        assert a.abs().sum() > 0
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_onednn_linears_keep_the_model_and_fall_back_outside_fp32_cpu():
    model = random_llama(vocab=50, layers=2, tie_word_embeddings=True)
    reference = copy.deepcopy(model)
    keys = list(model.state_dict())
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert use_onednn_linears(model) == linears > 0
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert list(model.state_dict()) == keys  # checkpoints are unchanged
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    ids = torch.randint(0, 50, (2, 7))
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-5, atol=1e-5)
    # A copy made afterwards computes with its own weights, not the original's.
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.lm_head.weight.mul_(2)
    assert not torch.allclose(twin(ids).logits, model(ids).logits)
    # Under bf16 autocast and in float64 it is nn.Linear itself.
    layer = model.model.layers[0].mlp.up_proj
    x = torch.randn(2, 3, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    assert layer.double()(x.double()).dtype == torch.float64


def test_auto_picks_onednn_on_amd_processors_only():
    from trlx.models.onednn import onednn_preferred

    assert onednn_preferred("AuthenticAMD") is onednn_available()
    assert onednn_preferred("GenuineIntel") is False
    assert onednn_preferred("") is False  # unknown (no /proc/cpuinfo, e.g. macOS on ARM): torch's own BLAS


@needs_onednn
@pytest.mark.parametrize("enabled", [True, False, "auto"])
def test_the_trainer_switches_policy_and_reference_kernels_by_config(tmp_path, enabled):
    from trlx.models.onednn import onednn_preferred
    from trlx.trlx import make_trainer

    tokenizer = build_word_tokenizer()
    path = tmp_path / "tiny-llama"
    model = random_llama(vocab=len(tokenizer), layers=2)
    model.config.eos_token_id, model.config.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    config = tiny_ppo_config(
        tmp_path / "ckpt",
        **{
            "model.model_path": str(path),
            "model.reference": "copy",
            "train.onednn_linear": enabled,
            "train.fused_blocks": bool(enabled),
        },
    )
    trainer = make_trainer(reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    policy_lm = trainer.accelerator.unwrap_model(trainer.policy).lm
    onednn = onednn_preferred() if enabled == "auto" else enabled
    expected = OneDNNLinear if onednn else torch.nn.Linear
    for lm in (policy_lm, trainer.reference.model):
        assert type(lm.model.layers[0].self_attn.q_proj) is expected
        assert type(lm.lm_head) is expected
        assert (type(lm.model.layers[0].mlp).__name__ == "FusedLlamaMLP") is bool(enabled)
        assert (type(lm.model.norm).__name__ == "FusedLlamaRMSNorm") is bool(enabled)
    assert trainer.reference.model.lm_head.weight is not policy_lm.lm_head.weight


NO_DEEPSPEED_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[2])
    from conftest import TINY_PROMPTS, good_word_reward, tiny_ppo_config

    from trlx.trlx import make_trainer

    config = tiny_ppo_config(Path(sys.argv[1]) / "ckpt", **{"model.model_path": sys.argv[3]})
    trainer = make_trainer(reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    rollout, _ = trainer.collect_rollout()
    trainer.update(next(iter(trainer.minibatches(rollout))))
    print("deepspeed" in sys.modules)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="DeepSpeed is not installed")
def test_a_run_without_deepspeed_does_not_import_it(tmp_path, tiny_gpt2_path):
    # accelerate's unwrap_model imports DeepSpeed whenever it is installed (with mlflow, pandas and pyarrow:
    # ~140 MB of resident memory); trlx unwraps without it unless the run uses DeepSpeed. (transformers'
    # save_pretrained still imports it, so the model is saved out here.)
    tests = str(Path(__file__).parents[1])
    script = [sys.executable, "-c", NO_DEEPSPEED_SCRIPT, str(tmp_path), tests, str(tiny_gpt2_path)]
    run = subprocess.run(script, capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "False"
