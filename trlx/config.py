"""Typed run configuration: nested dataclasses with trlX's section and field names.

Every field has a default and a one-line doc (the `doc` metadata, also rendered in the README's
config reference). Invalid values fail in `__post_init__` with a message naming the field and what is
allowed, so a bad YAML file or CLI override stops the run before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from trlx.rollout.options import gen_kwargs_problem


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or not allowed."""


def doc(text: str, default: Any = dataclasses.MISSING, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field carrying its one-line documentation."""
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata={"doc": text})
    return field(default=default, metadata={"doc": text})


# YAML 1.1 (PyYAML) reads `1e-5` (no dot) as a string; these are the numbers a user means by such strings.
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def numbers_from_strings(value: Any) -> Any:
    """`value` with numeric strings (`"1e-5"`, `"0.9"`, `"16"`), also inside lists and dicts, turned into numbers."""
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        return int(value) if value.strip().lstrip("+-").isdigit() else float(value)
    if isinstance(value, list):
        return [numbers_from_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: numbers_from_strings(v) for k, v in value.items()}
    return value


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message on one line, with the usual cause of a tab error spelled out."""
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return text + (" (YAML indents with spaces, not tabs)" if "'\\t'" in text else "")


def plain_config_dict(value: Any) -> Any:
    """A config object with `to_dict()` (a `peft.LoraConfig`, as trlX accepts for model.peft_config) as a plain,
    YAML-safe dict: sets become sorted lists and enums their values. Anything else is returned unchanged."""
    if not hasattr(value, "to_dict") or isinstance(value, dict):
        return value

    def plain(v: Any) -> Any:
        if isinstance(v, (set, frozenset)):
            return sorted(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v.value if isinstance(v, enum.Enum) else v

    return {k: plain(v) for k, v in value.to_dict().items()}


def new_token_lengths(gen_kwargs: dict[str, Any]) -> dict[str, Any]:
    """trlX's `max_length`/`min_length` (Hugging Face generate's, which count the prompt too) as trlx's
    `max_new_tokens`/`min_new_tokens`, with a warning: trlx sets response lengths, so the same number of new
    tokens is the rule (responses may be longer than under trlX by the prompt's length). As in Hugging Face,
    `max_new_tokens`/`min_new_tokens`, where also given, win. Whole-number floats (`top_k: 0.0`) become ints."""
    out = dict(gen_kwargs)
    for name in ("top_k", "max_length", "min_length", "max_new_tokens", "min_new_tokens"):
        if isinstance(out.get(name), float) and out[name].is_integer():  # trlX's YAML files write `top_k: 0.0`
            out[name] = int(out[name])
    for old, new in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
        if old not in out:
            continue
        value = out.pop(old)
        if new in out:
            note = f"ignored: {new}={out[new]!r} is also set and takes precedence, as in Hugging Face generate"
        else:
            out[new] = value
            note = f"read as {new}={value!r} (trlx counts response tokens only; set {new} to silence this)"
        warnings.warn(
            f"method.gen_kwargs.{old}={value!r} counts the prompt too in trlX; {note}", UserWarning, stacklevel=3
        )
    return out


def warn_ignored(name: str, value: Any) -> None:
    """Warn (once per field and value) about a trlX field that trlx accepts but does not act on."""
    warnings.warn(
        f"{name}={value!r} is a trlX setting that trlx does not act on; it is ignored", UserWarning, stacklevel=3
    )


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{name}: {message}")


MIXED_PRECISION = (None, "no", "bf16", "fp16")
REFERENCES = (None, "copy", "hydra", "lora")


@dataclass
class TrainConfig:
    seq_length: int = doc(
        "Maximum prompt + continuation length in tokens; longer prompts are an error. One that leaves no room for "
        "a prompt (<= max_new_tokens, as some trlX configs have) gives way to the model's position limit, with a "
        "warning.",
        1024,
    )
    epochs: int = doc("Maximum number of rollout/update iterations (each collects `method.num_rollouts`).", 100)
    total_steps: int = doc("Maximum number of optimizer steps; training stops at whichever limit comes first.", 10000)
    batch_size: int = doc(
        "Minibatch size of each update, per process; one that does not divide method.num_rollouts leaves a last, "
        "smaller minibatch per epoch (as trlX).",
        32,
    )
    checkpoint_interval: int = doc("Save `checkpoint_NNNNN/` every this many optimizer steps.", 10000)
    eval_interval: int = doc("Evaluate on `eval_prompts` every this many optimizer steps.", 100)
    pipeline: str = doc("Prompt pipeline (trlX name); only `PromptPipeline` exists.", "PromptPipeline")
    trainer: str = doc(
        "Trainer (trlX name); set from method.name: AcceleratePPOTrainer (online methods), AccelerateSFTTrainer, "
        "AccelerateDPOTrainer, AccelerateILQLTrainer, AccelerateRFTTrainer.",
        "AcceleratePPOTrainer",
    )
    checkpoint_dir: str = doc("Folder for checkpoints, `metrics.jsonl` and the best checkpoint.", "ckpts")
    seed: int = doc("Seed for python, numpy and torch (each process adds its rank).", 1000)
    tracker: str | list[str] | None = doc(
        "Experiment trackers besides metrics.jsonl (always written), through accelerate: tensorboard, wandb, mlflow, "
        "or a list of them (None: JSONL only). Each needs its package (`pip install 'trlx[wandb]'`, ...).",
        None,
    )
    logging_dir: str | None = doc("TensorBoard folder; default `<checkpoint_dir>/tensorboard`.", None)
    save_best: bool = doc("Keep `best_checkpoint/`, the checkpoint with the highest mean eval reward.", True)
    max_grad_norm: float | None = doc("Clip the gradient norm to this value before each step (None: off).", 1.0)
    progress_bar: bool | None = doc("Show a progress bar; None: only on a TTY and not under CI.", None)
    resume_from_checkpoint: str | None = doc(
        "Continue exactly from this checkpoint folder, or `latest` (newest in checkpoint_dir); None: start fresh.",
        None,
    )
    overwrite_output_dir: bool = doc(
        "Start afresh in a checkpoint_dir holding an earlier run's results, deleting them (metrics, samples, "
        "checkpoints) first; without it, and without resume_from_checkpoint, such a folder is refused.",
        False,
    )
    save_total_limit: int | None = doc(
        "Keep only the newest N `checkpoint_*` folders (plus `best_checkpoint/`); None keeps all.", None
    )
    max_consecutive_faults: int = doc(
        "Stop after this many rollouts/updates in a row skipped for NaN/inf rewards, log-probs, losses or grads.", 3
    )
    reward_timeout_s: float | None = doc("Fail when one reward_fn call takes longer (seconds); None: no limit.", None)
    mixed_precision: str | None = doc(
        "Autocast/engine precision: no, bf16, fp16 (fp16 needs a GPU); None: as `accelerate launch` sets it, else no.",
        None,
    )
    retain_cpu_memory: bool | Literal["compact"] = doc(
        "On a CPU run under Linux/glibc, keep freed memory in the process for reuse (no mmap for large blocks, no "
        "heap trimming) instead of faulting in fresh zeroed pages for the tensors every step allocates anew: ~20% "
        "faster PPO steps on CPU, peak RSS a few percent higher. `compact`: the other way, every block of 1 MiB "
        "or more mapped on its own and returned when freed, so the heap cannot fragment: least peak RSS (W1 full "
        "model: 3.2 instead of 3.5 GiB) for ~15% slower steps. Process-wide (`trlx.memory`).",
        True,
    )
    onednn_linear: bool | Literal["auto"] = doc(
        "On a CPU run without DeepSpeed/FSDP, compute the models' fp32 `nn.Linear` layers (forward and backward) "
        "with oneDNN instead of torch's BLAS. `auto`: on AMD processors only, where torch's MKL is slow (2.2x "
        "slower matmuls on an AMD EPYC; on an Intel Xeon MKL was the faster one). Same parameters and results up "
        "to float rounding (`trlx.models.onednn`).",
        "auto",
    )
    fused_blocks: bool = doc(
        "On a CPU run without DeepSpeed/FSDP, train with leaner blocks (fp32, no autocast): hand-written backward "
        "passes for Llama-family RMSNorms and SwiGLU MLPs, norm outputs recomputed instead of stored, grouped "
        "keys/values not repeated for a masked SDPA, and one gradient buffer for a tied embedding and LM head. "
        "About half the activations of a Llama block: same forward results, gradients up to float rounding, no "
        "matmul recomputed (`trlx.models.fused`).",
        True,
    )
    gradient_checkpointing: bool | Literal["selective"] = doc(
        "Recompute activations in the backward pass instead of storing them. `true`: whole blocks (least memory, "
        "~30% slower updates); `selective`: keep each block's matmul and attention outputs and recompute only the "
        "element-wise ops (norms, activations, rotary): most of the saving for a few percent of time; `false`: "
        "store everything.",
        False,
    )
    gradient_accumulation_steps: int = doc(
        "Split each `batch_size` minibatch into this many micro-batches and accumulate their gradients (same update, "
        "less activation memory).",
        1,
    )
    minibatch_size: int | None = doc(
        "trlX's way to set gradient accumulation: micro-batches of this size (batch_size / minibatch_size steps).",
        None,
    )
    # trlX's run-naming fields, for the experiment trackers (W&B, MLflow); TensorBoard and JSONL ignore them.
    project_name: str = doc("W&B project / MLflow experiment (trlX field).", "trlx")
    entity_name: str | None = doc("W&B entity / team (trlX field).", None)
    group_name: str | None = doc("W&B run group (trlX field).", None)
    run_name: str | None = doc("W&B / MLflow run name (trlX field); None: the tracker picks one.", None)
    tags: list[str] = doc("W&B / MLflow run tags (trlX field).", default_factory=list)
    # trlX fields trlx accepts but does not act on; setting them warns once.
    trainer_kwargs: dict[str, Any] = doc(
        "trlX: extra trainer arguments; not used by trlx (warns).", default_factory=dict
    )
    save_optimizer: bool = doc(
        "trlX: whether checkpoints hold optimizer state; trlx always saves it (exact resume needs it; false warns).",
        True,
    )
    rollout_logging_dir: str | None = doc(
        "trlX: folder for rollout JSON dumps; not written by trlx (warns): metrics.jsonl and samples.jsonl are.", None
    )

    @property
    def trackers(self) -> list[str]:
        """`tracker` as a list of names (a comma-separated string or a list; None and "" are none)."""
        if self.tracker is None:
            return []
        names = self.tracker.split(",") if isinstance(self.tracker, str) else self.tracker
        return list(dict.fromkeys(str(n).strip().lower() for n in names if str(n).strip()))

    def __post_init__(self) -> None:
        if self.minibatch_size is not None:
            _require(
                self.minibatch_size >= 1 and self.batch_size % self.minibatch_size == 0,
                "train.minibatch_size",
                f"({self.minibatch_size}) must be a positive divisor of train.batch_size ({self.batch_size})",
            )
            steps = self.batch_size // self.minibatch_size
            _require(
                self.gradient_accumulation_steps in (1, steps),
                "train.minibatch_size",
                f"means gradient_accumulation_steps={steps}, but train.gradient_accumulation_steps is "
                f"{self.gradient_accumulation_steps}; set only one of them",
            )
            self.gradient_accumulation_steps = steps
        ignored = {
            "trainer_kwargs": bool(self.trainer_kwargs),
            "save_optimizer": not self.save_optimizer,
            "rollout_logging_dir": self.rollout_logging_dir is not None,
        }
        for name in (n for n, is_set in ignored.items() if is_set):
            warn_ignored(f"train.{name}", getattr(self, name))
        for name in ("seq_length", "epochs", "total_steps", "batch_size", "checkpoint_interval", "eval_interval"):
            _require(
                getattr(self, name) > 0, f"train.{name}", f"must be a positive integer, got {getattr(self, name)}"
            )
        _require(
            self.pipeline == "PromptPipeline", "train.pipeline", f"allowed: 'PromptPipeline', got {self.pipeline!r}"
        )
        _require(
            self.trainer in TRAINERS,
            "train.trainer",
            f"allowed: {', '.join(map(repr, TRAINERS))}; got {self.trainer!r}",
        )
        unknown = [t for t in self.trackers if t not in TRACKERS]
        _require(
            not unknown,
            "train.tracker",
            f"allowed: {', '.join(TRACKERS)}, a list of them, or None; got {self.tracker!r}",
        )
        _require(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            "train.max_grad_norm",
            f"must be positive or None, got {self.max_grad_norm}",
        )
        _require(
            self.resume_from_checkpoint is None or bool(self.resume_from_checkpoint.strip()),
            "train.resume_from_checkpoint",
            "must be a checkpoint folder, `latest`, or None; got an empty string",
        )
        _require(
            self.save_total_limit is None or self.save_total_limit >= 1,
            "train.save_total_limit",
            f"must be at least 1 (resume needs the latest checkpoint) or None to keep all, got {self.save_total_limit}",
        )
        _require(
            self.max_consecutive_faults >= 1,
            "train.max_consecutive_faults",
            f"must be a positive integer, got {self.max_consecutive_faults}",
        )
        _require(
            self.reward_timeout_s is None or self.reward_timeout_s > 0,
            "train.reward_timeout_s",
            f"must be positive (seconds) or None for no limit, got {self.reward_timeout_s}",
        )
        _require(
            self.mixed_precision in MIXED_PRECISION,
            "train.mixed_precision",
            f"allowed: no, bf16, fp16, None; got {self.mixed_precision!r}",
        )
        _require(
            self.gradient_accumulation_steps >= 1 and self.batch_size % self.gradient_accumulation_steps == 0,
            "train.gradient_accumulation_steps",
            f"({self.gradient_accumulation_steps}) must be a positive divisor of train.batch_size ({self.batch_size})",
        )


@dataclass
class ModelConfig:
    model_path: str = doc("Hugging Face model name or local folder of an AutoModelForCausalLM.", "gpt2")
    num_layers_unfrozen: int = doc("Train only the top N transformer blocks (plus head); -1 trains all.", 2)
    reference: str | None = doc(
        "KL reference model: copy (frozen full copy), hydra (shares the frozen bottom layers, copies only the top "
        "num_layers_unfrozen blocks and head), lora (the policy with its adapters disabled); None: lora when "
        "peft_config is set, else copy.",
        None,
    )
    peft_config: dict[str, Any] | None = doc(
        "Train LoRA adapters instead of the weights: peft.LoraConfig keyword arguments (r, lora_alpha, "
        "target_modules, ...) or a peft.LoraConfig; None: no adapters.",
        None,
    )
    model_arch_type: str = doc("trlX: model architecture kind; only `causal` (decoder-only) is supported.", "causal")
    model_extra_configs: dict[str, Any] = doc(
        "trlX: extra model configuration; not used by trlx (warns).", default_factory=dict
    )

    def __post_init__(self) -> None:
        self.peft_config = plain_config_dict(self.peft_config)
        _require(bool(self.model_path), "model.model_path", "must name a model folder or Hub id")
        _require(
            self.model_arch_type == "causal",
            "model.model_arch_type",
            f"allowed: 'causal' (trlx trains decoder-only causal LMs; seq2seq is not supported); got {self.model_arch_type!r}",
        )
        if self.model_extra_configs:
            warn_ignored("model.model_extra_configs", self.model_extra_configs)
        _require(
            self.num_layers_unfrozen == -1 or self.num_layers_unfrozen > 0,
            "model.num_layers_unfrozen",
            f"must be -1 (all layers) or a positive count, got {self.num_layers_unfrozen}",
        )
        _require(
            self.reference in REFERENCES,
            "model.reference",
            f"allowed: copy, hydra, lora, None; got {self.reference!r}",
        )
        _require(
            self.reference != "hydra" or self.num_layers_unfrozen > 0,
            "model.num_layers_unfrozen",
            "must be a positive layer count with reference=hydra (the layers below the top N are the shared trunk)",
        )
        _require(
            self.reference != "lora" or bool(self.peft_config),
            "model.peft_config",
            "required with reference=lora (e.g. {r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]})",
        )
        _require(
            not self.peft_config or self.reference in (None, "lora"),
            "model.reference",
            f"must be lora (or None) when peft_config is set: the adapters-off model is the reference, got "
            f"{self.reference!r}",
        )
        _require(
            not self.peft_config or self.num_layers_unfrozen == -1,
            "model.num_layers_unfrozen",
            "must be -1 with peft_config: only the adapters train (limit them with peft_config.layers_to_transform)",
        )
        _require(
            not self.peft_config or self.peft_config.get("peft_type", "LORA") == "LORA",
            "model.peft_config.peft_type",
            f"allowed: LORA; got {(self.peft_config or {}).get('peft_type')!r}",
        )

    @property
    def reference_kind(self) -> str:
        """`reference` with None resolved: lora when adapters are trained, else a full copy."""
        return self.reference or ("lora" if self.peft_config else "copy")


@dataclass
class TokenizerConfig:
    tokenizer_path: str | None = doc("Tokenizer name or folder; None uses `model.model_path`.", None)
    padding_side: Literal["left"] = doc("Prompts are always left-padded so generation starts together.", "left")
    truncation_side: Literal["left", "right"] = doc("Side cut when a prompt is truncated by the tokenizer.", "right")
    tokenizer_extra_configs: dict[str, Any] = doc(
        "trlX: extra tokenizer arguments; not used by trlx (warns).", default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.tokenizer_extra_configs:
            warn_ignored("tokenizer.tokenizer_extra_configs", self.tokenizer_extra_configs)
        _require(
            self.padding_side == "left",
            "tokenizer.padding_side",
            "allowed: 'left' (decoder-only generation needs prompts that end in the same column)",
        )
        _require(
            self.truncation_side in ("left", "right"),
            "tokenizer.truncation_side",
            f"allowed: 'left', 'right'; got {self.truncation_side!r}",
        )


OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("constant", "linear", "cosine_annealing")


@dataclass
class OptimizerConfig:
    name: str = doc(f"Optimizer: one of {', '.join(OPTIMIZERS)}.", "adamw")
    kwargs: dict[str, Any] = doc(
        "Keyword arguments of the torch optimizer (lr, betas, eps, weight_decay).",
        default_factory=lambda: {"lr": 3.0e-5, "betas": [0.9, 0.95], "eps": 1.0e-8, "weight_decay": 1.0e-6},
    )

    def __post_init__(self) -> None:
        self.kwargs = numbers_from_strings(self.kwargs)
        _require(self.name in OPTIMIZERS, "optimizer.name", f"allowed: {', '.join(OPTIMIZERS)}; got {self.name!r}")
        _require(
            float(self.kwargs.get("lr", 1.0)) > 0,
            "optimizer.kwargs.lr",
            f"must be positive, got {self.kwargs.get('lr')}",
        )


@dataclass
class SchedulerConfig:
    name: str = doc(
        "LR schedule: constant; linear (torch LinearLR kwargs); cosine_annealing (torch CosineAnnealingLR kwargs).",
        "constant",
    )
    kwargs: dict[str, Any] = doc("Keyword arguments of the torch scheduler.", default_factory=dict)

    def __post_init__(self) -> None:
        self.kwargs = numbers_from_strings(self.kwargs)
        if self.name == "cosine":
            self.name = "cosine_annealing"
        _require(self.name in SCHEDULERS, "scheduler.name", f"allowed: {', '.join(SCHEDULERS)}; got {self.name!r}")


SCALE_REWARD = (None, "ignored", "running", "ref")
TRACKERS = ("tensorboard", "wandb", "mlflow")  # trlx.trackers
KL_ESTIMATORS = ("k1", "k2", "k3")  # trlx.algorithms.kl (not imported: this module loads without torch)
ONLINE_METHODS = ("ppo", "grpo", "rloo", "reinforce_pp")  # trlx.trainers.online: one rollout loop
OFFLINE_METHODS = ("sft", "dpo", "ilql", "rft")  # trlx.trainers.offline: one loop over a dataset (rft: its own)
DATASET_METHODS = ("sft", "dpo", "ilql")  # trained on samples= (the others on prompts= scored by reward_fn)
METHODS = ONLINE_METHODS + OFFLINE_METHODS
GROUP_METHODS = ("grpo", "rloo")  # a baseline from the other samples of the prompt's group
GROUP_SCALES = ("group", "batch", "none")  # trlx.algorithms.advantages
LOSS_TYPES = ("token_mean", "sequence_mean", "constant")  # trlx.algorithms.ppo.aggregate_loss
PREFERENCE_LOSSES = ("dpo", "ipo")  # trlx.algorithms.preference.dpo_loss
# trlX's method names for what trlx calls `ppo` (trlX's `name` is its config class, matched case-insensitively).
TRLX_METHOD_NAMES = {"ppoconfig": "ppo", "sftconfig": "sft", "rftconfig": "rft", "ilqlconfig": "ilql"}
# train.trainer in trlX's names; the trainer follows from method.name, so these only have to agree with it.
TRAINERS = {
    "AcceleratePPOTrainer": ONLINE_METHODS,
    "AccelerateSFTTrainer": ("sft",),
    "AccelerateDPOTrainer": ("dpo",),
    "AccelerateRFTTrainer": ("rft",),
    "AccelerateILQLTrainer": ("ilql",),
}


def method_name(name: Any) -> str:
    """`method.name` in trlx's spelling: lower case, trlX's `PPOConfig` read as `ppo`."""
    if not isinstance(name, str):
        raise ConfigError(f"method.name: allowed: {', '.join(METHODS)}; got {name!r}")
    key = name.strip().lower().replace("-", "_").replace("++", "_pp")
    key = TRLX_METHOD_NAMES.get(key, key)
    _require(
        key in METHODS,
        "method.name",
        f"allowed: {', '.join(METHODS)} (or trlX's PPOConfig, SFTConfig, RFTConfig, ILQLConfig); got {name!r}",
    )
    return key


@dataclass
class PPOConfig:
    """The online methods, which share one loop and differ only in how advantages and the loss are computed."""

    name: str = doc(
        "Online: ppo (value head + GAE), grpo (group mean/std baseline), rloo (leave-one-out baseline), "
        "reinforce_pp (REINFORCE++: KL-shaped returns whitened over the batch). Offline, on `samples=`: sft "
        "(supervised fine-tuning), dpo (direct preference optimisation), ilql (implicit language Q-learning, with "
        "`rewards=`). Offline on its own samples of `prompts=`: rft (rejection-sampling fine-tuning). trlX's "
        "`PPOConfig` / `SFTConfig` / `RFTConfig` / `ILQLConfig` mean ppo / sft / rft / ilql.",
        "ppo",
    )
    num_rollouts: int = doc(
        "Samples (completions, not prompts) collected per rollout phase (per process) before the updates.", 128
    )
    chunk_size: int = doc("Samples generated per `generate` call during rollout.", 128)
    num_generations: int = doc(
        "Completions per prompt (the group), laid out as consecutive rows of a process's rollout; grpo and rloo "
        "need >= 2. Must divide num_rollouts and chunk_size.",
        1,
    )
    ppo_epochs: int = doc("Passes over each rollout's minibatches.", 4)
    init_kl_coef: float = doc(
        "Initial coefficient of the KL penalty in the reward (k1 per token by default); 0 with kl_loss_coef 0, "
        "no target and no kl_max builds no reference model.",
        0.001,
    )
    kl_loss_coef: float = doc(
        "Coefficient of a KL(policy || reference) term in the loss (k3 per token, as GRPO; needs top_k 0, top_p 1); "
        "0: none.",
        0.0,
    )
    target: float | None = doc("Adaptive KL target per sequence (Ziegler et al. 2019); None: fixed coefficient.", None)
    horizon: int = doc("Adaptive KL controller horizon in samples.", 10000)
    kl_estimator: str = doc("Per-token KL estimator in the penalty: k1 (log-ratio), k2, k3 (Schulman 2020).", "k1")
    gamma: float = doc("Discount factor of GAE (ilql: of the Q targets; trlX's ILQL default is 0.99).", 1.0)
    lam: float = doc("Lambda of GAE.", 0.95)
    cliprange: float = doc("PPO ratio clip epsilon (the lower one when cliprange_high is set).", 0.2)
    cliprange_high: float | None = doc(
        "Upper ratio clip epsilon (DAPO clip-higher, e.g. 0.28); None: cliprange.", None
    )
    loss_type: str = doc(
        "Policy-loss reduction: token_mean (all tokens of a minibatch weigh the same; trlX, DAPO), sequence_mean (each sequence "
        "weighs the same; GRPO), constant (sum / (batch * max_new_tokens); Dr.GRPO).",
        "token_mean",
    )
    scale_rewards: str = doc(
        "grpo: divide group-centred rewards by the group's std (group), the batch's std (batch), or not (none, "
        "Dr.GRPO).",
        "group",
    )
    dynamic_sampling: bool = doc(
        "Drop groups whose rewards are all equal and sample more (DAPO), up to 4x a rollout's generate calls; "
        "needs num_generations >= 2.",
        False,
    )
    overlong_buffer: int = doc(
        "DAPO soft overlong penalty: rewards fall linearly to -overlong_penalty over the last this many tokens "
        "before max_new_tokens (0: off).",
        0,
    )
    overlong_penalty: float = doc("The penalty at max_new_tokens when overlong_buffer > 0.", 1.0)
    cliprange_value: float = doc("Value clip around the rollout's value estimate.", 0.2)
    vf_coef: float = doc("Weight of the value loss.", 1.0)
    scale_reward: str | bool | None = doc(
        "Score scaling: ignored/None/false (none); running (divide by the std of all scores seen so far); ref (by "
        "ref_std).",
        "ignored",
    )
    ref_mean: float | None = doc("Subtracted from each sequence's score before scaling (None: nothing).", None)
    ref_std: float | None = doc(
        "Divides scores when scale_reward=ref; None: the std of the first rollout's scores (as trlX).", None
    )
    cliprange_reward: float | None = doc(
        "Clip scores (each token's, for dense rewards) to +-this value after scaling (None: no clip).", 10.0
    )
    whiten_advantages: bool = doc(
        "ppo: whiten advantages over the rollout (masked, global across processes); grpo and rloo use theirs as "
        "defined, reinforce_pp always whitens.",
        True,
    )
    kl_max: float | None = doc(
        "Stop the run (without saving) when a rollout's mean per-sequence KL to the reference exceeds this.", None
    )
    n_generations_per_prompt: int = doc("rft: completions sampled per prompt at each growth step.", 32)
    start_percentile: float = doc(
        "rft: per-prompt score percentile a completion must reach at the first improve step.", 0.7
    )
    end_percentile: float = doc("rft: the percentile reached at the last improve step (rising linearly).", 0.95)
    n_improve_steps: int = doc(
        "rft: passes (improve steps, each one SFT epoch on the selection) per growth step; a new growth step samples "
        "n_generations_per_prompt more per prompt with the current policy.",
        4,
    )
    beta: float | None = doc(
        "dpo: strength of the implicit KL to the reference (the reward scale; None: 0.1). ilql: exponent of the "
        "AWAC weights exp(beta * advantage) (None: 0, plain behaviour cloning as trlX).",
        None,
    )
    preference_loss: str = doc(
        "dpo: `dpo` (Rafailov et al. 2023, logistic) or `ipo` (Azar et al. 2023, squared margin).", "dpo"
    )
    label_smoothing: float = doc(
        "dpo: assumed probability that a preference label is flipped (conservative DPO); 0 is the paper's loss.", 0.0
    )
    tau: float = doc("ilql: expectile of the V loss (0.5: the mean; towards 1: the max of the target Q).", 0.7)
    cql_scale: float = doc("ilql: weight of the CQL term (cross-entropy of the Q values against the data).", 0.1)
    awac_scale: float = doc("ilql: weight of the advantage-weighted LM cross-entropy (AWAC) term.", 1.0)
    alpha: float = doc("ilql: Polyak step of the target-Q sync, target <- alpha Q + (1 - alpha) target.", 0.001)
    steps_for_target_q_sync: int = doc("ilql: optimizer steps between target-Q syncs.", 5)
    two_qs: bool = doc("ilql: two Q heads whose minimum is used (clipped double Q), else one.", True)
    gen_experience_kwargs: dict[str, Any] | None = doc(
        "trlX: rollout sampling options different from gen_kwargs; only None (trlx samples rollouts and "
        "evaluations with gen_kwargs).",
        None,
    )
    num_value_layers_unfrozen: int = doc(
        "trlX: transformer blocks copied into a separate value branch; only 0 (the value head reads the policy's "
        "last hidden state).",
        0,
    )
    gen_kwargs: dict[str, Any] = doc(
        "Sampling options: max_new_tokens, min_new_tokens, temperature, top_k, top_p, eos_token_id (the README's "
        "sampling table lists what each does and what is refused); nothing comes from generation_config.json.",
        default_factory=lambda: {"max_new_tokens": 40, "top_k": 0, "top_p": 1.0, "do_sample": True},
    )
    logprobs_from_sampling: bool | None = doc(
        "Take the rollout's old log-probs and values from the sampler, which records them while decoding, instead "
        "of running the policy over the rollout again (the reference still runs). None: yes once the first "
        "rollout's policy forward matched them within 1e-3 (rollout/logprob_gap_max, rollout/value_gap_max) in a "
        "run without mixed precision, DeepSpeed or FSDP, else no; False: score every rollout again.",
        None,
    )

    def __post_init__(self) -> None:
        self.gen_kwargs = new_token_lengths(numbers_from_strings(self.gen_kwargs))
        self.name = method_name(self.name)
        if self.scale_reward is False:  # trlX's YAML spells "no scaling" `scale_reward: False`
            self.scale_reward = None
        for name in ("num_rollouts", "chunk_size", "num_generations", "ppo_epochs", "horizon"):
            _require(
                getattr(self, name) > 0, f"method.{name}", f"must be a positive integer, got {getattr(self, name)}"
            )
        _require(
            self.scale_reward in SCALE_REWARD,
            "method.scale_reward",
            f"allowed: ignored, running, ref, None; got {self.scale_reward!r}",
        )
        _require(
            self.ref_std is None or self.ref_std > 0, "method.ref_std", f"must be positive or None, got {self.ref_std}"
        )
        _require(
            self.kl_estimator in KL_ESTIMATORS,
            "method.kl_estimator",
            f"allowed: {', '.join(KL_ESTIMATORS)}; got {self.kl_estimator!r}",
        )
        _require(
            self.target is None or self.target > 0, "method.target", f"must be positive or None, got {self.target}"
        )
        _require(self.init_kl_coef >= 0, "method.init_kl_coef", f"must be >= 0, got {self.init_kl_coef}")
        _require(0 <= self.gamma <= 1, "method.gamma", f"must be in [0, 1], got {self.gamma}")
        _require(0 <= self.lam <= 1, "method.lam", f"must be in [0, 1], got {self.lam}")
        _require(self.cliprange > 0, "method.cliprange", f"must be positive, got {self.cliprange}")
        _require(self.cliprange_value > 0, "method.cliprange_value", f"must be positive, got {self.cliprange_value}")
        _require(
            self.kl_max is None or self.kl_max > 0, "method.kl_max", f"must be positive or None, got {self.kl_max}"
        )
        _require(
            self.cliprange_reward is None or self.cliprange_reward > 0,
            "method.cliprange_reward",
            f"must be positive or None, got {self.cliprange_reward}",
        )
        problem = gen_kwargs_problem(self.gen_kwargs)
        if problem is not None:
            raise ConfigError(f"method.gen_kwargs.{problem[0]}: {problem[1]}")
        self.check_groups()
        self.check_preference()
        self.check_rejection_sampling()
        self.check_ilql()
        _require(
            self.gen_experience_kwargs is None,
            "method.gen_experience_kwargs",
            "trlx samples rollouts and evaluations from the same distribution, method.gen_kwargs (what is scored "
            "must be what was sampled); put the rollout sampling options there and remove gen_experience_kwargs",
        )
        _require(
            self.num_value_layers_unfrozen == 0,
            "method.num_value_layers_unfrozen",
            f"only 0 is supported (the value head is linear on the policy's last hidden state); got "
            f"{self.num_value_layers_unfrozen}",
        )

    def check_groups(self) -> None:
        """The fields of the group-baseline and DAPO-style options."""
        g = self.num_generations
        _require(
            self.name not in GROUP_METHODS or g >= 2,
            "method.num_generations",
            f"{self.name} needs at least 2 completions per prompt (got {g}): a group of one is its own baseline, so "
            "every advantage would be 0; use e.g. num_generations: 8",
        )
        for name in ("num_rollouts", "chunk_size"):
            _require(
                getattr(self, name) % g == 0,
                "method.num_generations",
                f"({g}) must divide method.{name} ({getattr(self, name)}) so every group stays whole in one chunk "
                "and one process",
            )
        _require(
            self.loss_type in LOSS_TYPES,
            "method.loss_type",
            f"allowed: {', '.join(LOSS_TYPES)}; got {self.loss_type!r}",
        )
        _require(
            self.scale_rewards in GROUP_SCALES,
            "method.scale_rewards",
            f"allowed: {', '.join(GROUP_SCALES)}; got {self.scale_rewards!r}",
        )
        _require(
            self.cliprange_high is None or self.cliprange_high > 0,
            "method.cliprange_high",
            f"must be positive or None, got {self.cliprange_high}",
        )
        _require(self.kl_loss_coef >= 0, "method.kl_loss_coef", f"must be >= 0, got {self.kl_loss_coef}")
        _require(
            not self.dynamic_sampling or g >= 2,
            "method.dynamic_sampling",
            f"drops groups whose rewards are all equal, which needs method.num_generations >= 2 (got {g})",
        )
        truncated = self.gen_kwargs.get("top_k", 0) > 0 or self.gen_kwargs.get("top_p", 1.0) < 1.0
        _require(
            self.kl_loss_coef == 0 or not truncated,
            "method.kl_loss_coef",
            "cannot be combined with top_k/top_p sampling: the policy's log-probs are then those of the truncated "
            "distribution and the reference's are not, so the KL term would push every sampled token down from "
            "the first step; use top_k: 0 and top_p: 1.0, or KL in the reward (init_kl_coef)",
        )
        _require(self.overlong_penalty >= 0, "method.overlong_penalty", f"must be >= 0, got {self.overlong_penalty}")
        max_new = self.gen_kwargs["max_new_tokens"]
        _require(
            0 <= self.overlong_buffer <= max_new,
            "method.overlong_buffer",
            f"must be between 0 and method.gen_kwargs.max_new_tokens ({max_new}), got {self.overlong_buffer}",
        )

    def check_rejection_sampling(self) -> None:
        """The RFT fields."""
        _require(
            self.n_generations_per_prompt >= 1,
            "method.n_generations_per_prompt",
            f"must be a positive integer, got {self.n_generations_per_prompt}",
        )
        _require(
            self.n_improve_steps >= 1,
            "method.n_improve_steps",
            f"must be a positive integer, got {self.n_improve_steps}",
        )
        _require(
            0 <= self.start_percentile <= self.end_percentile <= 1,
            "method.start_percentile",
            f"and end_percentile must satisfy 0 <= start <= end <= 1, got {self.start_percentile} and "
            f"{self.end_percentile}",
        )

    def check_ilql(self) -> None:
        """The ILQL fields, and gen_kwargs.beta (ILQL's sampling option) refused elsewhere."""
        _require(0 < self.tau < 1, "method.tau", f"must be in (0, 1), got {self.tau}")
        _require(0 < self.alpha <= 1, "method.alpha", f"must be in (0, 1], got {self.alpha}")
        for name in ("cql_scale", "awac_scale"):
            _require(getattr(self, name) >= 0, f"method.{name}", f"must be >= 0, got {getattr(self, name)}")
        _require(
            isinstance(self.steps_for_target_q_sync, int) and self.steps_for_target_q_sync >= 1,
            "method.steps_for_target_q_sync",
            f"must be a positive integer, got {self.steps_for_target_q_sync!r}",
        )
        _require(
            self.name == "ilql" or "beta" not in self.gen_kwargs,
            "method.gen_kwargs.beta",
            f"is ILQL's advantage scale when sampling; method.name {self.name} samples from its LM: remove it",
        )

    def check_preference(self) -> None:
        """The DPO fields (and ILQL's beta)."""
        if self.name == "ilql":
            _require(self.method_beta >= 0, "method.beta", f"must be >= 0 (the AWAC exponent), got {self.beta}")
        else:
            _require(self.method_beta > 0, "method.beta", f"must be positive, got {self.beta}")
        _require(
            self.preference_loss in PREFERENCE_LOSSES,
            "method.preference_loss",
            f"allowed: {', '.join(PREFERENCE_LOSSES)}; got {self.preference_loss!r}",
        )
        _require(
            0 <= self.label_smoothing < 0.5,
            "method.label_smoothing",
            f"must be in [0, 0.5) (a flip probability; 0.5 would make every label noise), got {self.label_smoothing}",
        )

    @property
    def method_beta(self) -> float:
        """`beta`, or the method's default when it is None: dpo 0.1, ilql 0 (trlX's)."""
        if self.beta is not None:
            return float(self.beta)
        return 0.0 if self.name == "ilql" else 0.1

    @property
    def is_online(self) -> bool:
        """Whether the method samples its own training data (the rollout loop) or trains on a static dataset."""
        return self.name in ONLINE_METHODS

    @property
    def trains_on_samples(self) -> bool:
        """Whether the method learns from a given dataset (`samples=`) rather than from reward_fn's scores of what
        it samples for `prompts=`."""
        return self.name in DATASET_METHODS

    @property
    def has_value_head(self) -> bool:
        """Only PPO learns a critic; the other methods build no value head at all."""
        return self.name == "ppo"

    @property
    def uses_reference(self) -> bool:
        """Whether any KL to the reference enters the reward or the loss, or is watched (kl_max); else no
        reference model is built and the KL metrics are 0. DPO always scores against the reference; SFT never."""
        if not self.is_online:
            return self.name == "dpo"
        return self.init_kl_coef > 0 or self.target is not None or self.kl_loss_coef > 0 or self.kl_max is not None


@dataclass
class TaskConfig:
    """What to train on, by name, so a YAML file alone describes a run (`trlx train CONFIG.yml`).

    `trlx.train` arguments take precedence: these are used only where the call passes None.
    """

    reward_fn: str | None = doc("Reward function as `module:function` or `path/to/file.py:function`.", None)
    metric_fn: str | None = doc("Optional eval metric function, named like reward_fn.", None)
    prompts: str | None = doc(
        "Prompt source: a .txt (one per line), .jsonl or .csv file, a .json or .parquet file (read by `datasets`), or "
        "`module:attr`.",
        None,
    )
    eval_prompts: str | None = doc("Eval prompt source, like prompts (None: the first batch of prompts).", None)
    samples: str | None = doc(
        "Offline data (method.name sft, dpo, ilql): a .txt (a sample per line) or .jsonl file (a sample per line: a "
        "string, a [prompt, completion] list, chat messages, a {prompt, chosen, rejected} object, or for ilql a "
        "{sample, reward} object), a .json / .parquet file read by `datasets` (columns as for a Dataset), a `trlx "
        "label` comparisons file (dpo), or `module:attr`.",
        None,
    )
    prompt_field: str = doc(
        "The prompt column of a `datasets.Dataset` (prompts=, eval_prompts=, samples=) or of a .json / .parquet "
        "file; the other columns become metadata for reward_fn.",
        "prompt",
    )
    stop_sequences: list[str] = doc(
        "Strings that end a continuation (cut from the output text).", default_factory=list
    )

    def __post_init__(self) -> None:
        _require(
            all(isinstance(s, str) and s for s in self.stop_sequences),
            "task.stop_sequences",
            f"must be a list of non-empty strings, got {self.stop_sequences!r}",
        )


SECTIONS = {
    "task": TaskConfig,
    "train": TrainConfig,
    "model": ModelConfig,
    "tokenizer": TokenizerConfig,
    "optimizer": OptimizerConfig,
    "scheduler": SchedulerConfig,
    "method": PPOConfig,
}


@dataclass
class TRLConfig:
    """The whole run: one dataclass per section, as in trlX."""

    method: PPOConfig = doc("PPO hyperparameters and generation settings.", default_factory=PPOConfig)
    model: ModelConfig = doc("The policy model.", default_factory=ModelConfig)
    optimizer: OptimizerConfig = doc("The optimizer.", default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = doc("The learning-rate schedule.", default_factory=SchedulerConfig)
    tokenizer: TokenizerConfig = doc("The tokenizer.", default_factory=TokenizerConfig)
    train: TrainConfig = doc("Loop lengths, intervals, outputs.", default_factory=TrainConfig)
    task: TaskConfig = doc("Reward function and prompt sources by name (used by the CLI).", default_factory=TaskConfig)

    def __post_init__(self) -> None:
        # The trainer follows from method.name (trlX configs name both, consistently; an evolve of method.name alone
        # must not leave the old method's trainer behind).
        self.train.trainer = next(name for name, methods in TRAINERS.items() if self.method.name in methods)
        # A batch_size that does not divide num_rollouts leaves a last, smaller minibatch in each epoch (as trlX);
        # it is split into gradient_accumulation_steps micro-batches like the others, so that must divide it.
        last = self.method.num_rollouts % self.train.batch_size
        accumulation = self.train.gradient_accumulation_steps
        _require(
            last % accumulation == 0,
            "train.batch_size",
            f"({self.train.batch_size}) leaves a last minibatch of {last} samples per epoch (method.num_rollouts "
            f"{self.method.num_rollouts} % train.batch_size), which train.gradient_accumulation_steps ({accumulation}) "
            "must divide; pick a batch_size that divides num_rollouts, or one that leaves a multiple",
        )

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TRLConfig:
        """Build from nested dicts (YAML layout); unknown sections or fields raise `ConfigError`."""
        if not isinstance(config, dict):
            raise ConfigError(f"config must be a mapping of sections, got {type(config).__name__}")
        unknown = set(config) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
        sections = {name: _build_section(name, SECTIONS[name], config.get(name) or {}) for name in SECTIONS}
        return cls(**sections)

    @classmethod
    def update(cls, base: TRLConfig | dict[str, Any], overrides: dict[str, Any]) -> TRLConfig:
        """trlX's `TRLConfig.update(base, overrides)`: `base` (a TRLConfig or its dict) with `overrides`
        merged in, given as `{"train.seed": 3}` or `{"train": {"seed": 3}}`, by `evolve`'s rules."""
        config = base if isinstance(base, TRLConfig) else cls.from_dict(base)
        return config.evolve(**overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def load_yaml(cls, path: str | Path) -> TRLConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            with path.open() as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:  # e.g. a tab in the indentation; the message names the line and column
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def evolve(self, **overrides: Any) -> TRLConfig:
        """A copy with overrides: `evolve(train={"seed": 3})` or `evolve(**{"train.seed": 3})`.

        A dict given for a dict-valued field (optimizer/scheduler `kwargs`, `method.gen_kwargs`, ...) merges into
        the current one key by key: `evolve(optimizer={"kwargs": {"lr": 1e-4}})` keeps betas, eps and
        weight_decay. A key set to None is removed (`method.gen_kwargs.top_k=None`); an empty dict `{}` empties
        the field. Changing `optimizer.name` or `scheduler.name` starts that section's kwargs afresh (they are
        the arguments of the class the name picks), so give the new class's kwargs in the same call.
        """
        data = self.to_dict()
        for section in ("optimizer", "scheduler"):  # kwargs belong to the class `name` picks
            name = overrides.get(f"{section}.name", (overrides.get(section) or {}).get("name"))
            if name is not None and name != data[section]["name"]:
                data[section]["kwargs"] = {}
        for key, value in overrides.items():
            if "." in key:
                _set_dotted(data, key, value)
            elif isinstance(value, dict) and key in SECTIONS:
                for name, v in value.items():
                    _set_dotted(data, f"{key}.{name}", v)
            else:
                raise ConfigError(
                    f"override {key!r}: use a section dict or 'section.field'; sections: {list(SECTIONS)}"
                )
        return TRLConfig.from_dict(data)

    def with_overrides(self, assignments: list[str]) -> TRLConfig:
        """Apply CLI-style `section.field=value` strings; values are parsed as YAML (`3`, `true`, `[1, 2]`)."""
        overrides: dict[str, Any] = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or "." not in key:
                raise ConfigError(f"override {item!r} must look like section.field=value (e.g. train.seed=3)")
            overrides[key.strip()] = yaml.safe_load(raw)
        return self.evolve(**overrides)


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    section, _, rest = key.partition(".")
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r} in {key!r}; allowed: {', '.join(SECTIONS)}")
    target = data[section]
    parts = rest.split(".")
    names = {f.name for f in dataclasses.fields(SECTIONS[section])}
    if parts[0] not in names:
        raise ConfigError(f"unknown field {key!r}; fields of {section}: {', '.join(sorted(names))}")
    for part in parts[:-1]:  # dict-valued fields such as method.gen_kwargs.top_k
        if not isinstance(target.get(part), dict):
            raise ConfigError(f"{key!r}: {part!r} is not a mapping")
        target = target[part]
    last = parts[-1]
    if len(parts) == 1 and value is None:  # a plain field set to None is set; inside a dict None removes a key
        target[last] = None
        return
    merged = merge_dicts(target, {last: value})
    target.clear()
    target.update(merged)


def merge_dicts(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` updated key by key, recursively (as trlX's `TRLConfig.update`); a key set to None is removed and
    an empty dict replaces (empties) what was there."""
    merged = dict(base)
    for key, value in update.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and value and isinstance(merged.get(key), dict):
            merged[key] = merge_dicts(merged[key], value)
        else:
            merged[key] = value
    return merged


def _build_section(section: str, cls: type, values: Any) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"section {section!r} must be a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"unknown field(s) {sorted(unknown)} in section {section!r}; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {name: _coerce(f"{section}.{name}", hints[name], value) for name, value in values.items()}
    return cls(**kwargs)


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Check a YAML/CLI value against a field's type hint, converting only lossless cases (int -> float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(name, option, value)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{name}: {value!r} matches none of {hint}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        _require(value in allowed, name, f"allowed: {', '.join(map(repr, allowed))}; got {value!r}")
        return value
    if origin is list or hint is list:
        _require(isinstance(value, list), name, f"must be a list, got {value!r}")
        return list(value)
    if origin is dict or hint is dict:
        value = plain_config_dict(value)
        _require(isinstance(value, dict), name, f"must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        _require(isinstance(value, bool), name, f"must be true or false, got {value!r}")
        return value
    if hint is int:
        _require(isinstance(value, int) and not isinstance(value, bool), name, f"must be an integer, got {value!r}")
        return value
    if hint is float:
        value = numbers_from_strings(value)
        _require(
            isinstance(value, (int, float)) and not isinstance(value, bool), name, f"must be a number, got {value!r}"
        )
        return float(value)
    if hint is str:
        _require(isinstance(value, str), name, f"must be a string, got {value!r}")
        return value
    return value


def config_reference_markdown() -> str:
    """The README's config reference table, generated from the field docs so it cannot drift."""
    lines = ["| field | default | meaning |", "| --- | --- | --- |"]
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"| `{section}.{f.name}` | `{default!r}` | {f.metadata.get('doc', '')} |")
    return "\n".join(lines)


README_MARKERS = ("<!-- config-reference:start -->", "<!-- config-reference:end -->")
SAMPLING_MARKERS = ("<!-- sampling-options:start -->", "<!-- sampling-options:end -->")
REWARD_MODEL_MARKERS = ("<!-- reward-model-config:start -->", "<!-- reward-model-config:end -->")


def readme_tables() -> dict[tuple[str, str], str]:
    """The README's generated tables by their (start, end) markers."""
    from trlx.rewards.rm_config import reference_markdown
    from trlx.rollout.options import sampling_options_markdown

    return {
        README_MARKERS: config_reference_markdown(),
        SAMPLING_MARKERS: sampling_options_markdown(),
        REWARD_MODEL_MARKERS: reference_markdown(),
    }


def update_readme_reference(readme: str | Path = "README.md") -> bool:
    """Rewrite the generated tables between the README markers; True if the file changed.

    Run `python -c "from trlx.config import update_readme_reference; update_readme_reference()"` after
    adding or documenting a field or a sampling option.
    """
    path = Path(readme)
    text = original = path.read_text()
    for (start, end), table in readme_tables().items():
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = f"{head}{start}\n{table}\n{end}{tail}"
    if text != original:
        path.write_text(text)
    return text != original
