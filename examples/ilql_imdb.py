"""ILQL offline RL on IMDB, in the spirit of trlX's `ilql_sentiments`: reviews as samples, their labels as rewards.

1. Samples: an 8-word IMDB review opening as the prompt and the review's closing words (its verdict) as the
   completion (its tokens are ILQL's actions), with the review's label (1 positive, 0 negative) as the reward.
   No model generated them: the behaviour data is what people wrote.
2. ILQL (Snell et al. 2022; trlX's ILQLConfig values except where noted below) on SmolLM2-135M-Instruct with the
   sentiment demo's model settings (configs/sentiment.yml: top 4 blocks trained).
3. An independent scorer, VADER, scores continuations of 48 held-out openings sampled from the ILQL policy
   (log pi + beta * (min target Q - V)) at step 0 and at the end, and those of the LM alone (beta 0) before and
   after, which tells the value heads' part (the shift) from behaviour cloning's (the LM). The exit status is 1
   if the trained ILQL policy's continuations are not more positive than the initial model's.

    python examples/ilql_imdb.py            # ~12 min on 2 CPU cores
    python examples/ilql_imdb.py --quick    # smoke run: tiny sizes, the improvement is not enforced
    python examples/ilql_imdb.py method.gen_kwargs.beta=8 train.total_steps=200   # config overrides

Everything lands in --workdir: ilql/ (checkpoints, metrics.jsonl, samples.jsonl) and summary.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from human_feedback_imdb import CONFIG, report_outcome
from rich.console import Console
from rich.table import Table

from trlx.datasets.imdb import load_imdb
from trlx.demos.sentiment.prompts import build_prompts, review_opening
from trlx.demos.sentiment.rewards import vader_reward
from trlx.demos.sentiment.run import SMOLLM2, fresh_output_dir, load_config
from trlx.logging import read_metrics
from trlx.report import first_and_latest
from trlx.trlx import make_trainer

# ILQL on top of the sentiment demo's model and sampling settings. One Q head (two_qs false) halves the heads'
# cost (the 49k-token vocabulary makes each Q head 57M parameters, trlX's architecture); a target-Q sync every
# step with alpha 0.1 and lr 3e-4 let the values form within ~100 steps on a CPU (trlX: 0.001 every 5 steps over
# thousands). beta 4 shifts sampling far enough without leaving the LM's top 20 tokens.
ILQL_OVERRIDES = [
    "method.name=ilql",
    "method.tau=0.7",
    "method.gamma=0.99",
    "method.cql_scale=0.1",
    "method.awac_scale=1.0",
    "method.beta=0",
    "method.alpha=0.1",
    "method.steps_for_target_q_sync=1",
    "method.two_qs=false",
    "method.gen_kwargs.beta=4",
    "method.gen_kwargs.top_k=20",
    "optimizer.kwargs.lr=3e-4",
    "train.batch_size=32",
    "train.total_steps=120",
    "train.eval_interval=120",
    "train.checkpoint_interval=120",
    "train.seq_length=48",
]
QUICK_OVERRIDES = ["train.total_steps=2", "train.batch_size=4", "train.eval_interval=100", "demo.n_eval_prompts=4"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="section.field=value for the config (demo.* too)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/ilql_imdb"))
    parser.add_argument("--samples", type=int, default=4096, help="reviews used as behaviour data")
    parser.add_argument("--completion-words", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run; improvement not enforced")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples = 32
    overrides = [*ILQL_OVERRIDES, *(QUICK_OVERRIDES if args.quick else []), *args.overrides]
    config, demo = load_config(CONFIG, overrides)
    if demo.num_threads is not None:
        torch.set_num_threads(demo.num_threads)
    summary = run(args, config, demo, Console())
    return 0 if summary["improved"] or args.quick else 1


def behaviour_data(n: int, prompt_words: int, completion_words: int, exclude: set[str]) -> tuple[list, list]:
    """[opening, closing words] samples of IMDB reviews (none opening like a held-out prompt), rewards = labels.

    The completion is the review's last words, where reviewers state their verdict ("... a must see, 9/10"):
    the words right after an opening rarely reveal the label, so they would give ILQL almost nothing to learn.
    """
    samples, rewards = [], []
    for review in load_imdb():
        words = review.text.split()
        opening = review_opening(review.text, prompt_words)
        if len(words) <= prompt_words + completion_words or opening in exclude:
            continue
        samples.append([opening, " " + " ".join(words[-completion_words:])])
        rewards.append(float(review.label))
        if len(samples) == n:
            break
    return samples, rewards


def lm_alone(trainer: Any) -> float:
    """VADER of the held-out continuations sampled from the LM alone (beta 0, the heads unused), not logged."""
    beta, logger = trainer.model.beta, trainer.logger
    trainer.model.beta, trainer.logger = 0.0, None
    try:
        return trainer.evaluate()["eval/reward_mean"]
    finally:
        trainer.model.beta, trainer.logger = beta, logger


def run(args: argparse.Namespace, config: Any, demo: Any, console: Console) -> dict[str, Any]:
    start = time.perf_counter()
    workdir = fresh_output_dir(args.workdir)
    if config.model.model_path == SMOLLM2:
        from trlx.models.gguf import smollm2_135m

        config = config.evolve(**{"model.model_path": str(smollm2_135m())})
    config = config.evolve(**{"train.checkpoint_dir": str(workdir / "ilql"), "tokenizer.tokenizer_path": None})

    _, eval_prompts = build_prompts(demo.n_train_prompts, demo.n_eval_prompts, demo.prompt_words)
    samples, rewards = behaviour_data(args.samples, demo.prompt_words, args.completion_words, set(eval_prompts))
    positive = sum(rewards) / len(rewards)
    console.print(f"[1/3] {len(samples)} IMDB review continuations as behaviour data ({positive:.0%} positive)")

    console.print(f"[2/3] ILQL: {config.train.total_steps} steps on {config.model.model_path}")
    trainer = make_trainer(
        samples=samples, rewards=rewards, eval_prompts=eval_prompts, reward_fn=vader_reward, config=config
    )
    initial_lm = lm_alone(trainer)  # the initial model, sampled as the sentiment demo samples it
    trainer.learn()
    out = Path(config.train.checkpoint_dir)
    evals = [r for r in read_metrics(out / "metrics.jsonl") if "eval/reward_mean" in r]
    beta = trainer.model.beta
    summary = {
        "samples": len(samples),
        "positive_share": positive,
        "ilql_steps": trainer.step,
        "eval_prompts": len(eval_prompts),
        "sampling_beta": beta,
        "vader_initial_model": initial_lm,
        "vader_before": evals[0]["eval/reward_mean"],
        "vader_after": evals[-1]["eval/reward_mean"],
        "vader_lm_alone_after": lm_alone(trainer),
        "wall_time_s": round(time.perf_counter() - start, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    summary["improved"] = summary["vader_after"] > summary["vader_initial_model"]
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    report(console, summary, first_and_latest(read_metrics(out / "samples.jsonl")), enforce=not args.quick)
    return summary


def report(console: Console, s: dict[str, Any], rows: list[dict[str, Any]], enforce: bool) -> None:
    table = Table(title=f"[3/3] held-out openings ({s['eval_prompts']}), step 0 vs step {s['ilql_steps']}")
    table.add_column("policy")
    table.add_column("VADER compound (independent)")
    beta = f"beta {s['sampling_beta']:g}"
    table.add_row("initial model (its LM alone)", f"{s['vader_initial_model']:+.3f}")
    table.add_row(f"initial model with untrained heads ({beta})", f"{s['vader_before']:+.3f}")
    table.add_row("after ILQL, the LM alone (beta 0: behaviour cloning)", f"{s['vader_lm_alone_after']:+.3f}")
    table.add_row(f"after ILQL, the ILQL policy ({beta})", f"{s['vader_after']:+.3f}")
    console.print(table)
    line = f"behaviour data {s['positive_share']:.0%} positive; wall time {s['wall_time_s'] / 60:.1f} min"
    report_outcome(console, rows, line, s["improved"], enforce)


if __name__ == "__main__":
    sys.exit(main())
