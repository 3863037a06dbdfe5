"""Checkpoints that resume exactly, written atomically: tensors in safetensors, everything else in JSON.

A checkpoint folder holds

    config.json, model*.safetensors, tokenizer files   the policy, loadable by AutoModelForCausalLM
    README.md                                          its model card (Hugging Face format: base model, method,
                                                       data, the latest evaluation, how to load it)
    adapter/                                           LoRA adapters (peft format), when model.peft_config is set;
                                                       the model files above then hold the merged weights
    value_head.safetensors                             the value head (PPO only: the other methods have none)
    ilql_heads.safetensors                             ILQL's Q, target-Q and V heads (ILQL only)
    optimizer.safetensors                              optimizer and scheduler tensors (moments, step counts)
    rng_state_<rank>.safetensors                       each process's python/numpy/torch/CUDA RNG state
    rollout_<rank>.safetensors                         each process's in-flight rollout, if the save fell mid-rollout
    trainer_state.json                                 counters, KL controller, reward statistics, best eval reward,
                                                       optimizer/scheduler structure, each process's prompt position
    trlx_config.yml                                    the run's configuration

Nothing is ever unpickled: JSON holds the structure and names the tensors it refers to.
`<checkpoint_dir>/latest` names the newest `checkpoint_NNNNN` folder and is only rewritten after that folder
is complete, so a crash mid-save leaves `latest` pointing at the previous, intact checkpoint.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from trlx.config import TRLConfig, method_name
from trlx.distributed import engine_owns_model, gathered_state_dict, unwrap
from trlx.model_card import write_model_card
from trlx.models.lora import ADAPTER_DIR, save_lm
from trlx.models.policy import PolicyWithValueHead, model_config
from trlx.report import FIGURES_DIR, REPORT_FILE, TOKEN_VIEW_FILE
from trlx.trackers import TRACKER_DIRS
from trlx.types import RolloutBatch

VALUE_HEAD_FILE = "value_head.safetensors"
ILQL_HEADS_FILE = "ilql_heads.safetensors"
# The heads a policy may carry beside its LM (attribute -> file), and the method whose checkpoints hold each.
HEAD_FILES = {"value_head": (VALUE_HEAD_FILE, "ppo"), "ilql_heads": (ILQL_HEADS_FILE, "ilql")}
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "trainer_state.json"
CONFIG_FILE = "trlx_config.yml"
LATEST_FILE = "latest"
LOG_FILES = ("metrics.jsonl", "samples.jsonl")
BEST_DIR = "best_checkpoint"
INITIAL_MODEL_DIR = "initial_model"  # a model built from a PretrainedConfig, saved before training
REPORT_OUTPUTS = (REPORT_FILE, FIGURES_DIR, TOKEN_VIEW_FILE)  # trlx.report
_CHECKPOINT_RE = re.compile(r"^checkpoint_(\d+)$")

# (tensors, JSON-able metadata) to be written as one safetensors file.
TensorFile = tuple[dict[str, torch.Tensor], dict[str, Any] | None]


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, or does not fit the current run."""


def checkpoint_name(step: int) -> str:
    return f"checkpoint_{step:05d}"


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a `checkpoint_NNNNN` folder, None for any other name (e.g. best_checkpoint)."""
    match = _CHECKPOINT_RE.match(Path(path).name)
    return int(match.group(1)) if match else None


def rng_file(rank: int) -> str:
    return f"rng_state_{rank}.safetensors"


def rollout_file(rank: int) -> str:
    return f"rollout_{rank}.safetensors"


# ---------------------------------------------------------------------------------------------- writing
def save_checkpoint(
    dest: str | Path,
    policy: PolicyWithValueHead,
    tokenizer: PreTrainedTokenizerBase,
    state: dict[str, Any],
    config: dict[str, Any],
    tensor_files: dict[str, TensorFile] | None = None,
    full_state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write the policy (loadable by AutoModelForCausalLM), its tokenizer, value head, state and `tensor_files`.

    Everything goes to a hidden temporary folder first and is renamed into place, so a crash mid-save never
    leaves a half-written checkpoint under the final name.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        # `full_state_dict`: the policy's weights gathered from ZeRO-3/FSDP shards (keys `lm.*`, `value_head.*`).
        full = full_state_dict or {}
        write_hf_model(policy, tokenizer, tmp, full)
        for attribute, (file, _) in HEAD_FILES.items():
            module = getattr(policy, attribute, None)
            if module is None:
                continue
            prefix = f"{attribute}."
            head = {k[len(prefix) :]: v for k, v in full.items() if k.startswith(prefix)}
            head = {k: v.detach().cpu().contiguous() for k, v in (head or module.state_dict()).items()}
            save_file(head, str(tmp / file))
        for name, (tensors, metadata) in (tensor_files or {}).items():
            meta = None if metadata is None else {"json": json.dumps(metadata)}
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / name), metadata=meta)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        if config:  # a run's checkpoint: its model card (building-block tests save without a config)
            write_model_card(tmp, config, int(state.get("step", 0)), dest.parent / LOG_FILES[0], dest)
        _fsync_tree(tmp)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _fsync_tree(folder: Path) -> None:
    """Flush file contents to disk before the rename publishes them (else a power cut can leave empty files)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def replace_dir(src: Path, dest: Path) -> None:
    """Move folder `src` to `dest`, replacing an existing `dest` with at most a moment without one."""
    if dest.exists():
        old = dest.parent / f".old-{dest.name}-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dest)


