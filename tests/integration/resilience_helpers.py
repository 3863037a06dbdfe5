"""A tiny PPO run shared by the resume, fault and interrupt tests (and the interrupt test's subprocess).

The run is small (2-layer GPT-2, 16 rollouts of 6 tokens, 4 optimizer steps per rollout) but exercises every
piece of state resume must restore: an adaptive KL controller, running reward statistics, a cosine schedule,
and a reward function that draws from python's and numpy's global RNGs.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest's tokenizer builder

from conftest import save_tiny_gpt2  # noqa: E402

PROMPTS = ["the movie was", "this film is", "i think it", "the acting", "the story", "a scene", "we loved", "it was"]
EVAL_PROMPTS = ["the ending", "the music"]
STEPS_PER_ROLLOUT = 4  # ppo_epochs (2) * num_rollouts (16) / batch_size (8)
# Seconds each reward_fn call sleeps; the interrupt test's subprocess sets it so a signal lands mid-run.
REWARD_SLEEP_ENV = "TRLX_TEST_REWARD_SLEEP"
# A file path: the third reward_fn call creates it and then hangs (for the second-Ctrl-C test).
REWARD_HANG_ENV = "TRLX_TEST_REWARD_HANG"
_calls = {"n": 0}


def make_tiny_gpt2(path: Path) -> Path:
    """A 2-layer random GPT-2 with the word-level test tokenizer, saved in HF format at `path`."""
    return save_tiny_gpt2(path)


def tiny_config(checkpoint_dir: Path, total_steps: int, **overrides: Any):
    from trlx.data.default_configs import default_ppo_config

    return default_ppo_config().evolve(
        **{
            "train.total_steps": total_steps,
            "train.batch_size": 8,
            "train.seq_length": 24,
            "train.eval_interval": 3,
            "train.checkpoint_interval": 5,
            "train.checkpoint_dir": str(checkpoint_dir),
            "train.progress_bar": False,
            "model.num_layers_unfrozen": -1,
            "tokenizer.tokenizer_path": None,
            "method.num_rollouts": 16,
            "method.chunk_size": 8,
            "method.ppo_epochs": 2,
            "method.init_kl_coef": 0.05,
            "method.target": 1.0,
            "method.horizon": 100,
            "method.scale_reward": "running",
            "method.gen_kwargs": {"max_new_tokens": 6, "do_sample": True, "top_k": 0, "top_p": 1.0},
            "optimizer.kwargs": {"lr": 3e-3},
            "scheduler.name": "cosine_annealing",
            "scheduler.kwargs": {"T_max": 30},
            **overrides,
        }
    )


def reward_fn(samples: list[str], prompts: list[str], outputs: list[str], **kwargs: Any) -> list[float]:
    """Rewards 'good', plus noise from python's and numpy's global RNGs (which resume must restore)."""
    _calls["n"] += 1
    if os.environ.get(REWARD_HANG_ENV) and _calls["n"] == 3:
        Path(os.environ[REWARD_HANG_ENV]).write_text("hanging")
        time.sleep(600)
    time.sleep(float(os.environ.get(REWARD_SLEEP_ENV, 0)))
    return [o.split().count("good") / 4 + 0.01 * random.random() + 0.01 * float(np.random.rand()) for o in outputs]


def run(model_path: Path, checkpoint_dir: Path, total_steps: int, reward=reward_fn, **overrides: Any):
    import trlx

    config = tiny_config(checkpoint_dir, total_steps, **overrides)
    return trlx.train(str(model_path), reward_fn=reward, prompts=PROMPTS, eval_prompts=EVAL_PROMPTS, config=config)


def metric_rows(checkpoint_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock (time/*) entries, which differ between any two runs."""
    with (Path(checkpoint_dir) / "metrics.jsonl").open() as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


def training_rows(checkpoint_dir: Path) -> list[dict[str, Any]]:
    """One row per optimizer step (skipped ones included), without evaluation or skipped-rollout rows."""
    return [row for row in metric_rows(checkpoint_dir) if "reward/mean" in row]


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = load_file(str(checkpoint / "model.safetensors"))
    for name in ("value_head", "ilql_heads"):  # PPO's critic, ILQL's heads; the other methods have none
        head = checkpoint / f"{name}.safetensors"
        if head.is_file():
            out.update({f"{name}.{k}": v for k, v in load_file(str(head)).items()})
    return out


if __name__ == "__main__":  # the interrupt test's subprocess: python resilience_helpers.py MODEL DIR STEPS
    run(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
