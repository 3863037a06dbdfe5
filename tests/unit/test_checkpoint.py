"""Checkpoint building blocks: state codecs, RNG capture, the `latest` pointer, pruning, atomic writes."""

import json
import random

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import trlx.checkpoint
from trlx.checkpoint import (
    CheckpointError,
    check_same_model,
    checkpoint_step,
    join_tensors,
    load_policy_weights,
    load_tensor_file,
    prune_checkpoints,
    read_latest,
    resolve_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    split_tensors,
    truncate_lines,
    write_latest,
)
from trlx.models.policy import PolicyWithValueHead, load_causal_lm


def adamw_after_steps(params, steps=3):
    optimizer = torch.optim.AdamW(params, lr=0.1, betas=(0.8, 0.9))
    for _ in range(steps):
        for p in params:
            p.grad = torch.sin(p.detach() * 3.0 + 1.0)
        optimizer.step()
    return optimizer


def test_optimizer_state_survives_json_and_safetensors_exactly(tmp_path):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    optimizer = adamw_after_steps(params)
    tensors = {}
    structure = json.loads(json.dumps(split_tensors(optimizer.state_dict(), "optimizer", tensors)))
    trlx.checkpoint.save_file(tensors, str(tmp_path / "opt.safetensors"))

    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restored = torch.optim.AdamW(copies, lr=0.5)
    restored.load_state_dict(join_tensors(structure, trlx.checkpoint.load_file(str(tmp_path / "opt.safetensors"))))
    assert restored.param_groups[0]["betas"] == (0.8, 0.9)
    # Int-keyed state must come back under int keys, or torch silently drops the Adam moments and the next
    # step differs.
    for p, q in zip(params, copies):
        p.grad, q.grad = torch.cos(p.detach()), torch.cos(q.detach())
    optimizer.step()
    restored.step()
    assert all(torch.equal(p, q) for p, q in zip(params, copies))


def test_split_tensors_refuses_what_json_cannot_hold():
    with pytest.raises(TypeError, match="cannot store optimizer.x of type object"):
        split_tensors({"x": object()}, "optimizer", {})


def test_rng_state_roundtrip_python_numpy_torch(tmp_path):
    tensors, metadata = rng_state()
    path = tmp_path / "rng.safetensors"
    trlx.checkpoint.save_file(tensors, str(path), metadata={"json": json.dumps(metadata)})
    expected = (random.random(), float(np.random.rand()), torch.rand(3), random.gauss(0, 1), np.random.randn())
    random.random(), np.random.rand(), torch.rand(5)  # move every generator on
    set_rng_state(*load_tensor_file(path))
    again = (random.random(), float(np.random.rand()), torch.rand(3), random.gauss(0, 1), np.random.randn())
    assert expected[:2] == again[:2] and torch.equal(expected[2], again[2]) and expected[3:] == again[3:]


def test_latest_pointer_and_pruning_keep_newest_best_and_latest(tmp_path):
    for step in (1, 2, 3, 4):
        (tmp_path / f"checkpoint_{step:05d}").mkdir()
    (tmp_path / "best_checkpoint").mkdir()
    assert read_latest(tmp_path) is None
    write_latest(tmp_path, tmp_path / "checkpoint_00004")
    assert read_latest(tmp_path) == tmp_path / "checkpoint_00004"
    assert [p.name for p in prune_checkpoints(tmp_path, keep=2)] == ["checkpoint_00001", "checkpoint_00002"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "best_checkpoint",
        "checkpoint_00003",
        "checkpoint_00004",
    ]
    # A run resumed from an older checkpoint points `latest` below newer folders: it is kept on top of the N.
    write_latest(tmp_path, "checkpoint_00003")
    assert prune_checkpoints(tmp_path, keep=1) == []
    assert checkpoint_step("best_checkpoint") is None and checkpoint_step("x/checkpoint_00012") == 12
    assert not list(tmp_path.glob(".latest*"))  # the pointer's temporary file was renamed away


