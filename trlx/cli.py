"""`trlx` command line: `trlx train CONFIG.yml [section.field=value ...]`, plus the human-feedback tools."""

from __future__ import annotations

import argparse
import sys

from trlx.config import ConfigError, TRLConfig


def train_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="trlx train",
        description="Fine-tune a causal LM: online (PPO, GRPO, RLOO, REINFORCE++; the YAML's `task` section names "
        "the reward function and prompts; RFT too) or on a dataset (method.name=sft or dpo, task.samples).",
        epilog="example: trlx train configs/ppo_smollm2.yml train.seed=3 train.checkpoint_dir=runs/seed3",
    )
    parser.add_argument(
        "config", help="YAML file with sections train, model, tokenizer, optimizer, scheduler, method, task"
    )
    parser.add_argument("overrides", nargs="*", help="section.field=value (values parsed as YAML)")
    args = parser.parse_args(argv)
    try:
        config = TRLConfig.load_yaml(args.config).with_overrides(args.overrides)
    except (ConfigError, FileNotFoundError) as e:
        print(f"trlx train: {e}", file=sys.stderr)
        return 2
    if not config.method.trains_on_samples and not config.task.reward_fn:
        print("trlx train: the config needs task.reward_fn (e.g. task.reward_fn=my_module:reward)", file=sys.stderr)
        return 2
    if config.method.trains_on_samples and not config.task.samples:
        print(
            f"trlx train: method.name {config.method.name} trains on a dataset: set task.samples "
            "(e.g. task.samples=data/train.jsonl)",
            file=sys.stderr,
        )
        return 2
    import trlx

    try:  # what preflight refuses (before any model loads) is one line, not a traceback
        trainer = trlx.make_trainer(config=config)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as e:
        print(f"trlx train: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    trainer.learn()
    # Leave the process group together: a process exiting while another still tears down its communication
    # threads can abort (DeepSpeed) or hang (gloo: about one 2-process CPU run in six without the barrier).
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return 0


def report_main(argv: list[str]) -> int:
    """trlx report RUN_DIR: write RUN_DIR/report.html (curves, samples, token view, config)."""
    import argparse

    from trlx.report import write_report

    parser = argparse.ArgumentParser(prog="trlx report", description=report_main.__doc__)
    parser.add_argument("run_dir", help="a run folder (train.checkpoint_dir) holding metrics.jsonl")
    args = parser.parse_args(argv)
    try:
        out, problems = write_report(args.run_dir)
    except FileNotFoundError as e:
        print(f"trlx report: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"trlx report: {problem}", file=sys.stderr)
    print(f"trlx report: wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "train": "fine-tune a causal LM from a YAML config: PPO, GRPO, RLOO, REINFORCE++, SFT, DPO, ILQL or RFT",
        "label": "compare sampled continuations in the terminal and record preferences",
        "train-rm": "train a reward model from recorded comparisons",
        "report": "write RUN_DIR/report.html: curves, eval samples, token view and config of a run",
    }
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: trlx {" + ",".join(commands) + "} ...\n")
        for name, help_text in commands.items():
            print(f"  {name:<9} {help_text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        return train_main(rest)
    if command == "report":
        return report_main(rest)
    from trlx.feedback.cli import label_main, train_rm_main

    return label_main(rest) if command == "label" else train_rm_main(rest)


if __name__ == "__main__":
    sys.exit(main())