def write_latest(checkpoint_dir: str | Path, checkpoint: str | Path) -> None:
    """Point `<checkpoint_dir>/latest` at `checkpoint` (a folder name) with an atomic rename."""
    checkpoint_dir = Path(checkpoint_dir)
    tmp = checkpoint_dir / f".{LATEST_FILE}-{os.getpid()}"
    with tmp.open("w") as f:
        f.write(Path(checkpoint).name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, checkpoint_dir / LATEST_FILE)


def read_latest(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint folder `latest` names, or None when no checkpoint has landed in `checkpoint_dir`."""
    pointer = Path(checkpoint_dir) / LATEST_FILE
    if not pointer.is_file():
        return None
    return Path(checkpoint_dir) / pointer.read_text().strip()


def prune_checkpoints(checkpoint_dir: str | Path, keep: int) -> list[Path]:
    """Delete all but the `keep` highest-step `checkpoint_NNNNN` folders; never the one `latest` names.

    `best_checkpoint` and other folders are not `checkpoint_NNNNN` and are never touched.
    """
    checkpoint_dir = Path(checkpoint_dir)
    found = sorted(
        (p for p in checkpoint_dir.iterdir() if p.is_dir() and checkpoint_step(p) is not None),
        key=checkpoint_step,
    )
    latest = read_latest(checkpoint_dir)
    removed = []
    for path in found[: max(len(found) - keep, 0)]:
        if latest is not None and path.name == latest.name:
            continue
        shutil.rmtree(path)
        removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------------- run folder
def earlier_run_outputs(checkpoint_dir: str | Path) -> list[Path]:
    """What an earlier run left in `checkpoint_dir` that a new run would append to or overwrite: the logs,
    `latest`, `checkpoint_NNNNN/`, `best_checkpoint/`, `initial_model/`, the default tracker folders and the report.
    Other files are not trlx's and never count (or get deleted)."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    names = {*LOG_FILES, LATEST_FILE, BEST_DIR, *TRACKER_DIRS, *REPORT_OUTPUTS, INITIAL_MODEL_DIR}
    return sorted(p for p in root.iterdir() if p.name in names or checkpoint_step(p) is not None)


def check_output_dir(train: Any) -> None:
    """Refuse, before any model loads, a `train.checkpoint_dir` that cannot be written or that holds another
    run's results when this run neither resumes it nor was told to overwrite it."""
    root = Path(train.checkpoint_dir).expanduser()
    existing = next((p for p in (root, *root.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise CheckpointError(f"train.checkpoint_dir: {str(existing)!r} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise CheckpointError(f"train.checkpoint_dir: {str(existing)!r} is not writable")
    if train.resume_from_checkpoint is not None or train.overwrite_output_dir:
        return
    found = earlier_run_outputs(root)
    if found:
        shown = ", ".join(p.name for p in found[:4]) + (", ..." if len(found) > 4 else "")
        raise CheckpointError(
            f"train.checkpoint_dir: {str(root)!r} already holds another run's results ({shown}); starting a new run "
            "there would overwrite them. Continue that run with train.resume_from_checkpoint=latest, or start "
            "afresh in a new or empty folder (train.checkpoint_dir=...), or delete its results first with "
            "train.overwrite_output_dir=true"
        )


def clear_run_outputs(checkpoint_dir: str | Path) -> None:
    """Delete `earlier_run_outputs` (train.overwrite_output_dir); anything else in the folder stays."""
    for path in earlier_run_outputs(checkpoint_dir):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


# ---------------------------------------------------------------------------------------------- resolving
def resolve_checkpoint(checkpoint_dir: str | Path, value: str) -> Path:
    """The folder `train.resume_from_checkpoint` refers to: a path, or `latest` inside `checkpoint_dir`.

    Raises CheckpointError naming the field when the folder is missing or incomplete.
    """
    if value == "latest":
        path = read_latest(checkpoint_dir)
        if path is None:
            raise CheckpointError(
                f"train.resume_from_checkpoint=latest but {Path(checkpoint_dir) / LATEST_FILE} does not exist: no "
                "checkpoint has been written to train.checkpoint_dir yet; start without resume_from_checkpoint or "
                "point it at a checkpoint folder"
            )
    else:
        path = Path(value).expanduser()
    if not path.is_dir():
        raise CheckpointError(f"train.resume_from_checkpoint: checkpoint folder {str(path)!r} does not exist")
    required = [STATE_FILE, OPTIMIZER_FILE, rng_file(0)]
    if (path / CONFIG_FILE).is_file():  # PPO's checkpoints hold its critic, ILQL's its heads; the others none
        method = saved_method(load_saved_config(path))
        required += [file for file, owner in HEAD_FILES.values() if owner == method]
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        raise CheckpointError(
            f"train.resume_from_checkpoint: {str(path)!r} is not a complete trlx checkpoint (missing "
            f"{', '.join(missing)}); point it at a checkpoint_NNNNN folder written by trlx"
        )
    return path


def check_resumable(path: Path, config: Any, num_processes: int) -> None:
    """Fail before any model is loaded if the run cannot continue exactly from checkpoint `path`."""
    state = load_state(path)
    if "optimizer" in state and state["optimizer"] is None:
        raise CheckpointError(
            f"train.resume_from_checkpoint: {str(path)!r} was written under DeepSpeed or FSDP, whose optimizer state "
            "is partitioned over the processes and not saved; exact resume is supported with DDP or one process"
        )
    saved_processes = int(state.get("num_processes", 1))
    if saved_processes != num_processes:
        raise CheckpointError(
            f"train.resume_from_checkpoint: {str(path)!r} was written by {saved_processes} process(es) but this run "
            f"has {num_processes}; exact resume needs each process's RNG state (and in-flight rollout), so launch "
            f"with {saved_processes} process(es)"
        )
    saved = load_saved_config(path)
    # A method's checkpoint holds its own trainable parameters (a value head or not) and optimizer state.
    before = saved_method(saved)
    if before != config.method.name:
        raise CheckpointError(
            f"method.name is {config.method.name} but checkpoint {str(path)!r} was written by {before}; resume with "
            f"method.name={before}, or start a new run (from its weights: model.model_path={str(path)!r})"
        )
    check_same_model(path, saved, config.model.model_path)
    if state.get("rollout") is None:
        return
    # Mid-rollout: without a reference the saved rollout's reference log-probs are the policy's own, which a run
    # with KL would silently pull toward.
    if TRLConfig.from_dict(saved).method.uses_reference != config.method.uses_reference:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was saved mid-rollout by a run "
            f"{'with' if not config.method.uses_reference else 'without'} a reference model (KL), and this run "
            f"{'has' if config.method.uses_reference else 'has none'}; resume with the KL settings it was saved with "
            "(method.init_kl_coef, kl_loss_coef, target, kl_max; they can change once that rollout is finished)"
        )
    # The saved minibatch position only means the same thing with the same rollout shape.
    fields = (
        ("method", "num_rollouts"),
        ("train", "batch_size"),
        ("method", "ppo_epochs"),
        ("method", "num_generations"),
    )
    for section, name in fields:
        before, now = saved[section].get(name, 1), getattr(getattr(config, section), name)
        if before != now:
            raise CheckpointError(
                f"{section}.{name} is {now} but checkpoint {str(path)!r} was saved mid-rollout with {before}; "
                f"resume with {section}.{name}={before} (it can change once that rollout is finished)"
            )


# What has to agree between two models' configs for one's weights to fit the other.
_SHAPE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


def _shape(config: Any) -> tuple[Any, ...] | None:
    if config is None:
        return None
    text = config.get_text_config()
    return tuple(getattr(text, name, None) for name in _SHAPE_FIELDS)


def check_same_model(path: Path, saved: dict[str, Any], model_path: str) -> None:
    """Refuse to resume a checkpoint into another model than the one it was trained from.

    The policy resumes from the checkpoint's weights, but the reference (KL) and the tokenizer come from
    model.model_path, so another model there would silently change the run. A model that only moved
    (the saved path is gone, the architecture is the same) is accepted.
    """
    before = (saved.get("model") or {}).get("model_path")
    if before is None or before == model_path:
        return
    moved = not Path(before).expanduser().exists() and _shape(model_config(str(path))) == _shape(
        model_config(model_path)
    )
    if moved and _shape(model_config(model_path)) is not None:
        return
    raise CheckpointError(
        f"checkpoint {str(path)!r} was written for model {before!r} but model.model_path is {model_path!r}: the "
        "policy would resume from the other model's weights while the reference and tokenizer come from this "
        f"one; resume with model.model_path={before!r}, or start a new run from the checkpoint's weights "
        f"(model.model_path={str(path)!r}, without train.resume_from_checkpoint)"
    )


# ---------------------------------------------------------------------------------------------- reading
def load_saved_config(path: str | Path) -> dict[str, Any]:
    """The run configuration a checkpoint was written with (its trlx_config.yml), as nested dicts."""
    return yaml.safe_load((Path(path) / CONFIG_FILE).read_text()) or {}


def saved_method(saved: dict[str, Any]) -> str:
    """`method.name` of a saved configuration, in trlx's spelling (checkpoints from before it existed: ppo)."""
    return method_name((saved.get("method") or {}).get("name", "ppo"))


def load_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / STATE_FILE).read_text())


def load_tensor_file(path: str | Path) -> TensorFile:
    """Tensors and JSON metadata of a file written through `save_checkpoint(tensor_files=...)`."""
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    return load_file(str(path)), json.loads(metadata["json"]) if "json" in metadata else None


def load_heads(path: str | Path, policy: PolicyWithValueHead) -> None:
    """The checkpoint's heads (value head, ILQL heads) into `policy`'s; nothing for a policy without any."""
    for attribute, (name, method) in HEAD_FILES.items():
        module = getattr(policy, attribute, None)
        if module is None:
            continue
        file = Path(path) / name
        if not file.is_file():
            raise CheckpointError(
                f"{path} has no {name}: it was not written by a {method} run, so a {method} run cannot resume "
                "from it; resume with the method that wrote it"
            )
        device = next(module.parameters()).device
        module.load_state_dict({k: v.to(device) for k, v in load_file(str(file)).items()})


def load_policy_weights(path: str | Path, policy: PolicyWithValueHead) -> None:
    """Copy a checkpoint's language-model and value-head weights into `policy`, in place.

    In place (rather than `from_pretrained`) so the optimizer, the accelerate wrapper and a reference that
    shares frozen layers with the policy all keep pointing at the same parameters.
    """
    path = Path(path)
    lm = policy.lm
    if (path / ADAPTER_DIR / "adapter_model.safetensors").is_file():  # a LoRA policy: reload just its adapters
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(lm, load_file(str(path / ADAPTER_DIR / "adapter_model.safetensors")))
        if result.unexpected_keys:
            raise CheckpointError(f"{path}: adapter weights do not fit the policy: {result.unexpected_keys[:5]}")
        load_heads(path, policy)
        return
    weights: dict[str, torch.Tensor] = {}
    for file in _model_files(path):
        weights.update(load_file(str(file)))
    try:
        result = lm.load_state_dict(weights, strict=False)
    except RuntimeError as e:  # size mismatches: a checkpoint of another architecture
        raise CheckpointError(
            f"{path}: model weights do not fit the policy {lm.name_or_path!r} "
            f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e})"
        ) from None
    current = lm.state_dict()
    loaded = {current[k].data_ptr() for k in weights if k in current}
    # Tied weights (e.g. GPT-2's lm_head = wte) are saved once; they count as loaded if they share storage.
    missing = [k for k in result.missing_keys if current[k].data_ptr() not in loaded]
    if missing or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: model weights do not fit the policy (missing {missing[:5]}, unexpected "
            f"{result.unexpected_keys[:5]}); was the checkpoint written for model.model_path={lm.name_or_path!r}?"
        )
    load_heads(path, policy)


