"""Checkpoints in Hugging Face format, written atomically: tensors in safetensors, trainer state in JSON."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from trlx.models.policy import PolicyWithValueHead

VALUE_HEAD_FILE = "value_head.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "trlx_config.yml"


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:05d}"


def save_checkpoint(
    dest: str | Path,
    policy: PolicyWithValueHead,
    tokenizer: PreTrainedTokenizerBase,
    state: dict[str, Any],
    config: dict[str, Any],
) -> Path:
    """Write the policy (loadable by AutoModelForCausalLM), its tokenizer, value head and state to `dest`.

    Everything goes to a hidden temporary folder first and is renamed into place, so a crash mid-save never
    leaves a half-written checkpoint under the final name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy.lm.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    head = {k: v.detach().cpu().contiguous() for k, v in policy.value_head.state_dict().items()}
    save_file(head, str(tmp / VALUE_HEAD_FILE))
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
    (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
    replace_dir(tmp, dest)
    return dest


def replace_dir(src: Path, dest: Path) -> None:
    """Move folder `src` to `dest`, replacing an existing `dest` with at most a moment without one."""
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dest)


def load_value_head(path: str | Path, policy: PolicyWithValueHead) -> None:
    state = load_file(str(Path(path) / VALUE_HEAD_FILE))
    policy.value_head.load_state_dict({k: v.to(policy.value_head.weight.device) for k, v in state.items()})


def load_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


def tensors_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
