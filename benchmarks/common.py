"""Shared by the benchmark scripts (each is run as `python benchmarks/NAME.py`, so this folder is on sys.path)."""

# Review openings for the 135M model; the tiny model's word-level tokenizer maps unknown words to [UNK].
PROMPTS = [
    "The movie was",
    "I went to see this film because",
    "The acting in this one",
    "Honestly, the plot",
    "My favourite scene is when",
    "The director clearly",
    "After the first hour",
    "This is the kind of film that",
]


def report(header: list[str], results: list[dict], out: str, **extra) -> None:
    """Print `results` as a Markdown table with `header` columns and write them, with machine facts, as JSON."""
    import json
    import os
    import platform
    from pathlib import Path

    import torch

    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        print("| " + " | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in header) + " |")
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"machine": machine, **extra, "results": results}, indent=2))
    print(f"wrote {path}")