def _model_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return [path / name for name in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    raise CheckpointError(f"{path}: no model.safetensors (or its index) in the checkpoint")


# ---------------------------------------------------------------------------------------------- state codecs
def split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able copy of `obj` in which every tensor is replaced by {"__tensor__": name}, collected in `tensors`.

    Dicts with non-string keys (optimizer state is keyed by parameter index) and tuples (Adam betas) are
    tagged so `join_tensors` restores them exactly; torch silently ignores optimizer state under string keys.
    """
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: split_tensors(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, split_tensors(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {prefix} of type {type(obj).__name__} in a checkpoint (not a tensor or JSON)")


def join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `split_tensors`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__items__"}:
            return {k: join_tensors(v, tensors) for k, v in obj["__items__"]}
        if set(obj) == {"__tuple__"}:
            return tuple(join_tensors(v, tensors) for v in obj["__tuple__"])
        return {k: join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [join_tensors(v, tensors) for v in obj]
    return obj


def rng_state() -> TensorFile:
    """This process's python, numpy, torch CPU and CUDA generator states."""
    version, py_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    tensors = {
        "python": torch.tensor(py_state, dtype=torch.int64),
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda_{i}"] = state
    metadata = {"python": [version, gauss], "numpy": [np_name, int(np_pos), int(np_has_gauss), float(np_gauss)]}
    return tensors, metadata


def set_rng_state(tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    version, gauss = metadata["python"]
    random.setstate((version, tuple(tensors["python"].tolist()), gauss))
    np_name, np_pos, np_has_gauss, np_gauss = metadata["numpy"]
    np.random.set_state((np_name, tensors["numpy"].numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda_")), key=lambda k: int(k[5:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------------------------------- a trainer
class Resumable(Protocol):
    """What `save_trainer` / `load_trainer` need from a trainer (OnlineTrainer provides it)."""

    accelerator: Any
    policy: Any
    optimizer: Any
    scheduler: Any
    tokenizer: PreTrainedTokenizerBase
    config: Any
    checkpoint_dir: Path
    rollout: RolloutBatch | None
    sampler: Any  # this process's PromptSampler: each process draws from its own share of the prompts
    best_reward: float

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def save_trainer(trainer: Resumable, dest: Path) -> None:
    """Save everything a resumed run needs to continue exactly; then move `latest` and prune old checkpoints.

    Called on every process: each contributes its RNG state and in-flight rollout, the main process writes.
    """
    from accelerate.utils import gather_object

    accelerator = trainer.accelerator
    mine = {
        "rng": rng_state(),
        "sampler": trainer.sampler.state_dict(),
        "rollout": None if trainer.rollout is None else trainer.rollout.tensors(),
    }
    per_process = gather_object([mine]) if accelerator.num_processes > 1 else [mine]
    full_state_dict = gathered_state_dict(accelerator, trainer.policy)  # collective under ZeRO-3/FSDP, else None
    if not accelerator.is_main_process:
        return
    tensors: dict[str, torch.Tensor] = {}
    # DeepSpeed and FSDP partition the optimizer state over the processes (and DeepSpeed's holds engine
    # objects): the main process alone cannot save it, so those checkpoints hold weights but do not resume.
    sharded_optimizer = engine_owns_model(accelerator)
    state = {
        **trainer.state_dict(),
        "num_processes": accelerator.num_processes,
        "processes": [{"sampler": process["sampler"]} for process in per_process],
        "log_rows": {name: count_lines(trainer.checkpoint_dir / name) for name in LOG_FILES},
        "optimizer": None
        if sharded_optimizer
        else split_tensors(trainer.optimizer.state_dict(), "optimizer", tensors),
        "scheduler": split_tensors(trainer.scheduler.state_dict(), "scheduler", tensors),
        # fp16 loss scaling: the current scale and growth tracker (plain numbers).
        "grad_scaler": None if accelerator.scaler is None else accelerator.scaler.state_dict(),
    }
    files: dict[str, TensorFile] = {OPTIMIZER_FILE: (tensors, None)}
    for rank, process in enumerate(per_process):
        files[rng_file(rank)] = process["rng"]
        if process["rollout"] is not None:
            files[rollout_file(rank)] = (process["rollout"], None)
    policy = unwrap(accelerator, trainer.policy)
    save_checkpoint(dest, policy, trainer.tokenizer, state, trainer.config.to_dict(), files, full_state_dict)
    if checkpoint_step(dest) is not None:
        write_latest(dest.parent, dest)
        if trainer.config.train.save_total_limit is not None:
            prune_checkpoints(dest.parent, trainer.config.train.save_total_limit)


def load_trainer(trainer: Resumable, path: Path) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler, counters, this process's RNG and in-flight rollout from `path`.

    Log files in the same folder are cut back to the rows written when the checkpoint was saved, so steps
    replayed after a crash are not logged twice. Returns the trainer state that was loaded.
    """
    accelerator = trainer.accelerator
    check_resumable(path, trainer.config, accelerator.num_processes)
    state = load_state(path)
    load_policy_weights(path, unwrap(accelerator, trainer.policy))
    tensors, _ = load_tensor_file(path / OPTIMIZER_FILE)
    trainer.optimizer.load_state_dict(join_tensors(state["optimizer"], tensors))
    trainer.scheduler.load_state_dict(join_tensors(state["scheduler"], tensors))
    if accelerator.scaler is not None and state.get("grad_scaler"):
        accelerator.scaler.load_state_dict(state["grad_scaler"])
    trainer.load_state_dict(state)
    # A best_checkpoint saved after `path` (e.g. by a final evaluation) must not be replaced by a worse one.
    best = trainer.checkpoint_dir / BEST_DIR
    best_reward = load_state(best).get("best_reward") if (best / STATE_FILE).is_file() else None
    if best_reward is not None:
        trainer.best_reward = max(trainer.best_reward, best_reward)
    rank = accelerator.process_index
    trainer.sampler.load_state_dict(state["processes"][rank]["sampler"])
    set_rng_state(*load_tensor_file(path / rng_file(rank)))
    trainer.rollout = None
    if state.get("rollout") is not None:
        trainer.rollout = RolloutBatch(**load_tensor_file(path / rollout_file(rank))[0])
    if accelerator.is_main_process and path.resolve().parent == trainer.checkpoint_dir.resolve():
        for name, rows in state.get("log_rows", {}).items():
            truncate_lines(trainer.checkpoint_dir / name, rows)
    return state


# ---------------------------------------------------------------------------------------------- log files
def count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with path.open("rb") as f:
        return sum(1 for _ in f)


def truncate_lines(path: Path, rows: int) -> None:
    """Keep the first `rows` lines of `path` (rows logged after the checkpoint belong to replayed steps)."""
    if not path.is_file() or count_lines(path) <= rows:
        return
    with path.open("rb") as f:
        kept = b"".join(itertools.islice(f, rows))
    tmp = path.with_name(f".{path.name}-{os.getpid()}")
    tmp.write_bytes(kept)
    os.replace(tmp, path)


def write_hf_model(
    policy: PolicyWithValueHead, tokenizer: PreTrainedTokenizerBase, dest: Path, full: dict[str, torch.Tensor]
) -> None:
    """The policy's LM (a LoRA policy merged, its adapters in adapter/) and tokenizer into folder `dest`, in
    Hugging Face format; `full` is the gathered state dict of a sharded policy (keys `lm.*`), else empty."""
    lm_state = {k[len("lm.") :]: v for k, v in full.items() if k.startswith("lm.")} or None
    save_lm(policy.lm, dest, lm_state)
    tokenizer.save_pretrained(dest)


def save_pretrained_policy(
    accelerator: Any,
    policy: Any,
    tokenizer: PreTrainedTokenizerBase,
    dest: Path,
    card: tuple[dict[str, Any], int, Path] | None = None,
) -> Path:
    """The policy's language model and tokenizer in Hugging Face format, for `AutoModelForCausalLM.from_pretrained
    (dest)` (trlX's `trainer.save_pretrained`), with a model card from `card` = (config dict, step, metrics.jsonl).
    Call on every process."""
    full = gathered_state_dict(accelerator, policy) or {}  # collective under ZeRO-3/FSDP
    if accelerator.is_main_process:
        Path(dest).mkdir(parents=True, exist_ok=True)
        write_hf_model(unwrap(accelerator, policy), tokenizer, Path(dest), full)
        if card is not None:
            write_model_card(Path(dest), *card)
    accelerator.wait_for_everyone()
    return Path(dest)
