"""Evaluation for every trainer: sample the eval prompts, score them with reward_fn and metric_fn, and gather the
results over processes (so every process computes the same numbers)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PreTrainedTokenizerBase

from trlx.data.prompts import PromptPipeline
from trlx.distributed import gather_lists
from trlx.rewards.scoring import NonFiniteRewardError, call_metric_fn, compute_scores, reward_kwargs
from trlx.types import Generation, PromptBatch


@dataclass
class EvalSamples:
    """One process's share of an evaluation: scores, sample rows ({prompt, output, reward}), (metric, value) pairs,
    and the first non-finite reward seen, if any."""

    scores: list[float] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    metric_values: list[tuple[str, float]] = field(default_factory=list)
    problem: str | None = None


def sample_eval_prompts(
    prompts: PromptPipeline,
    chunk_size: int,
    generate: Callable[[PromptBatch], Generation],
    reward_fn: Callable[..., Any] | None,
    metric_fn: Callable[..., dict[str, Any]] | None,
    tokenizer: PreTrainedTokenizerBase,
    reward_timeout_s: float | None,
) -> EvalSamples:
    """Generate and score this process's eval prompts in chunks. Padding prompts (repeats that give every process
    an equal share, `keep` False) are generated, then dropped; after a non-finite reward generation goes on, in
    step with the other processes (generation can be collective)."""
    out = EvalSamples()
    for start in range(0, len(prompts), chunk_size):
        indices = list(range(start, min(start + chunk_size, len(prompts))))
        keep = [prompts.keep[i] for i in indices]
        generation = generate(prompts.batch(indices))
        scores: list[float | None] = [None] * len(indices)  # without a reward_fn: samples and metrics only
        if reward_fn is not None:
            try:
                scores = [float(s) for s in compute_scores(reward_fn, generation, tokenizer, reward_timeout_s)[0]]
            except NonFiniteRewardError as e:
                out.problem = out.problem or str(e)
                continue
            out.scores += [s for s, k in zip(scores, keep) if k]
        out.rows += [
            {"prompt": p, "output": o, "reward": s}
            for p, o, s, k in zip(generation.prompt.prompts, generation.outputs, scores, keep)
            if k
        ]
        if metric_fn is not None and any(keep):
            for key, value in call_metric_fn(metric_fn, reward_kwargs(generation, tokenizer)).items():
                if isinstance(value, list) and len(value) == len(keep):
                    value = [v for v, k in zip(value, keep) if k]
                out.metric_values += [(key, float(v)) for v in (value if isinstance(value, list) else [value])]
    return out


def gathered_eval_metrics(
    accelerator: Accelerator, samples: EvalSamples
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """`eval/reward_mean`, `eval/reward_std` and `eval/<metric>` (means) over all processes, and all sample rows."""
    all_scores = torch.tensor(gather_lists(accelerator, samples.scores), dtype=torch.float64)
    metrics: dict[str, Any] = {}
    if len(all_scores):  # none without a reward_fn
        metrics = {"eval/reward_mean": all_scores.mean().item(), "eval/reward_std": all_scores.std().item()}
    for key, value in gather_lists(accelerator, samples.metric_values):
        metrics.setdefault(f"eval/{key}", []).append(value)
    metrics = {k: v if isinstance(v, float) else sum(v) / len(v) for k, v in metrics.items()}
    return metrics, gather_lists(accelerator, samples.rows)
