"""Per-phase cost of one PPO iteration: generate, policy/reference scoring, reward, update.

    python benchmarks/ppo_step.py                 # tiny random GPT-2 and the real 135M SmolLM2 (offline)
    python benchmarks/ppo_step.py --models tiny   # only the tiny model
    python benchmarks/ppo_step.py --out results.json

Prints a table and writes JSON (default benchmarks/results/ppo_step.json). Times are medians over
--repeats iterations after one warm-up; memory is the process's peak RSS (and peak CUDA memory on GPU).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from common import PROMPTS, report  # noqa: E402

from trlx.data.default_configs import default_ppo_config  # noqa: E402
from trlx.rewards.scoring import compute_scores  # noqa: E402
from trlx.rollout.scoring import score_response  # noqa: E402
from trlx.trainers.common import unwrapped_policy  # noqa: E402
from trlx.trlx import make_trainer  # noqa: E402


def tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import save_tiny_gpt2

    return save_tiny_gpt2(folder)


def length_reward(samples, prompts, outputs, **kwargs):
    return [len(o.split()) / 10 for o in outputs]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def timed(fn, *args):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def bench(name: str, model_path: Path, batch: int, new_tokens: int, repeats: int, workdir: Path) -> dict:
    config = default_ppo_config().evolve(
        **{
            "model.model_path": str(model_path),
            "model.num_layers_unfrozen": -1,
            "tokenizer.tokenizer_path": None,
            "train.batch_size": batch,
            "train.seq_length": 128,
            "train.checkpoint_dir": str(workdir / name),
            "train.progress_bar": False,
            "method.num_rollouts": batch,
            "method.chunk_size": batch,
            "method.gen_kwargs": {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": True},
            "scheduler.name": "constant",
            "scheduler.kwargs": {},
        }
    )
    trainer = make_trainer(reward_fn=length_reward, prompts=PROMPTS * (batch // len(PROMPTS) + 1), config=config)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    phases: dict[str, list[float]] = {
        k: [] for k in ("generate", "policy_score", "reference_score", "reward", "update")
    }
    for i in range(repeats + 1):
        prompt_batch = trainer.train_prompts.batch(trainer.sampler.take(batch))
        generation, t_gen = timed(trainer.generate, prompt_batch)
        _, t_reward = timed(compute_scores, trainer.reward_fn, generation, trainer.tokenizer)
        dev = trainer.accelerator.device
        args = (
            generation.prompt.input_ids.to(dev),
            generation.prompt.attention_mask.to(dev),
            generation.response_ids.to(dev),
            generation.response_mask.to(dev),
        )
        policy = unwrapped_policy(trainer)
        with torch.no_grad():
            _, t_pol = timed(score_response, policy, *args)
            _, t_ref = timed(score_response, trainer.reference.forward_fn(), *args)
        rollout = trainer.score(generation)
        rollout.advantages = torch.randn_like(rollout.logprobs) * rollout.response_mask
        rollout.returns = rollout.values + rollout.advantages
        _, t_upd = timed(trainer.update, rollout)
        if i > 0:  # the first iteration warms up allocators and kernels
            for key, value in zip(phases, (t_gen, t_pol, t_ref, t_reward, t_upd)):
                phases[key].append(value)
    med = {k: statistics.median(v) for k, v in phases.items()}
    tokens = batch * new_tokens
    params = sum(p.numel() for p in unwrapped_policy(trainer).parameters())
    result = {
        "model": name,
        "params_m": params / 1e6,
        "batch": batch,
        "new_tokens": new_tokens,
        **{f"{k}_s": v for k, v in med.items()},
        "iteration_s": sum(med.values()),
        "generate_tokens_per_s": tokens / med["generate"],
        "update_tokens_per_s": tokens / med["update"],
        "peak_rss_mib": peak_rss_mib(),
        "reference_trainable_params": sum(
            p.numel() for p in getattr(trainer.reference, "model", torch.nn.Module()).parameters() if p.requires_grad
        ),
    }
    if torch.cuda.is_available():
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="tiny,smollm2-135m", help="comma list of tiny, smollm2-135m")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "ppo_step.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for name in args.models.split(","):
            if name == "tiny":
                path = tiny_model(workdir / "tiny-gpt2")
            elif name == "smollm2-135m":
                from trlx.models.gguf import smollm2_135m

                path = smollm2_135m()
            else:
                raise SystemExit(f"unknown model {name!r}; choose from tiny, smollm2-135m")
            results.append(bench(name, path, args.batch, args.new_tokens, args.repeats, workdir))
    header = [
        "model",
        "params_m",
        "generate_s",
        "policy_score_s",
        "reference_score_s",
        "reward_s",
        "update_s",
        "iteration_s",
        "generate_tokens_per_s",
        "update_tokens_per_s",
        "peak_rss_mib",
    ]
    report(header, results, args.out, batch=args.batch)


if __name__ == "__main__":
    main()
