"""`trlx label` and `trlx train-rm`: the human-feedback half of the pipeline from the command line.

    trlx label --model gpt2-ckpt --prompts prompts.txt --out prefs.jsonl --num-candidates 2
    trlx train-rm rm.yml comparisons=prefs.jsonl lr=5e-5

`trlx label` samples candidates once and keeps them next to the answers (``<out>.candidates.jsonl``), so a
resumed session shows exactly the candidates the person was judging before, whatever sampling would give now.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trlx.feedback.label import run_labelling_session, sample_candidates
from trlx.feedback.store import append_json_line
from trlx.task import load_prompts as load_prompt_source

__all__ = ["label_main", "load_prompts", "train_rm_main"]


def load_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """Prompt strings from a prompts file (.txt, .jsonl or .csv, as for `trlx train`); repeats kept once, in order."""
    from trlx.data.prompts import to_prompts  # imports torch: not at module level, so `--help` answers at once

    prompts = list(dict.fromkeys(p.text for p in to_prompts(load_prompt_source(str(path)), str(path))))
    return prompts[:limit] if limit is not None else prompts


def candidates_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.stem + ".candidates.jsonl")


def load_candidates(path: Path) -> dict[str, list[str]]:
    """prompt -> candidates from the cache; a torn last line (crash while sampling) is dropped with a warning."""
    cache: dict[str, list[str]] = {}
    if not path.exists():
        return cache
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            cache[record["prompt"]] = [str(c) for c in record["candidates"]]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            warnings.warn(f"{path}:{lineno}: unreadable candidate line skipped ({err})", stacklevel=2)
    return cache


def _label_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trlx label", description="Compare sampled continuations and save choices.")
    parser.add_argument("--model", required=True, help="causal LM (HF format) that samples the candidates")
    parser.add_argument("--prompts", required=True, help=".txt (one prompt per line) or .jsonl with a prompt field")
    parser.add_argument("--out", required=True, help="JSONL file the comparisons are appended to")
    parser.add_argument("--num-candidates", type=int, default=2, help="continuations shown per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0, help="0 disables top-k truncation")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N prompts")
    parser.add_argument("--labeller", default=None, help="name stored with each judgement")
    parser.add_argument("--device", default=None)
    return parser


def label_main(
    argv: list[str] | None = None, console: Console | None = None, input_fn: Callable[[str], str] = input
) -> int:
    """Entry point of ``trlx label``; returns the process exit code."""
    parser = _label_parser()
    args = parser.parse_args(argv)
    if args.num_candidates < 2:
        parser.error(f"--num-candidates must be >= 2 to compare anything, got {args.num_candidates}")
    console = console or Console()
    out_path = Path(args.out)
    try:
        prompts = load_prompts(args.prompts, args.limit)
    except (OSError, ValueError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        return 2
    cache_path = candidates_path(out_path)
    cache = load_candidates(cache_path)
    missing = [p for p in prompts if p not in cache]
    if len(missing) < len(prompts):
        console.print(f"Reusing candidates for {len(prompts) - len(missing)} prompt(s) from {cache_path}.")
    if missing:
        console.print(f"Sampling {args.num_candidates} candidates for {len(missing)} prompt(s) from {args.model} ...")
        gen_kwargs = {
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
        }
        sampled = sample_candidates(
            args.model, missing, args.num_candidates, gen_kwargs, args.seed, args.batch_size, args.device
        )
        for prompt, candidates in zip(missing, sampled, strict=True):
            append_json_line(cache_path, {"prompt": prompt, "candidates": candidates})
            cache[prompt] = candidates
    tasks = [(prompt, cache[prompt]) for prompt in prompts]
    summary = run_labelling_session(tasks, out_path, console=console, input_fn=input_fn, labeller=args.labeller)
    console.print(
        f"{summary.labelled} labelled this session ({summary.ties} tie, {summary.skipped} skipped); "
        f"{summary.already_done + summary.labelled} of {summary.total} done."
    )
    return 0


def train_rm_main(argv: list[str] | None = None, console: Console | None = None) -> int:
    """Entry point of ``trlx train-rm CONFIG.yml [field=value ...]``; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="trlx train-rm", description="Train a reward model on comparisons.")
    parser.add_argument("config", help="YAML file of RewardModelConfig fields")
    parser.add_argument("overrides", nargs="*", help="field=value, e.g. lr=5e-5 epochs=2")
    args = parser.parse_args(argv)
    console = console or Console()
    # Imported here so `trlx label --help` does not pay for loading torch's training stack.
    from trlx.rewards.train_rm import RewardModelConfig, train_reward_model

    try:
        config = RewardModelConfig.from_yaml(args.config, args.overrides)
    except (OSError, ValueError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        return 2
    _, metrics = train_reward_model(config)
    table = Table(title=f"reward model saved to {config.output_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4g}")
    console.print(table)
    return 0
