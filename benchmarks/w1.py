"""Workload W1 (`../shared/anchors/README.md`) on trlx, beside TRL 1.12's PPOTrainer, with this machine's limit.

    python benchmarks/w1.py                                  # SmolLM2-135M, variants full and hydra2
    python benchmarks/w1.py --trl trl_smollm2.json           # also print the ratio to a TRL anchor run
    python benchmarks/w1.py --model /tmp/assets/tiny-gpt2 --variants full

W1: 16 IMDB openings per iteration (the first 64 of prompts.json, cycled in order), exactly 16 sampled tokens
(temperature 1, no top-k/top-p), VADER compound score of the continuation, 4 PPO epochs over one minibatch of
16, AdamW lr 1e-5 (constant, wd 0, betas 0.9/0.999), no gradient clipping, fixed KL coefficient 0.05 (k1, in
the reward), gamma 1, lam 0.95, cliprange 0.2, cliprange_value 0.2, vf_coef 0.1, advantages whitened, fp32,
2 threads, seed 0, 8 iterations; medians over iterations 3..8. Variants:

- grpo8, grpo8_noref: GRPO on the same 16 completions and tokens per iteration (2 prompts x 8 completions),
  the same epochs and optimizer; KL as a k3 loss term (0.05, a frozen copy as reference) or none at all (no
  reference model built). No value head.

- full: the whole model trainable, a frozen copy as reference (TRL has a third copy: its critic's backbone).
- hydra2: `num_layers_unfrozen=2` with the hydra reference: the frozen 28 blocks run once per rollout, while
  sampling, and are replayed for scoring and every update.
- full_ckpt: as full, with `train.gradient_checkpointing` (block activations recomputed in backward).
- full_blas, full_onednn: as full, with the linears on torch's own BLAS (`train.onednn_linear=false`; MKL, slow on
  AMD) or on oneDNN (`true`); full itself takes the default (`auto`: oneDNN on AMD processors only).
- full_compact: as full, with `train.retain_cpu_memory=compact` (every block of 1 MiB or more mapped on its own and
  returned when freed: least peak RSS, the pages of every large tensor fault in anew).
- full_sac: as full, with `train.gradient_checkpointing=selective` (matmul/attention outputs kept, only the
  element-wise ops recomputed in backward).

From the second iteration on, scoring runs only the reference: the policy's old log-probs and values are the
ones the sampler recorded (`method.logprobs_from_sampling`, checked against a policy forward on iteration 1).

One difference from TRL: trlx reaches exactly 16 tokens with `min_new_tokens=16` (EOS banned and scored as
banned), TRL by generating past EOS; the compute is the same.

The machine-limit estimate counts matmul FLOPs (2 per multiply-add; backward = 2x forward; frozen parts need
only input gradients, 1x) at matmul rates measured in this run (block-shaped and LM-head-shaped; the faster
of torch's BLAS and oneDNN), plus the bytes each phase must move at a measured memory bandwidth (weights read
once per decoding step, AdamW's 7 reads/writes of 4 bytes per trained parameter). Each variant runs in its
own process so peak RSS is its own. Writes JSON (default benchmarks/results/w1.json).
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
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROMPTS_PER_ITER = 16
NEW_TOKENS = 16
PROMPT_POOL = 64
GRPO8 = {"method.name": "grpo", "method.num_generations": 8, "method.init_kl_coef": 0.0}
VARIANTS = {
    "full": {"num_layers_unfrozen": -1, "reference": "copy"},
    "hydra2": {"num_layers_unfrozen": 2},
    # The whole model again, its block activations recomputed in backward instead of stored (memory for time).
    "full_ckpt": {"num_layers_unfrozen": -1, "reference": "copy", "gradient_checkpointing": True},
    # The whole model with the linears on torch's own BLAS (MKL) or on oneDNN, whatever this processor is.
    "full_blas": {"num_layers_unfrozen": -1, "reference": "copy", "onednn_linear": False},
    "full_onednn": {"num_layers_unfrozen": -1, "reference": "copy", "onednn_linear": True},
    # Large blocks mapped per tensor and returned when freed, so the heap cannot fragment (memory for time).
    "full_compact": {"num_layers_unfrozen": -1, "reference": "copy", "retain_cpu_memory": "compact"},
    # Selective: matmul and attention outputs kept, only element-wise ops recomputed in backward.
    "full_sac": {"num_layers_unfrozen": -1, "reference": "copy", "gradient_checkpointing": "selective"},
    # The same 16 completions and tokens per iteration as 2 prompts x 8, KL as GRPO's k3 loss term (0.05).
    "grpo8": {"num_layers_unfrozen": -1, "reference": "copy", "method": {**GRPO8, "method.kl_loss_coef": 0.05}},
    # No KL at all: no reference model is built or run.
    "grpo8_noref": {"num_layers_unfrozen": -1, "reference": "copy", "method": GRPO8},
}
DEFAULT_PROMPTS = "/tmp/assets/prompts.json"


@dataclass
class InOrder:
    """W1's prompt order: indices 0..n-1 cycled, instead of trlx's seeded shuffle."""

    num_prompts: int
    position: int = 0

    def take(self, n: int) -> list[int]:
        taken = [(self.position + i) % self.num_prompts for i in range(n)]
        self.position = (self.position + n) % self.num_prompts
        return taken


def vader_reward():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def reward_fn(samples, prompts, outputs, **kwargs):
        return [analyzer.polarity_scores(o)["compound"] for o in outputs]

    return reward_fn


def w1_config(model_path: str, variant: str, workdir: Path):
    from trlx.data.default_configs import default_ppo_config

    model = VARIANTS[variant]
    return default_ppo_config().evolve(
        **{
            "model.model_path": model_path,
            "model.num_layers_unfrozen": model["num_layers_unfrozen"],
            "model.reference": model.get("reference", "hydra"),
            "tokenizer.tokenizer_path": None,
            "train.seq_length": 64,
            "train.gradient_checkpointing": model.get("gradient_checkpointing", False),
            "train.onednn_linear": model.get("onednn_linear", "auto"),
            "train.retain_cpu_memory": model.get("retain_cpu_memory", True),
            "train.batch_size": PROMPTS_PER_ITER,
            "train.total_steps": 10**6,
            "train.max_grad_norm": None,
            "train.checkpoint_dir": str(workdir),
            "train.progress_bar": False,
            "train.seed": 0,
            "optimizer.name": "adamw",
            "optimizer.kwargs": {"lr": 1e-5, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
            "scheduler.name": "constant",
            "scheduler.kwargs": {},
            "method.num_rollouts": PROMPTS_PER_ITER,
            "method.chunk_size": PROMPTS_PER_ITER,
            "method.ppo_epochs": 4,
            "method.init_kl_coef": 0.05,
            "method.target": None,
            "method.kl_estimator": "k1",
            "method.gamma": 1.0,
            "method.lam": 0.95,
            "method.cliprange": 0.2,
            "method.cliprange_value": 0.2,
            "method.vf_coef": 0.1,
            "method.scale_reward": None,
            "method.cliprange_reward": None,
            "method.whiten_advantages": True,
            "method.gen_kwargs": {
                "max_new_tokens": NEW_TOKENS,
                "min_new_tokens": NEW_TOKENS,
                "temperature": 1.0,
                "top_k": 0,
                "top_p": 1.0,
                "do_sample": True,
            },
            **model.get("method", {}),
        }
    )


# ---------------------------------------------------------------------------------------------- machine limit
def measure_machine() -> dict[str, float]:
    """fp32 matmul rate at W1's shapes (GFLOP/s) and memory read bandwidth (GB/s), medians of a few runs."""
    import torch

    def rate(fn, work: float, repeats: int = 7) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return work / statistics.median(times)

    from trlx.models.onednn import onednn_available, onednn_matmul_t

    a, w = torch.randn(592, 576), torch.randn(1536, 576)
    h, head = torch.randn(256, 576), torch.randn(49152, 576)  # the LM head on W1's 256 response positions
    big = torch.randn(64 * 2**20)  # 256 MiB of fp32
    block, lm_head = 20 * 2 * 592 * 576 * 1536, 2 * 256 * 576 * 49152
    blas = {  # torch's own matmul (MKL in the CPU wheels)
        "blas_matmul_gflops": rate(lambda: [a @ w.t() for _ in range(20)], block) / 1e9,
        "blas_head_matmul_gflops": rate(lambda: h @ head.t(), lm_head) / 1e9,
    }
    # The limit is the faster kernel: trlx runs its fp32 CPU linears on oneDNN (train.onednn_linear).
    onednn = {"matmul_gflops": 0.0, "head_matmul_gflops": 0.0}
    if onednn_available():
        onednn = {
            "matmul_gflops": rate(lambda: [onednn_matmul_t(a, w) for _ in range(20)], block) / 1e9,
            "head_matmul_gflops": rate(lambda: onednn_matmul_t(h, head), lm_head) / 1e9,
        }
    return {
        **blas,
        "matmul_gflops": max(onednn["matmul_gflops"], blas["blas_matmul_gflops"]),
        "head_matmul_gflops": max(onednn["head_matmul_gflops"], blas["blas_head_matmul_gflops"]),
        "read_gbs": rate(lambda: big.sum(), big.numel() * 4) / 1e9,
    }


