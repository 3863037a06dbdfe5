"""Train a reward model on human comparisons (Ziegler et al. 2019, sec. 2.2), top to bottom:

load comparisons -> split by comparison into train / held-out -> expand choices into (chosen, rejected) pairs ->
Bradley-Terry updates -> held-out loss and accuracy -> normalise on the training samples -> save.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import warnings
from pathlib import Path

import torch

from trlx.algorithms.preference import bradley_terry_loss, pairs_from_choice, preference_accuracy
from trlx.feedback.store import Comparison, append_json_line, read_comparisons
from trlx.rewards.reward_model import RewardModel
from trlx.rewards.rm_config import RewardModelConfig

__all__ = ["RewardModelConfig", "train_reward_model"]

MIN_EVAL_PAIRS = 30  # below this a held-out accuracy's 95% interval is wider than +/-0.18

Pair = tuple[str, str]
"""(chosen text, rejected text); each text is prompt + candidate, the same string PPO passes as a sample."""


def split_comparisons(
    comparisons: list[Comparison], eval_fraction: float, seed: int
) -> tuple[list[Comparison], list[Comparison]]:
    """Shuffle and split; keeps at least one comparison on each side when both sides are asked for."""
    shuffled = list(comparisons)
    random.Random(seed).shuffle(shuffled)
    n_eval = round(len(shuffled) * eval_fraction)
    if eval_fraction > 0 and len(shuffled) >= 2:
        n_eval = min(max(n_eval, 1), len(shuffled) - 1)
    return shuffled[n_eval:], shuffled[:n_eval]


def comparisons_to_pairs(comparisons: list[Comparison]) -> list[Pair]:
    pairs = []
    for c in comparisons:
        for chosen, rejected in pairs_from_choice(len(c.candidates), c.choice):
            pairs.append((c.prompt + c.candidates[chosen], c.prompt + c.candidates[rejected]))
    return pairs


def pair_rewards(model: RewardModel, pairs: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw rewards of a batch of pairs: (B,), (B,). One forward over 2B texts keeps batch statistics shared."""
    texts = [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]
    rewards = model(**model.encode(texts))
    return rewards[: len(pairs)], rewards[len(pairs) :]


@torch.no_grad()
def evaluate(model: RewardModel, pairs: list[Pair], batch_size: int) -> dict[str, float]:
    if not pairs:
        return {"eval_loss": math.nan, "eval_accuracy": math.nan}
    model.eval()
    batches = [pair_rewards(model, pairs[i : i + batch_size]) for i in range(0, len(pairs), batch_size)]
    chosen_all = torch.cat([chosen for chosen, _ in batches])
    rejected_all = torch.cat([rejected for _, rejected in batches])
    return {
        "eval_loss": bradley_terry_loss(chosen_all, rejected_all).item(),
        "eval_accuracy": preference_accuracy(chosen_all, rejected_all).item(),
    }


def train_reward_model(config: RewardModelConfig) -> tuple[RewardModel, dict[str, float]]:
    """Fit a reward model to the comparisons in ``config.comparisons``; returns it with its final metrics.

    metrics: train_loss (mean over the last epoch), eval_loss, eval_accuracy (NaN without a held-out split),
    num_train_pairs, num_eval_pairs. ``output_dir/metrics.jsonl`` gets ``rm/*`` lines as training goes.
    """
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    comparisons = read_comparisons(config.comparisons, skip_malformed=config.skip_malformed)
    train_set, eval_set = split_comparisons(comparisons, config.eval_fraction, config.seed)
    train_pairs, eval_pairs = comparisons_to_pairs(train_set), comparisons_to_pairs(eval_set)
    if not train_pairs:
        raise ValueError(f"{config.comparisons}: no training pairs (every comparison is a tie, a skip, or held out)")
    if 0 < len(eval_pairs) < MIN_EVAL_PAIRS:
        warnings.warn(
            f"only {len(eval_pairs)} held-out pair(s): eval_accuracy is a coarse estimate (95% interval about "
            f"+/-{1.96 * 0.5 / math.sqrt(len(eval_pairs)):.2f}); label more comparisons or raise eval_fraction "
            f"for a reliable one (>= {MIN_EVAL_PAIRS} pairs)",
            stacklevel=2,
        )

    torch.manual_seed(config.seed)
    model = RewardModel.from_backbone(config.backbone, pooling=config.pooling, max_length=config.max_length)
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = output_dir / "metrics.jsonl"
    order = random.Random(config.seed)

    step, epoch_losses = 0, []
    for epoch in range(config.epochs):
        model.train()
        shuffled = order.sample(train_pairs, len(train_pairs))
        epoch_losses = []
        for start in range(0, len(shuffled), config.batch_size):
            chosen, rejected = pair_rewards(model, shuffled[start : start + config.batch_size])
            loss = bradley_terry_loss(chosen, rejected)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            epoch_losses.append(loss.item())
            if step % config.log_every == 0:
                accuracy = preference_accuracy(chosen.detach(), rejected.detach()).item()
                append_json_line(metrics_path, {"step": step, "rm/loss": loss.item(), "rm/accuracy": accuracy})
        evaluation = evaluate(model, eval_pairs, config.batch_size)
        append_json_line(
            metrics_path,
            {
                "step": step,
                "epoch": epoch + 1,
                "rm/epoch_loss": sum(epoch_losses) / len(epoch_losses),
                # JSON has no NaN: an absent held-out split is logged as null.
                **{f"rm/{k}": None if math.isnan(v) else v for k, v in evaluation.items()},
            },
        )

    if config.normalize_on == "train":
        # The paper normalises over samples from the initial policy; the training candidates are exactly those.
        reference = list(dict.fromkeys(c.prompt + text for c in train_set for text in c.candidates))
        stats = model.normalize(reference, batch_size=config.batch_size)
        append_json_line(
            metrics_path, {"step": step, "rm/raw_mean": stats["raw_mean"], "rm/raw_std": stats["raw_std"]}
        )
    model.eval()
    model.save_pretrained(output_dir)
    (output_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
    metrics = {
        "train_loss": sum(epoch_losses) / len(epoch_losses),
        **evaluation,
        "num_train_pairs": float(len(train_pairs)),
        "num_eval_pairs": float(len(eval_pairs)),
    }
    return model, metrics
