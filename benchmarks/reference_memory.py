"""Memory and PPO step time of the three KL references on the real 135M model (SmolLM2-135M-Instruct, offline).

    python benchmarks/reference_memory.py                     # copy, hydra, lora
    python benchmarks/reference_memory.py --modes hydra,lora --iterations 3 --out my.json

Each reference runs in a fresh process, so each peak resident set size (RSS, the OS high-water mark of the
process) is its own; on a GPU the peak CUDA allocation is reported too. (tracemalloc is not used: it sees only
Python allocations, not torch's tensor memory.) `ref_params_m` counts the parameters the reference holds that
the policy does not share, i.e. what it costs on top of the policy. Times are the fastest of --iterations PPO
iterations (rollout of --batch samples + one update per minibatch) after one warm-up iteration; the JSON also
has the median.

copy and hydra train the top --layers blocks (model.num_layers_unfrozen); lora trains rank-8 adapters on the
attention projections of every block.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from common import PROMPTS, report  # noqa: E402

LORA = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
MODES = ("copy", "hydra", "lora")


def length_reward(samples, prompts, outputs, **kwargs):
    return [len(o.split()) / 10 for o in outputs]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synced_time() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> dict:
    """One reference mode in this process: build the trainer, run warm-up + timed PPO iterations."""
    from trlx.data.default_configs import default_ppo_config
    from trlx.models.gguf import smollm2_135m
    from trlx.models.reference import owned_parameters
    from trlx.trainers.common import unwrapped_policy
    from trlx.trlx import make_trainer

    model_path = smollm2_135m()
    model = {"model.reference": mode, "model.num_layers_unfrozen": args.layers, "model.peft_config": None}
    if mode == "lora":
        model = {"model.reference": "lora", "model.num_layers_unfrozen": -1, "model.peft_config": LORA}
    config = default_ppo_config().evolve(
        **{
            **model,
            "model.model_path": str(model_path),
            "tokenizer.tokenizer_path": None,
            "train.batch_size": args.batch,
            "train.seq_length": 128,
            "train.checkpoint_dir": str(workdir / mode),
            "train.progress_bar": False,
            "method.num_rollouts": args.batch,
            "method.chunk_size": args.batch,
            "method.ppo_epochs": 1,
            "method.gen_kwargs": {
                "max_new_tokens": args.new_tokens,
                "min_new_tokens": args.new_tokens,
                "do_sample": True,
            },
            "optimizer.kwargs": {"lr": 1e-5},
            "scheduler.name": "constant",
            "scheduler.kwargs": {},
        }
    )
    rss_start = peak_rss_mib()
    t0 = time.perf_counter()
    trainer = make_trainer(reward_fn=length_reward, prompts=PROMPTS * (args.batch // len(PROMPTS) + 1), config=config)
    setup_s = time.perf_counter() - t0
    rss_setup = peak_rss_mib()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    policy_lm = unwrapped_policy(trainer).lm
    reference_model = getattr(trainer.reference, "model", policy_lm)  # lora: the policy itself
    rollout_times, update_times, first_kl = [], [], None
    for i in range(args.iterations + 1):
        t0 = synced_time()
        rollout, metrics = trainer.collect_rollout()
        t1 = synced_time()
        for minibatch in trainer.minibatches(rollout):
            trainer.update(minibatch)
        t2 = synced_time()
        first_kl = metrics["kl/mean"] if first_kl is None else first_kl
        if i > 0:  # the first iteration warms up allocators and kernels
            rollout_times.append(t1 - t0)
            update_times.append(t2 - t1)
    result = {
        "reference": mode,
        "policy_params_m": sum(p.numel() for p in policy_lm.parameters()) / 1e6,
        "trainable_params_m": sum(p.numel() for p in trainer.policy.parameters() if p.requires_grad) / 1e6,
        "ref_params_m": owned_parameters(reference_model, policy_lm) / 1e6,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_setup_mib": rss_setup,
        "rss_before_load_mib": rss_start,
        "setup_s": setup_s,
        # Fastest iteration: on a shared machine the minimum is the least disturbed by other processes.
        "rollout_s": min(rollout_times),
        "update_s": min(update_times),
        "step_s": min(r + u for r, u in zip(rollout_times, update_times)),
        "step_median_s": statistics.median(r + u for r, u in zip(rollout_times, update_times)),
        "first_kl": first_kl,
    }
    if torch.cuda.is_available():
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default=",".join(MODES), help="comma list of copy, hydra, lora")
    parser.add_argument("--layers", type=int, default=2, help="model.num_layers_unfrozen for copy and hydra")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "reference_memory.json"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one mode, print JSON
    args = parser.parse_args()

    if args.child:
        if args.threads:
            # On a shared machine, a thread pool larger than the free cores stalls on every parallel region.
            torch.set_num_threads(args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            print("RESULT " + json.dumps(run_mode(args.child, args, Path(tmp))), flush=True)
        return

    results = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
        cmd = [sys.executable, __file__, "--child", mode, "--layers", str(args.layers), "--batch", str(args.batch)]
        cmd += ["--new-tokens", str(args.new_tokens), "--iterations", str(args.iterations)]
        cmd += ["--threads", str(args.threads)] if args.threads else []
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{mode} failed:\n{proc.stderr[-4000:]}")
        results.append(json.loads(lines[-1][len("RESULT ") :]))

    header = ["reference", "trainable_params_m", "ref_params_m", "peak_rss_mib", "rss_after_setup_mib"]
    header += ["rollout_s", "update_s", "step_s", "step_median_s", "first_kl"]
    if any("peak_cuda_mib" in r for r in results):
        header.append("peak_cuda_mib")
    settings = {k: getattr(args, k) for k in ("layers", "batch", "new_tokens", "iterations", "threads")}
    report(header, results, args.out, settings=settings, lora=LORA)


if __name__ == "__main__":
    main()
