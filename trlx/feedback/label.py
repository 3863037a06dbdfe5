"""Collect human comparisons: sample candidate continuations, then ask a person which is best.

The terminal session is deliberately plain: the prompt and the numbered candidates are printed with rich, and the
person types ``1``..``n`` (best candidate), ``t`` (tie), ``s`` (skip) or ``q`` (quit). Every answer is appended to
the JSONL store at once, and a later session over the same tasks starts where the last one stopped. This module
must not import anything from Jupyter; the notebook front end lives in ``trlx.feedback.notebook``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from trlx.feedback.store import Comparison, append_comparison, read_comparisons, task_key

__all__ = [
    "Judgement",
    "LabellingQueue",
    "LabellingSummary",
    "Task",
    "generate_continuations",
    "parse_answer",
    "run_labelling_session",
    "sample_candidates",
]

Task = tuple[str, Sequence[str]]
"""(prompt, candidates): one question put to a labeller."""

Judgement = int | Literal["tie", "skip"]
"""A 0-based candidate index, or one of the two non-choices."""

DEFAULT_GEN_KWARGS: dict[str, Any] = {"do_sample": True, "top_k": 0, "top_p": 1.0, "max_new_tokens": 32}


def sample_candidates(
    model_path: str | os.PathLike[str],
    prompts: Sequence[str],
    num_candidates: int = 2,
    gen_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 8,
    device: str | None = None,
) -> list[list[str]]:
    """Sample ``num_candidates`` continuations per prompt from a causal LM; returns (len(prompts), num_candidates).

    Plain ancestral sampling by default (top_k=0, top_p=1): the paper samples candidates from the policy being
    trained, and truncation would hide exactly the behaviour the labellers should judge.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if num_candidates < 2:
        raise ValueError(f"num_candidates must be >= 2 to compare anything, got {num_candidates}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path).to(device)
    return generate_continuations(model, tokenizer, prompts, num_candidates, gen_kwargs, seed, batch_size)


def generate_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    num_return_sequences: int = 1,
    gen_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> list[list[str]]:
    """Continuations (text after the prompt) of a loaded causal LM: (len(prompts), num_return_sequences)."""
    import torch

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = {**DEFAULT_GEN_KWARGS, **(gen_kwargs or {}), "num_return_sequences": num_return_sequences}
    kwargs.setdefault("pad_token_id", tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    continuations: list[list[str]] = []
    for start in range(0, len(prompts), batch_size):
        batch = list(prompts[start : start + batch_size])
        # Left-pad so every prompt ends at the same column and generation starts together for the whole batch.
        enc = tokenizer(batch, return_tensors="pt", padding=True, padding_side="left").to(device)
        with torch.no_grad():
            out = model.generate(**enc, **kwargs)
        texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        # generate() returns the samples of one prompt next to each other.
        k = num_return_sequences
        continuations.extend(texts[i : i + k] for i in range(0, len(texts), k))
    model.train(was_training)
    return continuations


def parse_answer(text: str, num_candidates: int) -> Judgement | Literal["quit"] | None:
    """Map typed input to a judgement; None when the input means nothing (the caller asks again)."""
    answer = text.strip().lower()
    if answer in ("t", "tie"):
        return "tie"
    if answer in ("s", "skip"):
        return "skip"
    if answer in ("q", "quit"):
        return "quit"
    if answer.isdigit() and 1 <= int(answer) <= num_candidates:
        return int(answer) - 1
    return None


class LabellingQueue:
    """The tasks still to be judged for ``out_path``, and the one place judgements are written.

    Tasks already in ``out_path`` (same prompt and same candidates, in order) are dropped, as are repeats within
    ``tasks``. A line torn by a crash is skipped with a warning; its task is not recorded, so it is asked again.
    """

    def __init__(self, tasks: Iterable[Task], out_path: str | os.PathLike[str], labeller: str | None = None):
        self.out_path = Path(out_path)
        self.labeller = labeller
        done = set()
        if self.out_path.exists():
            done = {c.key for c in read_comparisons(self.out_path, skip_malformed=True)}
        self.pending: list[Task] = []
        self.already_done = 0
        seen = set()
        for prompt, candidates in tasks:
            key = task_key(prompt, candidates)
            if key in seen:
                continue
            seen.add(key)
            if key in done:
                self.already_done += 1
            else:
                self.pending.append((prompt, list(candidates)))
        self.total = len(seen)
        self._position = 0

    @property
    def current(self) -> Task | None:
        return self.pending[self._position] if self._position < len(self.pending) else None

    @property
    def remaining(self) -> int:
        return len(self.pending) - self._position

    def record(self, judgement: Judgement) -> Comparison:
        """Write the judgement of the current task durably, then move to the next task."""
        task = self.current
        if task is None:
            raise IndexError("no task left to judge")
        prompt, candidates = task
        comparison = Comparison(
            prompt=prompt,
            candidates=list(candidates),
            choice=judgement if isinstance(judgement, int) else None,
            tie=judgement == "tie",
            skipped=judgement == "skip",
            labeller=self.labeller,
        )
        append_comparison(self.out_path, comparison)
        self._position += 1
        return comparison


@dataclass(frozen=True)
class LabellingSummary:
    """What one session did. ``remaining`` counts tasks that are still unjudged after it."""

    total: int
    already_done: int
    labelled: int
    ties: int
    skipped: int
    quit: bool
    remaining: int
    interrupted: bool = False  # ended by Ctrl-C (quit is then True too)


def render_task(console: Console, number: int, total: int, prompt: str, candidates: Sequence[str]) -> None:
    # Text objects, not markup strings: model output routinely contains "[...]" that rich would eat as tags.
    console.rule(f"Comparison {number} of {total}")
    console.print(Panel(Text(prompt), title="prompt", title_align="left"))
    for i, candidate in enumerate(candidates, start=1):
        console.print(Panel(Text(candidate), title=f"[{i}]", title_align="left"))


def _ask(
    console: Console, input_fn: Callable[[str], str], num_candidates: int
) -> Judgement | Literal["quit", "interrupt"]:
    question = f"Best candidate 1-{num_candidates}, t = tie, s = skip, q = quit: "
    while True:
        # Ctrl-D / Ctrl-C / the end of scripted input: everything judged so far is already on disk.
        try:
            answer = parse_answer(input_fn(question), num_candidates)
        except EOFError:
            return "quit"
        except KeyboardInterrupt:
            return "interrupt"
        if answer is not None:
            return answer
        console.print(f"[red]Please answer 1-{num_candidates}, t, s or q.[/red]")


def run_labelling_session(
    tasks: Iterable[Task],
    out_path: str | os.PathLike[str],
    console: Console | None = None,
    input_fn: Callable[[str], str] = input,
    labeller: str | None = None,
) -> LabellingSummary:
    """Ask a person to judge each task not yet in ``out_path``; append each judgement the moment it is given."""
    console = console or Console()
    queue = LabellingQueue(tasks, out_path, labeller=labeller)
    if queue.already_done:
        console.print(f"Resuming: {queue.already_done} of {queue.total} already labelled in {queue.out_path}.")
    labelled = ties = skipped = 0
    quit_early = interrupted = False
    while (task := queue.current) is not None:
        prompt, candidates = task
        render_task(console, queue.already_done + labelled + 1, queue.total, prompt, candidates)
        answer = _ask(console, input_fn, len(candidates))
        if answer in ("quit", "interrupt"):
            quit_early, interrupted = True, answer == "interrupt"
            break
        queue.record(answer)
        labelled += 1
        ties += answer == "tie"
        skipped += answer == "skip"
    console.print(f"Saved {labelled} judgement(s) to {queue.out_path}; {queue.remaining} left.")
    return LabellingSummary(
        total=queue.total,
        already_done=queue.already_done,
        labelled=labelled,
        ties=ties,
        skipped=skipped,
        quit=quit_early,
        remaining=queue.remaining,
        interrupted=interrupted,
    )