def phase_work(lm, variant: str, prompt_tokens: float, policy_scored: bool) -> dict[str, dict[str, float]]:
    """FLOPs and bytes each phase needs at minimum for one W1 iteration (prompt_tokens: mean padded length;
    policy_scored: whether scoring ran the policy again, or took the sampler's log-probs and values)."""
    import torch

    from trlx.models.policy import transformer_blocks

    blocks = transformer_blocks(lm)
    per_block = sum(m.weight.numel() for m in blocks[0].modules() if isinstance(m, torch.nn.Linear))
    n_blocks = len(blocks)
    head = lm.get_output_embeddings().weight.numel()
    body, top = per_block * n_blocks, per_block * 2
    b, p, r = PROMPTS_PER_ITER, prompt_tokens, NEW_TOKENS
    tokens, scored = b * (p + r), b * r  # every position runs the blocks; only response positions need logits
    weight_bytes = 4 * sum(t.numel() for t in lm.parameters())
    gen = {"flop": 2 * body * tokens, "head_flop": 2 * head * b * r, "bytes": r * weight_bytes}
    # With a frozen trunk its output is replayed: only the top blocks and the head run in scoring and updates.
    run = body if VARIANTS[variant]["num_layers_unfrozen"] < 0 else top
    method = VARIANTS[variant].get("method", {})
    forwards = int(policy_scored) + (0 if method and not method.get("method.kl_loss_coef") else 1)  # + reference
    score = {"flop": forwards * 2 * run * tokens, "head_flop": forwards * 2 * head * scored, "bytes": 0.0}
    # Per multiply-add: forward 2, input gradient 2, weight gradient 2 (the head's only if it is trained).
    head_flop = 6 if lm.get_output_embeddings().weight.requires_grad else 4
    trainable = sum(t.numel() for t in lm.parameters() if t.requires_grad)
    recompute = 2 if VARIANTS[variant].get("gradient_checkpointing") is True else 0  # the blocks' forward, again
    update = {
        "flop": 4 * (6 + recompute) * run * tokens,
        "head_flop": 4 * head_flop * head * scored,
        "bytes": 4 * 7 * 4 * trainable,
    }
    return {"generate": gen, "score": score, "update": update}


