"""Rejection-sampling fine-tuning (trlX's RFT; the "grow / improve" loop of ReST, Gulcehre et al. 2023), as an
objective of the offline loop.

Every pass over the data is one improve step. At the first pass of every `n_improve_steps`, a growth step
samples `n_generations_per_prompt` completions of each prompt with the current policy and scores them with
reward_fn; the completions collected so far stay. Each improve step keeps, per prompt, the completions whose
score reaches that prompt's percentile threshold, rising linearly from `start_percentile` to `end_percentile`
over the improve steps, and fine-tunes on them (SFT on the completion; duplicates kept once).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from trlx.config import PPOConfig
from trlx.data.prompts import PromptPipeline
from trlx.data.samples import TokenizedExample, dialogue_example, truncate
from trlx.distributed import global_max, global_mean
from trlx.rewards.scoring import RewardError, compute_scores
from trlx.trainers import common
from trlx.trainers.objectives import SFTObjective


def percentile_thresholds(scores: list[list[float]], percentile: float) -> np.ndarray:
    """Each prompt's score threshold: the `percentile` quantile of its completions' scores, clipped (as trlX does)
    to the range between the lowest and the highest prompt threshold minus/plus 1e-3, so with quantized rewards
    the prompts whose completions all score the minimum keep none and those that all score the maximum keep all.

    scores: one list of completion scores per prompt; returns (P,) thresholds.
    """
    thresholds = np.array([np.quantile(np.array(s), percentile) for s in scores])
    return np.clip(thresholds, thresholds.min() + 1e-3, thresholds.max() - 1e-3)


def select(
    completions: list[list[tuple[str, float]]], percentile: float
) -> tuple[list[tuple[int, str]], dict[str, float]]:
    """(prompt index, completion) pairs at or above their prompt's threshold, each kept once, in order; and the
    selection's statistics."""
    scores = [[score for _, score in c] for c in completions]
    thresholds = percentile_thresholds(scores, percentile)
    selected: dict[tuple[int, str], None] = {}
    for i, (c, threshold) in enumerate(zip(completions, thresholds)):
        for output, score in c:
            if score >= threshold:
                selected[(i, output)] = None
    stats = {
        "rft/percentile": percentile,
        "rft/threshold_mean": float(thresholds.mean()),
        "rft/score_mean": float(np.mean(np.concatenate([np.array(s) for s in scores]))),
        "rft/completions": float(sum(len(s) for s in scores)),
    }
    return list(selected), stats


class RFTObjective:
    """The SFT loss on the completions the current improve step selects from this process's prompts."""

    def __init__(self, prompts: PromptPipeline, method: PPOConfig, tokenizer: Any, max_length: int) -> None:
        self.prompts = prompts
        self.method = method
        self.tokenizer = tokenizer
        self.max_length = max_length
        # Every completion sampled so far, per prompt of this process: (output text, score).
        self.completions: list[list[tuple[str, float]]] = [[] for _ in range(len(prompts))]
        self.selected: list[tuple[int, str]] = []  # this pass's data, evened out over the processes
        self.sft = SFTObjective([], tokenizer.pad_token_id)
        self.lengths: list[int] = []

    # ------------------------------------------------------------------ one pass
    def start_pass(self, trainer: Any, epoch: int) -> None:
        """Grow (at every n_improve_steps-th pass), then select this improve step's data and log its statistics."""
        grown = {}
        if epoch % self.method.n_improve_steps == 0:
            grown = {"rft/sampled_mean": self.grow(trainer)}
        step = epoch % self.method.n_improve_steps
        delta = (self.method.end_percentile - self.method.start_percentile) / self.method.n_improve_steps
        selected, stats = select(self.completions, self.method.start_percentile + delta * step)
        if not selected:  # cannot happen with the thresholds' clipping, unless this process has no prompts
            raise ValueError("rft selected no completion on this process: give it prompts (len(prompts) >= processes)")
        self.set_selection(even_out(trainer.accelerator, selected))
        stats["rft/selected"] = float(len(self.selected))
        common.log(trainer, {"step": trainer.step, "epoch": epoch, **grown, **stats})

    @torch.no_grad()
    def grow(self, trainer: Any) -> float:
        """Sample n_generations_per_prompt completions of every prompt with the current policy and score them;
        returns their mean score over all processes (the policy's reward now)."""
        n = self.method.n_generations_per_prompt
        indices = [i for i in range(len(self.prompts)) for _ in range(n)]
        new_scores: list[Tensor] = []
        for start in range(0, len(indices), self.method.chunk_size):
            chunk = indices[start : start + self.method.chunk_size]
            generation = common.sample(trainer, self.prompts.batch(chunk))
            scores, dense = compute_scores(
                trainer.reward_fn, generation, self.tokenizer, trainer.config.train.reward_timeout_s
            )
            if dense is not None:
                raise RewardError("rft selects whole completions: reward_fn must return one score per sample")
            for i, output, score in zip(chunk, generation.outputs, scores.tolist()):
                self.completions[i].append((output, float(score)))
            new_scores.append(scores)
        return global_mean(trainer.accelerator, torch.cat(new_scores))

    def set_selection(self, selected: list[tuple[int, str]]) -> None:
        self.selected = selected
        examples = [self.example(i, output) for i, output in selected]
        self.sft = SFTObjective(examples, self.tokenizer.pad_token_id)
        self.lengths = self.sft.lengths

    def example(self, index: int, output: str) -> TokenizedExample:
        """A selected completion as an SFT example: its prompt is context, the completion (+ EOS) is learned."""
        pieces = [self.prompts.prompts[index].text, output if output.strip() else ""]
        if not pieces[1]:  # an empty completion (EOS at once): learn just the EOS
            return TokenizedExample(self.prompts.token_ids[index], [self.tokenizer.eos_token_id], [True])
        example, _ = truncate(dialogue_example(pieces, self.tokenizer, f"prompt {index}"), self.max_length, "")
        return example

    # ------------------------------------------------------------------ the Objective protocol
    def batch(self, indices: Any) -> Any:
        return self.sft.batch(indices)

    def normalizer(self, batch: Any) -> Tensor:
        return self.sft.normalizer(batch)

    def loss(self, policy: Any, micro: Any, total: Tensor) -> tuple[Tensor, dict[str, float], float]:
        return self.sft.loss(policy, micro, total)

    end_step = SFTObjective.end_step

    def state_dict(self) -> dict[str, Any]:
        return {"completions": self.completions, "selected": self.selected}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.completions = [[(str(o), float(s)) for o, s in c] for c in state["completions"]]
        self.set_selection([(int(i), str(o)) for i, o in state["selected"]])


def even_out(accelerator: Any, selected: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """This process's selection repeated (cyclically) to the largest count of any process, so every process
    takes the same number of steps in the pass (DDP steps together)."""
    most = int(global_max(accelerator, torch.tensor(float(len(selected)))))
    return [selected[i % len(selected)] for i in range(most)] if most > len(selected) else selected
