"""`trlx.train`: one call from a model path, a reward function and prompts to a trained policy."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PretrainedConfig

from trlx.checkpoint import INITIAL_MODEL_DIR, clear_run_outputs
from trlx.config import TRLConfig
from trlx.data.default_configs import default_ilql_config, default_ppo_config, default_sft_config
from trlx.data.prompts import PromptPipeline, to_prompts
from trlx.data.samples import normalized_returns, preference_examples, sft_examples, split_rewards
from trlx.distributed import (
    loading_full_weights,
    make_accelerator,
    params_sharded,
    seed_everything,
    shard,
    shard_padded,
)
from trlx.logging import quiet_transformers
from trlx.models.gguf import resolve_model_path
from trlx.models.ilql import ILQLPolicy
from trlx.models.policy import (
    PolicyWithValueHead,
    check_decoder_only,
    check_model_path,
    check_tokenizer_fits,
    hidden_size,
    load_causal_lm,
    load_tokenizer,
    position_limit,
)
from trlx.models.reference import build_policy_and_reference
from trlx.models.trunk import frozen_trunk
from trlx.preflight import preflight
from trlx.rewards.scoring import check_signature
from trlx.task import dataset_prompts, dataset_samples, is_dataset, load_function, load_prompts, load_samples
from trlx.trainers.objectives import DPOObjective, ILQLObjective, SFTObjective
from trlx.trainers.offline import OfflineTrainer
from trlx.trainers.online import OnlineTrainer
from trlx.trainers.rft import RFTObjective


def train(
    model_path: str | PretrainedConfig | None = None,
    reward_fn: Callable[..., Any] | None = None,
    dataset: Any = None,
    samples: Sequence[Any] | str | None = None,
    rewards: Sequence[float] | None = None,
    prompts: Sequence[str | dict[str, Any]] | None = None,
    eval_prompts: Sequence[str | dict[str, Any]] | None = None,
    metric_fn: Callable[..., dict[str, Any]] | None = None,
    config: TRLConfig | None = None,
    stop_sequences: Sequence[str] | None = None,
) -> OnlineTrainer | OfflineTrainer:
    """Fine-tune a causal LM and return the trainer.

    Online (`reward_fn=` + `prompts=`; `config.method.name` ppo, grpo, rloo, reinforce_pp): the policy samples
    continuations of the prompts and learns from reward_fn's scores. reward_fn(samples, prompts, outputs,
    tokenizer=..., **metadata) returns one float per sample or one list of per-token floats per sample. `prompts`
    are strings or dicts with a `prompt` key (other keys are passed to reward_fn / metric_fn as lists).
    Offline (`samples=`): supervised fine-tuning (method.name sft, the default without a config: see
    `trlx.data.samples` for the sample forms), or DPO (method.name dpo) on (prompt, chosen, rejected) triples or
    a `trlx label` comparisons file. Offline RL (`samples=` + `rewards=`, one number per sample; trlX's
    `dataset=(samples, rewards)` too): ILQL (the default then). `eval_prompts` with a reward_fn or metric_fn are
    sampled (ILQL: from its advantage-shifted policy) and scored.

    `prompts`, `eval_prompts` and `samples` may also be a `datasets.Dataset`: the prompt is column
    `task.prompt_field` (default `prompt`) and the other columns are metadata; samples take their form from the
    columns (text; prompt + completion; messages; prompt + chosen + rejected; a reward column makes it ILQL's).

    `model_path` is a folder, a Hub name, `gguf:smollm2-135m`, or (as in trlX) a `transformers.PretrainedConfig`:
    a model with random weights built from it, saved to `<checkpoint_dir>/initial_model` first (it needs
    `tokenizer.tokenizer_path`). Checkpoints and metrics.jsonl go to `config.train.checkpoint_dir`. Arguments
    left as None fall back to the config's `task` section (functions and prompt files by name).
    """
    trainer = make_trainer(
        model_path=model_path,
        reward_fn=reward_fn,
        dataset=dataset,
        samples=samples,
        rewards=rewards,
        prompts=prompts,
        eval_prompts=eval_prompts,
        metric_fn=metric_fn,
        config=config,
        stop_sequences=stop_sequences,
    )
    trainer.learn()
    return trainer


def prompt_budget(config: TRLConfig) -> tuple[int, str]:
    """The most prompt tokens that fit, and where that bound comes from (for the error a longer prompt gets):
    train.seq_length, or the model's position limit when that is smaller (positions past it would crash).

    A seq_length that leaves no room for a prompt next to max_new_tokens (trlX configs with the two equal,
    where trlX cuts every prompt to nothing) gives way to the model's position limit, with a warning.
    """
    max_new_tokens = config.method.gen_kwargs["max_new_tokens"]
    seq_length = config.train.seq_length
    limit = position_limit(config.model.model_path)
    if max_new_tokens >= seq_length:
        if limit is None or limit - max_new_tokens < 1:
            positions = "has no position limit in its config" if limit is None else f"has {limit} positions"
            raise ValueError(
                f"method.gen_kwargs.max_new_tokens ({max_new_tokens}) leaves no room for a prompt in "
                f"train.seq_length ({seq_length}), and model {config.model.model_path!r} {positions}: set "
                "train.seq_length to the prompt + continuation length you want"
            )
        warnings.warn(
            f"train.seq_length ({seq_length}) leaves no room for a prompt next to method.gen_kwargs.max_new_tokens "
            f"({max_new_tokens}) (trlX would cut every prompt to nothing); prompts are bounded by the model's "
            f"{limit} positions instead: up to {limit - max_new_tokens} tokens. Set train.seq_length above "
            "max_new_tokens to choose the bound yourself",
            stacklevel=3,
        )
        return limit - max_new_tokens, (
            f"the model's {limit} positions minus method.gen_kwargs.max_new_tokens, since train.seq_length "
            f"({seq_length}) leaves no room"
        )
    if limit is None or limit >= seq_length:
        return seq_length - max_new_tokens, "train.seq_length minus method.gen_kwargs.max_new_tokens"
    if limit - max_new_tokens < 1:
        raise ValueError(
            f"method.gen_kwargs.max_new_tokens ({max_new_tokens}) leaves no room for a prompt in model "
            f"{config.model.model_path!r}'s {limit} positions"
        )
    return limit - max_new_tokens, (
        f"the model's {limit} positions minus method.gen_kwargs.max_new_tokens; train.seq_length "
        f"({seq_length}) is more than the model supports"
    )


def initial_model_dir(config: TRLConfig, model_config: PretrainedConfig) -> Path:
    """Where a model built from `model_config` is saved before training: `<checkpoint_dir>/initial_model`, so the
    reference, the checkpoints' `model.model_path` and a resumed run all name one real folder."""
    if config.tokenizer.tokenizer_path is None:
        raise ValueError(
            f"model_path is a {type(model_config).__name__} (a model built from a config has no tokenizer): set "
            "tokenizer.tokenizer_path to the tokenizer it should read"
        )
    return Path(config.train.checkpoint_dir) / INITIAL_MODEL_DIR


def save_initial_model(model_config: PretrainedConfig, folder: str, seed: int) -> None:
    """Build a randomly initialised causal LM from `model_config` (seeded by train.seed) and save it to `folder`."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):  # the run's own RNG stream stays as it was
        torch.manual_seed(seed)
        lm = AutoModelForCausalLM.from_config(model_config)
    with quiet_transformers():
        lm.save_pretrained(folder, safe_serialization=True)


def make_trainer(
    model_path: str | PretrainedConfig | None = None,
    reward_fn: Callable[..., Any] | None = None,
    dataset: Any = None,
    samples: Sequence[Any] | str | None = None,
    rewards: Sequence[float] | None = None,
    prompts: Sequence[str | dict[str, Any]] | None = None,
    eval_prompts: Sequence[str | dict[str, Any]] | None = None,
    metric_fn: Callable[..., dict[str, Any]] | None = None,
    config: TRLConfig | None = None,
    stop_sequences: Sequence[str] | None = None,
) -> OnlineTrainer | OfflineTrainer:
    """Everything `train` does except `learn()`: validated inputs, loaded models, a ready trainer (OnlineTrainer
    for reward_fn + prompts, OfflineTrainer for samples= and rft)."""
    if dataset is not None:  # trlX's older spelling of samples= + rewards=
        samples, rewards = dataset
    field = config.task.prompt_field if config is not None else "prompt"
    if samples is None and config is not None and config.method.trains_on_samples and config.task.samples:
        samples = load_samples(config.task.samples)
    if is_dataset(samples):  # a datasets.Dataset: its columns say the sample form (and a reward column, ilql)
        samples, dataset_rewards = dataset_samples(samples, field)
        if rewards is None and (config is None or config.method.name == "ilql"):
            rewards = dataset_rewards
    if rewards is None and samples is not None and (config is None or config.method.name == "ilql"):
        samples, rewards = split_rewards(samples)  # {"sample", "reward"} rows (a task.samples file for ilql)
    offline = samples is not None
    if config is None:  # as trlX: samples + rewards is ILQL, samples alone SFT, else PPO
        config = default_ilql_config() if rewards is not None else default_sft_config() if offline else None
        config = config or default_ppo_config()
    check_offline_inputs(config, samples, rewards)
    task = config.task
    if reward_fn is None and task.reward_fn:
        reward_fn = load_function(task.reward_fn, "task.reward_fn")
    if metric_fn is None and task.metric_fn:
        metric_fn = load_function(task.metric_fn, "task.metric_fn")
    if prompts is None and task.prompts and not offline:
        prompts = load_prompts(task.prompts, "task.prompts", task.prompt_field)
    if eval_prompts is None and task.eval_prompts:
        eval_prompts = load_prompts(task.eval_prompts, "task.eval_prompts", task.prompt_field)
    if is_dataset(prompts):
        prompts = dataset_prompts(prompts, task.prompt_field, "prompts")
    if is_dataset(eval_prompts):
        eval_prompts = dataset_prompts(eval_prompts, task.prompt_field, "eval_prompts")
    if stop_sequences is None and task.stop_sequences:
        stop_sequences = task.stop_sequences
    if not offline and reward_fn is None:
        raise ValueError("reward_fn is required: a callable (samples, prompts, outputs, **kwargs) -> list[float]")
    if reward_fn is not None and not callable(reward_fn):
        raise TypeError(f"reward_fn must be callable, got {type(reward_fn).__name__}")
    if stop_sequences is not None and isinstance(stop_sequences, str):
        raise TypeError("stop_sequences must be a list of strings, not a single string")
    config, model_config = resolve_model(config, model_path)
    accelerator, resume_path = start_run(config, model_config)

    # Cheap checks first: tokenizer and prompts fail before the model is loaded.
    tokenizer = load_tokenizer(
        config.tokenizer.tokenizer_path or config.model.model_path, config.tokenizer.truncation_side
    )
    check_tokenizer_fits(tokenizer, config.model.model_path, config.tokenizer.tokenizer_path)
    if offline:
        # Generation-based evaluation only when there is something to score it with.
        evaluated = eval_prompts is not None and (reward_fn is not None or metric_fn is not None)
        eval_pipeline = None
        if evaluated:
            max_prompt_length, budget = prompt_budget(config)
            eval_pipeline = PromptPipeline(
                to_prompts(eval_prompts, "eval_prompts"), tokenizer, max_prompt_length, budget
            )
            eval_pipeline = eval_pipeline.select(*shard_padded(len(eval_pipeline), accelerator))
            check_scorers(reward_fn, metric_fn, {"eval_prompts": eval_pipeline.metadata_keys})
        return make_offline_trainer(
            config,
            accelerator,
            resume_path,
            tokenizer,
            samples,
            rewards,
            eval_pipeline,
            reward_fn,
            metric_fn,
            stop_sequences,
        )
    max_prompt_length, budget = prompt_budget(config)
    if prompts is None:
        prompts = [tokenizer.bos_token or tokenizer.eos_token] * config.train.batch_size
    # Every process checks all prompts (so a bad one fails everywhere at once), then keeps its own share.
    train_prompts = PromptPipeline(to_prompts(prompts, "prompts"), tokenizer, max_prompt_length, budget)
    train_prompts = train_prompts.select(shard(range(len(train_prompts)), accelerator, "prompts"))
    if eval_prompts is None:
        eval_prompts = list(prompts)[: config.train.batch_size]
    eval_pipeline = PromptPipeline(to_prompts(eval_prompts, "eval_prompts"), tokenizer, max_prompt_length, budget)
    eval_pipeline = eval_pipeline.select(*shard_padded(len(eval_pipeline), accelerator))
    check_scorers(
        reward_fn,
        metric_fn,
        {"prompts": train_prompts.metadata_keys, "eval_prompts": eval_pipeline.metadata_keys},
    )

    lm, reference = load_policy_lm(config, accelerator)
    if not config.method.is_online:  # rft: the offline loop, on completions it samples and selects itself
        objective = RFTObjective(train_prompts, config.method, tokenizer, config.train.seq_length)
        return offline_trainer(
            config,
            accelerator,
            resume_path,
            PolicyWithValueHead(lm, value_head=False),
            objective,
            tokenizer,
            eval_pipeline,
            reward_fn,
            metric_fn,
            stop_sequences,
        )
    trunk = None if params_sharded(accelerator) else frozen_trunk(lm, config.model.num_layers_unfrozen)
    trainer = OnlineTrainer(
        config=config,
        policy=PolicyWithValueHead(lm, value_head=config.method.has_value_head),
        reference=reference,
        tokenizer=tokenizer,
        reward_fn=reward_fn,
        train_prompts=train_prompts,
        eval_prompts=eval_pipeline,
        metric_fn=metric_fn,
        stop_sequences=stop_sequences or (),
        accelerator=accelerator,
        trunk=trunk,
    )
    if resume_path is not None:
        trainer.resume(resume_path)
    return trainer


def check_offline_inputs(config: TRLConfig, samples: Any, rewards: Any) -> None:
    """samples= (and rewards=) agree with method.name: sft / dpo on samples, ilql on samples with rewards."""
    name = config.method.name
    if samples is not None and not config.method.trains_on_samples:
        raise ValueError(
            f"samples= is a static dataset, trained on by method.name sft, dpo or ilql, but the config has method.name "
            f"{name} (trained on reward_fn= and prompts=); use trlx.data.default_configs.default_sft_config(), "
            "default_dpo_config() or default_ilql_config(), or pass no config"
        )
    if samples is None and config.method.trains_on_samples:
        raise ValueError(f"method.name {name} trains on samples=: pass the dataset as samples=[...]")
    if rewards is not None and name != "ilql":
        raise ValueError(
            f"rewards= (one per sample) is offline RL, method.name ilql, but the config has method.name {name}; use "
            "trlx.data.default_configs.default_ilql_config(), or pass no config"
        )
    if rewards is None and name == "ilql":
        raise ValueError(
            "method.name ilql learns from rewarded samples: pass rewards=[...] (one number per sample), or samples "
            'as {"sample": ..., "reward": ...} rows'
        )


def check_scorers(
    reward_fn: Callable[..., Any] | None, metric_fn: Callable[..., Any] | None, metadata: dict[str, list[str]]
) -> None:
    """reward_fn (on every prompt set) and metric_fn (on the eval prompts) get every argument they require."""
    if reward_fn is not None:
        check_signature(reward_fn, "reward_fn", metadata)
    if metric_fn is not None:
        check_signature(metric_fn, "metric_fn", {"eval_prompts": metadata["eval_prompts"]})


def resolve_model(config: TRLConfig, model_path: Any) -> tuple[TRLConfig, PretrainedConfig | None]:
    """The config with `model.model_path` set and resolved (gguf names, a PretrainedConfig's folder), checked
    before anything loads; and the PretrainedConfig to build the model from, if one was given."""
    model_config = model_path if isinstance(model_path, PretrainedConfig) else None
    if model_config is not None:  # trlX: a model built from a config (random weights), saved as the run's base
        check_decoder_only(model_config)
        model_path = initial_model_dir(config, model_config)
    if model_path is not None:
        config = config.evolve(model={"model_path": str(model_path)})
    config = config.evolve(model={"model_path": resolve_model_path(config.model.model_path)})  # gguf:... names
    if model_config is None:
        check_model_path(config.model.model_path)
        check_decoder_only(config.model.model_path)
    return config, model_config


def start_run(config: TRLConfig, model_config: PretrainedConfig | None) -> tuple[Accelerator, Path | None]:
    """The accelerator, seeded; the preflight checks; the output folder cleared when asked; a model built from
    a config saved. Returns the checkpoint to resume from, if any."""
    accelerator = make_accelerator(config.train)
    seed_everything(config.train.seed + accelerator.process_index)
    resume_path = preflight(config, accelerator.num_processes)
    if config.train.overwrite_output_dir and resume_path is None:
        if accelerator.is_main_process:
            clear_run_outputs(config.train.checkpoint_dir)
        accelerator.wait_for_everyone()
    if model_config is not None and resume_path is None:
        if accelerator.is_main_process:
            save_initial_model(model_config, config.model.model_path, config.train.seed)
        accelerator.wait_for_everyone()
    elif model_config is not None:
        check_model_path(config.model.model_path)  # resuming: the run's initial model must still be there
    return accelerator, resume_path


def load_policy_lm(config: TRLConfig, accelerator: Accelerator) -> tuple[Any, Any]:
    """The policy LM (layers frozen, adapters added per `model`) and its reference (None without one)."""
    with loading_full_weights(accelerator):
        lm = load_causal_lm(config.model.model_path)
        return build_policy_and_reference(
            lm,
            config.model,
            config.train.gradient_checkpointing,
            params_sharded(accelerator),
            with_reference=config.method.uses_reference,
        )


def make_offline_trainer(
    config: TRLConfig,
    accelerator: Accelerator,
    resume_path: Path | None,
    tokenizer: Any,
    samples: Any,
    rewards: Sequence[float] | None,
    eval_prompts: PromptPipeline | None,
    reward_fn: Callable[..., Any] | None,
    metric_fn: Callable[..., Any] | None,
    stop_sequences: Sequence[str] | None,
) -> OfflineTrainer:
    """SFT, DPO or ILQL: every process tokenizes and checks all samples (a bad one fails everywhere at once,
    before the model loads), keeps an equal share, and trains on it."""
    seq_length, method, pad_id = config.train.seq_length, config.method, tokenizer.pad_token_id
    if method.name == "dpo":
        data: list[Any] = preference_examples(samples, tokenizer, seq_length)
    else:
        data = sft_examples(samples, tokenizer, seq_length)
    returns = normalized_returns(rewards, len(data)) if method.name == "ilql" else []
    engine = accelerator.state.deepspeed_plugin is not None or params_sharded(accelerator)
    if method.name == "ilql" and engine:
        raise ValueError(
            "method.name ilql syncs its target Q heads on the full-precision parameters after each step, which "
            "DeepSpeed and FSDP shard or recast: run ILQL with plain DDP (torchrun or accelerate launch without "
            "a DeepSpeed/FSDP config)"
        )
    indices, _ = shard_padded(len(data), accelerator)  # equal shares: repeats even them out
    data = [data[i] for i in indices]
    lm, reference = load_policy_lm(config, accelerator)
    policy: Any = PolicyWithValueHead(lm, value_head=False)
    if method.name == "sft":
        objective: Any = SFTObjective(data, pad_id)
    elif method.name == "ilql":
        objective = ILQLObjective(data, [returns[i] for i in indices], pad_id, method)
        policy = ILQLPolicy(lm, method.two_qs, float(method.gen_kwargs.get("beta", 1.0)))
    else:
        device = accelerator.device
        forward = reference.to(device).forward_fn()
        # A hydra reference shares the frozen trunk: its output is recorded with the reference's log-probs and
        # replayed in every update (the policy then runs only its top blocks), when it fits in memory.
        trunk = None
        if getattr(reference, "kind", None) == "hydra" and not engine:
            trunk = frozen_trunk(lm, config.model.num_layers_unfrozen)
            if trunk is not None and not trunk_cache_fits(data, hidden_size(lm)):
                trunk = None
        objective = DPOObjective(data, pad_id, method, forward, device, trunk)
        del reference  # its log-probs are computed: the reference is not needed during training
    return offline_trainer(
        config,
        accelerator,
        resume_path,
        policy,
        objective,
        tokenizer,
        eval_prompts,
        reward_fn,
        metric_fn,
        stop_sequences,
    )


TRUNK_CACHE_LIMIT = 4 * 2**30  # bytes of frozen-trunk output DPO keeps on the CPU per process


def trunk_cache_fits(pairs: Sequence[Any], width: int) -> bool:
    """Whether the pairs' fp32 trunk output (every token of both completions and their prompts) fits in
    TRUNK_CACHE_LIMIT; if not, DPO runs the whole model in each update instead, and says so."""
    size = 4 * width * sum(len(chosen) + len(rejected) for chosen, rejected in pairs)
    if size <= TRUNK_CACHE_LIMIT:
        return True
    warnings.warn(
        f"the frozen trunk's output for these pairs would take {size / 2**30:.1f} GiB per process (limit "
        f"{TRUNK_CACHE_LIMIT / 2**30:.0f} GiB): DPO recomputes the trunk in every update instead",
        stacklevel=3,
    )
    return False


def offline_trainer(
    config: TRLConfig,
    accelerator: Accelerator,
    resume_path: Path | None,
    policy: Any,
    objective: Any,
    tokenizer: Any,
    eval_prompts: PromptPipeline | None,
    reward_fn: Callable[..., Any] | None,
    metric_fn: Callable[..., Any] | None,
    stop_sequences: Sequence[str] | None,
) -> OfflineTrainer:
    """The offline loop around `objective`, resumed from `resume_path` when given."""
    trainer = OfflineTrainer(
        config=config,
        policy=policy,
        objective=objective,
        tokenizer=tokenizer,
        eval_prompts=eval_prompts,
        reward_fn=reward_fn,
        metric_fn=metric_fn,
        stop_sequences=stop_sequences or (),
        accelerator=accelerator,
    )
    if resume_path is not None:
        trainer.resume(resume_path)
    return trainer
