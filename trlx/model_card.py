"""Model cards: every saved checkpoint folder gets a README.md in the Hugging Face format (YAML front matter, then
markdown), so the folder can be pushed to a hub as it is and says where it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

CARD_FILE = "README.md"
ONLINE_TAGS = {"ppo": "ppo", "grpo": "grpo", "rloo": "rloo", "reinforce_pp": "reinforce++"}


def latest_eval(metrics_path: Path) -> dict[str, Any]:
    """The last evaluation row of a run's metrics.jsonl ({} before the first one, or without the file)."""
    if not metrics_path.is_file():
        return {}
    last: dict[str, Any] = {}
    for line in metrics_path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line: the card is informative, the log itself is checked elsewhere
        if any(k.startswith("eval/") for k in row):
            last = row
    return last


def model_card(config: dict[str, Any], step: int, evaluation: dict[str, Any], folder: str) -> str:
    """The README.md of a checkpoint written at `step` of a run with `config` (TRLConfig.to_dict())."""
    method = config["method"]["name"]
    base = config["model"]["model_path"]
    task = config.get("task") or {}
    data = task.get("samples") or task.get("prompts")
    tags = ["trlx", ONLINE_TAGS.get(method, method)]
    if method in ONLINE_TAGS or method == "rft":
        tags.append("rlhf")
    metrics = {k: v for k, v in evaluation.items() if k.startswith("eval/")}
    front = {
        "base_model": base,
        "library_name": "transformers",
        "pipeline_tag": "text-generation",
        "tags": tags,
        "trlx": {"method": method, "step": step, "data": data, "eval_step": evaluation.get("step"), "eval": metrics},
    }
    optimizer = config["optimizer"]
    lines = [
        "---",
        yaml.safe_dump(front, sort_keys=False).strip(),
        "---",
        "",
        f"# {Path(folder).name}",
        "",
        f"`{base}` fine-tuned with [trlx](https://github.com/CarperAI/trlx) ({method}), saved at step {step}.",
        "",
        "## Load",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{folder}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{folder}")',
        "```",
        "",
        "## Training",
        "",
        "| setting | value |",
        "| --- | --- |",
        f"| method | `{method}` |",
        f"| data | `{data}` |" if data else "| data | passed to `trlx.train` in Python |",
        f"| optimizer | `{optimizer['name']}` {json.dumps(optimizer.get('kwargs', {}))} |",
        f"| batch size | {config['train']['batch_size']} |",
        f"| trained layers | {config['model']['num_layers_unfrozen']} (-1: all) |",
        "",
        "The full configuration is `trlx_config.yml` in this folder (checkpoints written for resuming).",
    ]
    if metrics:
        lines += ["", f"## Evaluation (step {evaluation.get('step')})", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| `{k}` | {v:.4g} |" if isinstance(v, float) else f"| `{k}` | {v} |" for k, v in metrics.items()]
    return "\n".join(lines) + "\n"


def write_model_card(
    folder: Path, config: dict[str, Any], step: int, metrics_path: Path | None, final_folder: Path | None = None
) -> None:
    """README.md into `folder`, naming `final_folder` (where the folder will be renamed to) in its load command."""
    evaluation = latest_eval(metrics_path) if metrics_path is not None else {}
    card = model_card(config, step, evaluation, str(final_folder or folder))
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