def test_resolve_checkpoint_names_the_field(tmp_path):
    with pytest.raises(CheckpointError, match=r"train\.resume_from_checkpoint=latest but .*latest does not exist"):
        resolve_checkpoint(tmp_path, "latest")
    with pytest.raises(CheckpointError, match=r"train\.resume_from_checkpoint: checkpoint folder .* does not exist"):
        resolve_checkpoint(tmp_path, str(tmp_path / "nope"))
    (tmp_path / "checkpoint_00001").mkdir()
    (tmp_path / "checkpoint_00001" / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a complete trlx checkpoint .*optimizer.safetensors"):
        resolve_checkpoint(tmp_path, str(tmp_path / "checkpoint_00001"))


@pytest.fixture
def policy(tiny_gpt2_path):
    return PolicyWithValueHead(load_causal_lm(str(tiny_gpt2_path)))


def test_failed_save_leaves_no_folder_behind(policy, tiny_tokenizer, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("simulated")

    monkeypatch.setattr(trlx.checkpoint, "save_file", fail)
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path / "out" / "checkpoint_00001", policy, tiny_tokenizer, {}, {})
    assert list((tmp_path / "out").iterdir()) == []  # neither the checkpoint nor its temporary folder


def test_policy_weights_load_in_place_and_reject_another_model(policy, tiny_tokenizer, tmp_path):
    save_checkpoint(tmp_path / "ckpt", policy, tiny_tokenizer, {}, {})
    saved = {k: v.clone() for k, v in policy.state_dict().items()}
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1.0)
    load_policy_weights(tmp_path / "ckpt", policy)
    assert all(torch.equal(saved[k], v) for k, v in policy.state_dict().items())

    weights = trlx.checkpoint.load_file(str(tmp_path / "ckpt" / "model.safetensors"))
    weights["transformer.extra.weight"] = torch.zeros(1)
    trlx.checkpoint.save_file(weights, str(tmp_path / "ckpt" / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"do not fit the policy .*unexpected \['transformer.extra.weight'\]"):
        load_policy_weights(tmp_path / "ckpt", policy)


def test_truncate_lines_keeps_the_first_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(f'{{"step": {i}}}\n' for i in range(5)))
    truncate_lines(path, 3)
    assert path.read_text() == '{"step": 0}\n{"step": 1}\n{"step": 2}\n'
    truncate_lines(path, 10)  # never grows or rewrites a shorter file
    assert path.read_text().count("\n") == 3


def test_resume_accepts_a_model_that_moved_and_refuses_another_one(policy, tiny_tokenizer, tiny_gpt2_path, tmp_path):
    save_checkpoint(tmp_path / "ckpt", policy, tiny_tokenizer, {}, {})
    saved = {"model": {"model_path": str(tmp_path / "gone" / "gpt2")}}  # the base model has moved since
    check_same_model(tmp_path / "ckpt", saved, str(tiny_gpt2_path))  # same architecture: accepted

    other = tmp_path / "other"
    GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=policy.lm.config.vocab_size).save_pretrained(other)
    with pytest.raises(CheckpointError, match=r"was written for model '.*gone/gpt2' but model\.model_path is"):
        check_same_model(tmp_path / "ckpt", saved, str(other))
    # The saved model still exists: another path is another model, even with the same architecture.
    with pytest.raises(CheckpointError, match=r"resume with model\.model_path='.*tiny"):
        check_same_model(tmp_path / "ckpt", {"model": {"model_path": str(tiny_gpt2_path)}}, str(tmp_path / "ckpt"))


def test_weights_of_another_shape_are_a_checkpoint_error(policy, tiny_tokenizer, tmp_path):
    save_checkpoint(tmp_path / "ckpt", policy, tiny_tokenizer, {}, {})
    config = policy.lm.config
    wider = PolicyWithValueHead(
        GPT2LMHeadModel(
            GPT2Config(n_layer=config.n_layer, n_head=2, n_embd=2 * config.n_embd, vocab_size=config.vocab_size)
        )
    )
    with pytest.raises(CheckpointError, match=r"model weights do not fit the policy .*size mismatch"):
        load_policy_weights(tmp_path / "ckpt", wider)
