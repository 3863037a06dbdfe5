"""A verifiable-reward task: GRPO teaches SmolLM2-135M-Instruct to answer small arithmetic word problems.

`trlx train configs/arithmetic.yml` trains it (the config names the pieces below in its `task:` section);
`python -m trlx.demos.arithmetic configs/arithmetic.yml [section.field=value ...]` does the same and then writes
the curve, the before/after samples table and summary.json, like the sentiment demo.

Each prompt is a chat conversation asking for the answer on a last line `Answer: <number>`; its metadata holds
the exact answer, which the programmatic checker compares with. Reward = 1 for the right number in that format
+ 0.2 for the format alone, so the untrained model (which rarely follows the format) still gets a gradient.
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trlx.rewards.combine import CombinedReward, RewardComponent

INSTRUCTION = "Reply with the result on the last line as 'Answer: <number>'."
NAMES = ["Sam", "Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Ines"]
THINGS = ["apples", "books", "stamps", "marbles", "pencils", "cookies", "shells", "cards"]
N_TRAIN, N_EVAL = 512, 64
ANSWER = re.compile(r"Answer:\s*(-?\d+)")


def problem(rng: random.Random) -> tuple[str, int]:
    """One word problem (addition or subtraction of two numbers up to 20) and its answer."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    if rng.random() < 0.5:
        return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b
    a, b = max(a, b), min(a, b)
    return f"{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have left?", a - b


def make_prompts(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, Any]]:
    """`n` distinct chat prompts `{"messages": [...], "answer": int}`, none of whose questions is in `exclude`."""
    rng, seen, out = random.Random(seed), set(exclude), []
    while len(out) < n:
        question, answer = problem(rng)
        if question in seen:
            continue
        seen.add(question)
        out.append({"messages": [{"role": "user", "content": f"{question} {INSTRUCTION}"}], "answer": answer})
    return out


def eval_prompts() -> list[dict[str, Any]]:
    """The held-out problems (`task.eval_prompts`)."""
    return make_prompts(N_EVAL, seed=1)


def train_prompts() -> list[dict[str, Any]]:
    """The training problems (`task.prompts`), disjoint from the held-out ones."""
    held_out = {p["messages"][0]["content"].removesuffix(f" {INSTRUCTION}") for p in eval_prompts()}
    return make_prompts(N_TRAIN, seed=0, exclude=held_out)


def final_answer(output: str) -> int | None:
    """The number on the last `Answer: N` line of a completion, or None when it has none."""
    found = ANSWER.findall(output)
    return int(found[-1]) if found else None


def correct(outputs: list[str], answer: list[int]) -> list[float]:
    """1 where the completion's final answer is exactly the problem's answer."""
    return [float(final_answer(o) == int(a)) for o, a in zip(outputs, answer, strict=True)]


def formatted(outputs: list[str]) -> list[float]:
    """1 where the completion states a final answer in the asked-for format."""
    return [float(final_answer(o) is not None) for o in outputs]


reward_fn = CombinedReward([RewardComponent("correct", correct, 1.0), RewardComponent("format", formatted, 0.2)])


def metric_fn(outputs: list[str], answer: list[int], **kwargs: Any) -> dict[str, list[float]]:
    """Held-out accuracy (exact answer) and format rate, per sample (trlx averages them)."""
    return {"accuracy": correct(outputs, answer), "format": formatted(outputs)}


# ---------------------------------------------------------------------------------------------- the demo run
def main(argv: Sequence[str] | None = None) -> int:
    """Train from the config (which writes report.html), then summary.json next to the metrics."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print("usage: python -m trlx.demos.arithmetic [CONFIG.yml] [section.field=value ...]")
        return 0
    import trlx
    from trlx.config import TRLConfig
    from trlx.demos.sentiment.run import fresh_output_dir
    from trlx.logging import read_metrics
    from trlx.report import first_and_latest

    path = args[0] if args and "=" not in args[0] else "configs/arithmetic.yml"
    overrides = args[1:] if args and path == args[0] else args
    config = TRLConfig.load_yaml(path).with_overrides(overrides)
    out = fresh_output_dir(Path(config.train.checkpoint_dir))
    start = time.perf_counter()
    trainer = trlx.train(config=config)
    metrics = read_metrics(out / "metrics.jsonl")
    evals = [m for m in metrics if "eval/accuracy" in m]
    rows = first_and_latest(read_metrics(out / "samples.jsonl"))
    summary = {
        "method": config.method.name,
        "steps": trainer.step,
        "eval_problems": len(rows),
        "accuracy_before": evals[0]["eval/accuracy"],
        "accuracy_after": evals[-1]["eval/accuracy"],
        "format_before": evals[0]["eval/format"],
        "format_after": evals[-1]["eval/format"],
        "wall_time_s": round(time.perf_counter() - start, 1),
        "output_dir": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"\n{summary['method']} arithmetic finished in {summary['wall_time_s'] / 60:.1f} min ({trainer.step} steps)\n"
        f"  held-out accuracy on {len(rows)} problems: {summary['accuracy_before']:.3f} -> "
        f"{summary['accuracy_after']:.3f} (format {summary['format_before']:.3f} -> {summary['format_after']:.3f})\n"
        f"  report: {out}/report.html  summary: {out}/summary.json",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
