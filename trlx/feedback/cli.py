"""`trlx label` and `trlx train-rm`: the human-feedback half of the pipeline from the command line.

    trlx label --model gpt2-ckpt --prompts prompts.txt --out prefs.jsonl --num-candidates 2
    trlx train-rm rm.yml comparisons=prefs.jsonl lr=5e-5

`trlx label` samples candidates once and keeps them next to the answers in ``<out>.candidates.jsonl`` (one JSON
line per prompt: ``{"prompt", "candidates", "sampling"}``, where ``sampling`` records --model, --num-candidates,
--seed, --max-new-tokens, --temperature, --top-k and --top-p), so a resumed session shows exactly the candidates
the person was judging before, whatever sampling would give now. A session whose sampling options differ from the
cache's is refused (exit 2) unless ``--resample`` is given, which samples new candidates with the new options;
judgements already in ``<out>`` are kept either way. Ctrl-C ends a session with exit status 130, everything judged
so far saved.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from trlx.feedback.label import run_labelling_session, sample_candidates
from trlx.feedback.store import append_json_line
from trlx.task import load_prompts as load_prompt_source

__all__ = ["label_main", "load_prompts", "train_rm_main"]

INTERRUPTED = 130  # the shell's status for a process ended by Ctrl-C (128 + SIGINT)


def load_prompts(path: str | Path, limit: int | None = None) -> list[str]:
    """Prompt strings from a prompts file (.txt, .jsonl or .csv, as for `trlx train`); repeats kept once, in order."""
    from trlx.data.prompts import to_prompts  # imports torch: not at module level, so `--help` answers at once

    prompts = list(dict.fromkeys(p.text for p in to_prompts(load_prompt_source(str(path)), str(path))))
    return prompts[:limit] if limit is not None else prompts


def candidates_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.stem + ".candidates.jsonl")


def load_candidates(path: Path) -> dict[str, tuple[list[str], dict[str, Any] | None]]:
    """prompt -> (candidates, sampling options they were drawn with; None in caches from before they were kept).

    A torn last line (crash while sampling) is dropped with a warning. A later line for a prompt wins.
    """
    cache: dict[str, tuple[list[str], dict[str, Any] | None]] = {}
    if not path.exists():
        return cache
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            cache[record["prompt"]] = ([str(c) for c in record["candidates"]], record.get("sampling"))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            warnings.warn(f"{path}:{lineno}: unreadable candidate line skipped ({err})", stacklevel=2)
    return cache


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options that decide which candidates `trlx label` samples (kept with them in the cache)."""
    return {
        "model": str(args.model),
        "num_candidates": args.num_candidates,
        "seed": args.seed,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
    }


def changed_options(cached: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`--flag OLD -> NEW` for each sampling option that differs between the cache and this session."""
    return [
        f"--{name.replace('_', '-')} {cached[name]} -> {value}"
        for name, value in now.items()
        if name in cached and cached[name] != value
    ]


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
    parser.add_argument(
        "--resample",
        action="store_true",
        help="sample new candidates when the cached ones were drawn with other options (judgements are kept)",
    )
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
    options = sampling_options(args)
    stale = {p: changed_options(cache[p][1] or {}, options) for p in prompts if p in cache}
    stale = {p: changes for p, changes in stale.items() if changes}
    if stale and not args.resample:
        console.print(
            f"[red]error:[/red] {escape(str(cache_path))} holds candidates for {len(stale)} of these prompts sampled "
            f"with other options ({escape(', '.join(next(iter(stale.values()))))}); rerun with the options they "
            "were sampled with to go on judging them, or add --resample to sample new ones with these options "
            f"(judgements already in {escape(str(out_path))} are kept)",
            highlight=False,
        )
        return 2
    missing = [p for p in prompts if p not in cache or p in stale]
    if len(missing) < len(prompts):
        console.print(f"Reusing candidates for {len(prompts) - len(missing)} prompt(s) from {cache_path}.")
    if missing:
        console.print(f"Sampling {args.num_candidates} candidates for {len(missing)} prompt(s) from {args.model} ...")
        gen_kwargs = {k: options[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p")}
        try:
            sampled = sample_candidates(
                args.model, missing, args.num_candidates, gen_kwargs, args.seed, args.batch_size, args.device
            )
        except KeyboardInterrupt:
            console.print("Interrupted while sampling; nothing was labelled.")
            return INTERRUPTED
        for prompt, candidates in zip(missing, sampled, strict=True):
            append_json_line(cache_path, {"prompt": prompt, "candidates": candidates, "sampling": options})
            cache[prompt] = (candidates, options)
    tasks = [(prompt, cache[prompt][0]) for prompt in prompts]
    summary = run_labelling_session(tasks, out_path, console=console, input_fn=input_fn, labeller=args.labeller)
    console.print(
        f"{summary.labelled} labelled this session ({summary.ties} tie, {summary.skipped} skipped); "
        f"{summary.already_done + summary.labelled} of {summary.total} done."
    )
    return INTERRUPTED if summary.interrupted else 0


def train_rm_main(argv: list[str] | None = None, console: Console | None = None) -> int:
    """Entry point of ``trlx train-rm CONFIG.yml [field=value ...]``; returns the process exit code."""
    from trlx.rewards.rm_config import RewardModelConfig, fields_help

    parser = argparse.ArgumentParser(
        prog="trlx train-rm",
        description="Train a reward model on comparisons.",
        epilog="CONFIG fields (YAML keys, or field=value overrides):\n" + fields_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="YAML file of RewardModelConfig fields")
    parser.add_argument("overrides", nargs="*", help="field=value, e.g. lr=5e-5 epochs=2")
    args = parser.parse_args(argv)
    console = console or Console()
    try:
        config = RewardModelConfig.from_yaml(args.config, args.overrides)
        if not Path(config.comparisons).is_file():
            raise FileNotFoundError(
                f"comparisons file {config.comparisons!r} does not exist: write one with "
                f"`trlx label --out {config.comparisons} ...`, or set comparisons= to the file `trlx label` wrote"
            )
    except (OSError, ValueError) as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
        return 2
    # Imported here so `--help` and the errors above do not pay for loading torch's training stack.
    from trlx.rewards.train_rm import train_reward_model

    _, metrics = train_reward_model(config)
    table = Table(title=f"reward model saved to {config.output_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4g}")
    console.print(table)
    return 0