# ---------------------------------------------------------------------------------------------- one variant
def run_variant(model_path: str, variant: str, iters: int, prompts_file: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from trlx.models.onednn import OneDNNLinear
    from trlx.trainers.common import unwrapped_policy
    from trlx.trlx import make_trainer

    prompts = json.loads(Path(prompts_file).read_text())[:PROMPT_POOL]
    with tempfile.TemporaryDirectory() as tmp:
        config = w1_config(model_path, variant, Path(tmp))
        trainer = make_trainer(reward_fn=vader_reward(), prompts=prompts, config=config)
        trainer.sampler = InOrder(len(prompts))
        generate = trainer.generate
        gen_times: list[float] = []

        def timed_generate(*args, **kwargs):
            t0 = time.perf_counter()
            out = generate(*args, **kwargs)
            gen_times.append(time.perf_counter() - t0)
            return out

        trainer.generate = timed_generate
        rows, widths = [], []
        for i in range(iters):
            t0 = time.perf_counter()
            rollout, metrics = trainer.collect_rollout()
            t1 = time.perf_counter()
            trainer.rollout, trainer.rollout_metrics = rollout, metrics
            for minibatch in trainer.minibatches(rollout):
                trainer.update(minibatch)
                trainer.step += 1
            trainer.finish_rollout()
            t2 = time.perf_counter()
            widths.append(rollout.query_ids.shape[1])
            rows.append(
                {
                    "iter": i + 1,
                    "sec": t2 - t0,
                    "gen_sec": gen_times[-1],
                    "score_sec": t1 - t0 - gen_times[-1],
                    "update_sec": t2 - t1,
                    "mean_reward": metrics["reward/mean"],
                    "kl": metrics["kl/mean"],
                    "prompt_width": widths[-1],
                    "logprob_gap_max": metrics.get("rollout/logprob_gap_max"),  # measured when scored again
                    "policy_scored": "rollout/logprob_gap_max" in metrics,
                }
            )
            print(
                f"  [{variant}] iter {i + 1}: {rows[-1]['sec']:.2f} s (gen {rows[-1]['gen_sec']:.2f} | score "
                f"{rows[-1]['score_sec']:.2f} | update {rows[-1]['update_sec']:.2f}) reward "
                f"{rows[-1]['mean_reward']:.3f}",
                flush=True,
            )
        lm = unwrapped_policy(trainer).lm
        linears = "oneDNN" if any(isinstance(m, OneDNNLinear) for m in lm.modules()) else "torch BLAS"
        steady = rows[2:] if len(rows) >= 3 else rows
        median_width = statistics.median(r["prompt_width"] for r in steady)
        scored = any(r["policy_scored"] for r in steady)
        work = phase_work(lm, variant, sum(r["prompt_width"] for r in steady) / len(steady), scored)
    med = {k: statistics.median(r[k] for r in steady) for k in ("sec", "gen_sec", "score_sec", "update_sec")}
    return {
        "variant": variant,
        "linears": linears,
        "median_sec_per_iter": med["sec"],
        "median_gen_sec": med["gen_sec"],
        "median_score_sec": med["score_sec"],
        "median_update_sec": med["update_sec"],
        "tokens_per_sec": PROMPTS_PER_ITER * NEW_TOKENS / med["sec"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "median_prompt_width": median_width,
        "work": work,
        "per_iter": rows,
    }


# ---------------------------------------------------------------------------------------------- driver
def cpu_name() -> str:
    """The processor's model name and vendor, so results from different machines are not mixed up."""
    from trlx.models.onednn import cpu_vendor, cpuinfo_field

    return f"{cpuinfo_field('model name')} ({cpu_vendor()})".strip()


def limit_seconds(work: dict[str, float], machine: dict[str, float]) -> float:
    return (
        work["flop"] / (machine["matmul_gflops"] * 1e9)
        + work["head_flop"] / (machine["head_matmul_gflops"] * 1e9)
        + work["bytes"] / (machine["read_gbs"] * 1e9)
    )


def table(results: list[dict], machine: dict[str, float], trl: dict | None) -> list[str]:
    lines = [
        "| run | s/iter | generate | score | update | tokens/s | peak RSS | vs TRL |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if trl is not None:
        lines.append(
            f"| TRL {trl.get('versions', {}).get('trl_used', '?')} PPOTrainer | {trl['median_sec_per_iter']:.2f} | "
            f"{trl['median_gen_sec']:.2f} | {trl['median_score_sec']:.2f} | {trl['median_update_sec']:.2f} | "
            f"{trl['tokens_per_sec']:.1f} | {trl['peak_rss_mb'] / 1024:.2f} GB | 1.00x |"
        )
    for r in results:
        ratio = f"{r['median_sec_per_iter'] / trl['median_sec_per_iter']:.2f}x" if trl else "-"
        lines.append(
            f"| trlx {r['variant']} ({r.get('linears', '?')}) | {r['median_sec_per_iter']:.2f} | {r['median_gen_sec']:.2f} | "
            f"{r['median_score_sec']:.2f} | {r['median_update_sec']:.2f} | {r['tokens_per_sec']:.1f} | "
            f"{r['peak_rss_mb'] / 1024:.2f} GB | {ratio} |"
        )
    lines += [
        "",
        f"machine: {cpu_name()}, {machine['matmul_gflops']:.1f} GFLOP/s fp32 block matmul (592x576 @ 576x1536), "
        f"{machine['head_matmul_gflops']:.1f} GFLOP/s LM-head matmul (256x576 @ 576x49152) (torch's BLAS: "
        f"{machine.get('blas_matmul_gflops', 0):.1f} and {machine.get('blas_head_matmul_gflops', 0):.1f}), "
        f"{machine['read_gbs']:.1f} GB/s memory read",
        "",
        "| run | phase | GFLOP | GB moved | limit s | measured s | x limit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for phase, key in (
            ("generate", "median_gen_sec"),
            ("score", "median_score_sec"),
            ("update", "median_update_sec"),
        ):
            work = r["work"][phase]
            limit = limit_seconds(work, machine)
            lines.append(
                f"| trlx {r['variant']} | {phase} | {(work['flop'] + work['head_flop']) / 1e9:.1f} | {work['bytes'] / 1e9:.2f} | "
                f"{limit:.2f} | {r[key]:.2f} | {r[key] / limit:.2f} |"
            )
    return lines


def demo_summary(path: Path) -> dict | None:
    """The last `make demo` run's wall time and eval reward gain, when runs/sentiment/summary.json exists."""
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    keep = ("wall_time_s", "train_time_s", "eval_reward_before", "eval_reward_after", "eval_reward_gain")
    return {k: summary[k] for k in keep if k in summary} or summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="HF folder (default: SmolLM2-135M converted by trlx)")
    parser.add_argument("--variants", default="full,hydra2", help=f"comma list of {', '.join(VARIANTS)}")
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", default=DEFAULT_PROMPTS, help="W1's prompts.json (../shared/anchors)")
    parser.add_argument("--trl", default=None, help="JSON written by ../shared/anchors/trl_ppo_bench.py")
    parser.add_argument("--demo-summary", default="runs/sentiment/summary.json")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "w1.json"))
    parser.add_argument("--from-json", default=None, help="re-print a saved run (with --trl: its ratios), no rerun")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one variant, print JSON
    args = parser.parse_args()
    if not Path(args.prompts).exists():
        raise SystemExit(
            f"{args.prompts} not found: W1's prompts come from the anchors; run\n"
            f"  python ../shared/anchors/make_assets.py {Path(args.prompts).parent}"
        )
    if args.one:
        print("W1-RESULT " + json.dumps(run_variant(args.model, args.one, args.iters, args.prompts, args.threads)))
        return

    import torch

    torch.set_num_threads(args.threads)
    if args.model is None:
        from trlx.models.gguf import smollm2_135m

        args.model = str(smollm2_135m())
    for v in args.variants.split(","):
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        machine, results, machine_after = saved["machine"], saved["results"], saved["machine_after"]
        args.model = saved["model_path"]
    else:
        machine, results, machine_after = measure_machine(), [], None
    for variant in [] if args.from_json else args.variants.split(","):
        cmd = [sys.executable, __file__, "--one", variant, "--model", args.model, "--iters", str(args.iters)]
        cmd += ["--threads", str(args.threads), "--prompts", args.prompts]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
        line = next(x for x in proc.stdout.splitlines() if x.startswith("W1-RESULT "))
        results.append(json.loads(line[len("W1-RESULT ") :]))
    # A second measurement shows whether the machine's speed drifted during the run.
    machine_after = machine_after or measure_machine()
    trl = json.loads(Path(args.trl).read_text()) if args.trl else None
    lines = table(results, machine, trl)
    print("\n".join(lines))
    out = {
        "workload": "W1",
        "model_path": args.model,
        "threads": args.threads,
        "cpu": cpu_name(),
        "machine": machine,
        "machine_after": machine_after,
        "load_average": os.getloadavg(),
        "trl": {k: trl[k] for k in trl if k.startswith("median") or k in ("tokens_per_sec", "peak_rss_mb")}
        if trl
        else None,
        "results": results,
        "demo": demo_summary(Path(args.demo_summary)),
        "table": lines,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
