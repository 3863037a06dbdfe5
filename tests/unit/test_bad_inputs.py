"""Bad inputs fail up front, before any model is loaded, with a message naming the field and the fix.

docs/bad_inputs.md lists each case by id; `test_docs_table_matches_the_tests` keeps the two in sync.
"""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import TINY_WORDS, build_word_tokenizer
from transformers import GPT2Config, T5Config

import trlx
import trlx.trlx
from trlx.checkpoint import CheckpointError
from trlx.config import ConfigError
from trlx.data.default_configs import default_ppo_config

ROOT = Path(__file__).resolve().parents[2]

# (id, CLI-style overrides, message): what `trlx train CONFIG key=value` (or `config.with_overrides`) reports.
CONFIG_CASES = [
    (
        "last_minibatch_not_split_by_accumulation",
        ["train.batch_size=48", "train.gradient_accumulation_steps=12"],
        r"train\.batch_size: \(48\) leaves a last minibatch of 32 samples per epoch",
    ),
    ("zero_total_steps", ["train.total_steps=0"], r"train\.total_steps: must be a positive integer, got 0"),
    ("unknown_scheduler", ["scheduler.name=step"], r"scheduler\.name: allowed: constant, linear, cosine_annealing"),
    ("unknown_optimizer", ["optimizer.name=lion"], r"optimizer\.name: allowed: adamw, adam, sgd; got 'lion'"),
    ("unknown_field", ["train.batchsize=8"], r"unknown field 'train\.batchsize'; fields of train: .*batch_size"),
    ("wrong_type", ["train.total_steps=ten"], r"train\.total_steps: must be an integer, got 'ten'"),
    ("right_padding", ["tokenizer.padding_side=right"], r"tokenizer\.padding_side: allowed: 'left'"),
    ("negative_ref_std", ["method.scale_reward=ref", "method.ref_std=-1"], r"method\.ref_std: must be positive"),
    (
        "sampling_option_not_scored",
        ["method.gen_kwargs.repetition_penalty=1.2"],
        r"method\.gen_kwargs\.repetition_penalty: not supported: .* in a way trlx does not score; supported options",
    ),
    (
        "greedy_decoding",
        ["method.gen_kwargs.do_sample=false"],
        r"method\.gen_kwargs\.do_sample: must be true: greedy decoding is not a stochastic policy",
    ),
    (
        "unknown_sampling_option",
        ["method.gen_kwargs.tempreature=0.7"],
        r"method\.gen_kwargs\.tempreature: unknown sampling option; supported options: max_new_tokens",
    ),
    ("zero_temperature", ["method.gen_kwargs.temperature=0"], r"temperature: must be a positive number"),
    (
        "several_samples_per_prompt",
        ["method.gen_kwargs.num_return_sequences=4"],
        r"num_return_sequences: must be 1: set method\.num_generations",
    ),
    ("save_total_limit_zero", ["train.save_total_limit=0"], r"train\.save_total_limit: must be at least 1"),
    ("no_faults_allowed", ["train.max_consecutive_faults=0"], r"train\.max_consecutive_faults: must be a positive"),
    ("reward_timeout_zero", ["train.reward_timeout_s=0"], r"train\.reward_timeout_s: must be positive \(seconds\)"),
    ("negative_kl_max", ["method.kl_max=-1"], r"method\.kl_max: must be positive or None, got -1"),
    ("empty_resume_path", ["train.resume_from_checkpoint=''"], r"train\.resume_from_checkpoint: must be a checkpoint"),
    (
        "unknown_method",
        ["method.name=kto"],
        r"method\.name: allowed: ppo, grpo, rloo, reinforce_pp, sft, dpo, ilql, rft \(or trlX's PPOConfig, SFTConfig, "
        r"RFTConfig, ILQLConfig\); got 'kto'",
    ),
    ("group_of_one", ["method.name=grpo"], r"method\.num_generations: grpo needs at least 2 completions per prompt"),
    (
        "group_not_dividing_rollouts",
        ["method.name=grpo", "method.num_generations=3"],
        r"method\.num_generations: \(3\) must divide method\.num_rollouts \(128\)",
    ),
    (
        "unknown_loss_type",
        ["method.loss_type=seq"],
        r"method\.loss_type: allowed: token_mean, sequence_mean, constant",
    ),
    ("unknown_reward_scale", ["method.scale_rewards=std"], r"method\.scale_rewards: allowed: group, batch, none"),
    (
        "kl_loss_with_top_p",
        ["method.kl_loss_coef=0.05", "method.gen_kwargs.top_p=0.9"],
        r"method\.kl_loss_coef: cannot be combined with top_k/top_p sampling",
    ),
]


@pytest.mark.parametrize("overrides, message", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_config_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        default_ppo_config().with_overrides(overrides)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A model folder with config.json and tokenizer but no weights: any attempt to load the model would fail."""
    path = tmp_path_factory.mktemp("no-weights")
    tokenizer = build_word_tokenizer()
    GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def forbid_model_loading(monkeypatch):
    def load_causal_lm(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was reported")

    monkeypatch.setattr(trlx.trlx, "load_causal_lm", load_causal_lm)


def fake_checkpoint(path, state, model, batch_size=8):
    """The files `train.resume_from_checkpoint` checks first (contents only matter for state and config), as
    written by a run of `model`."""
    path.mkdir(parents=True)
    for name in ("value_head.safetensors", "optimizer.safetensors", "rng_state_0.safetensors"):
        (path / name).write_bytes(b"")
    (path / "trainer_state.json").write_text(json.dumps({"num_processes": 1, "rollout": None, **state}))
    config = small_config(path.parent).with_overrides([f"train.batch_size={batch_size}", f"model.model_path={model}"])
    (path / "trlx_config.yml").write_text(yaml.safe_dump(config.to_dict()))
    return path


def small_config(checkpoint_dir, *overrides):
    base = [
        "train.batch_size=4",
        "train.seq_length=24",
        "method.num_rollouts=8",
        "method.chunk_size=8",
        "method.gen_kwargs.max_new_tokens=6",
        "tokenizer.tokenizer_path=null",
        f"train.checkpoint_dir={checkpoint_dir}",
    ]
    return default_ppo_config().with_overrides([*base, *overrides])


def no_pad_or_eos_tokenizer(tmp_path, model):
    folder = tmp_path / "tokenizer"
    tokenizer = build_word_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token = None
    tokenizer.save_pretrained(folder)
    (folder / "config.json").write_text((model / "config.json").read_text())
    return {"config": small_config(tmp_path, f"tokenizer.tokenizer_path={folder}")}


def tokenizer_folder(tmp_path, words):
    folder = tmp_path / "other-tokenizer"
    build_word_tokenizer(words).save_pretrained(folder)
    return {"config": small_config(tmp_path, f"tokenizer.tokenizer_path={folder}")}


def larger_tokenizer(tmp_path, model):
    return tokenizer_folder(tmp_path, [*TINY_WORDS, "extra", "words"])


def other_vocabulary(tmp_path, model):
    return tokenizer_folder(tmp_path, list(reversed(TINY_WORDS)))  # same size, other ids


def model_without_tokenizer(tmp_path, model):
    folder = tmp_path / "bare-model"
    folder.mkdir()
    (folder / "config.json").write_text((model / "config.json").read_text())
    return {"model_path": str(folder)}


def checkpoint_of_another_model(tmp_path, model):
    other = tmp_path / "other-model"
    GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=78).save_pretrained(other)
    checkpoint = fake_checkpoint(tmp_path / "c", {}, other)
    return {"config": small_config(tmp_path, f"train.resume_from_checkpoint={checkpoint}")}


def encoder_decoder_model(tmp_path, model):
    folder = tmp_path / "t5"
    T5Config(d_model=16, num_layers=1, num_heads=2, d_kv=8, d_ff=16, vocab_size=78).save_pretrained(folder)
    return {"model_path": str(folder)}


def reward_needing_label(samples, label, **kwargs):
    return [float(x) for x in label]


def positional_only_reward(samples, /, outputs):
    return [0.0] * len(samples)


def eval_prompts_without_label(tmp_path, model):
    return {
        "reward_fn": reward_needing_label,
        "prompts": [{"prompt": "the movie was", "label": 1}],
        "eval_prompts": ["the movie was"],
    }


def earlier_run(tmp_path, model):
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\n')  # small_config's checkpoint_dir is tmp_path
    return {}


def checkpoint_dir_under_a_file(tmp_path, model):
    (tmp_path / "run").write_text("")
    return {"config": small_config(tmp_path / "run" / "sub")}


# (id, builder(tmp_path, model_folder) -> trlx.train kwargs, exception, message)
PREFLIGHT_CASES = [
    (
        "prompt_too_long",
        lambda tmp, model: {"prompts": ["good " * 30]},
        ValueError,
        r"prompt 0 has 30 tokens but only 18 fit \(train\.seq_length minus method\.gen_kwargs\.max_new_tokens\)",
    ),
    ("empty_prompts", lambda tmp, model: {"prompts": []}, ValueError, r"prompts is empty: pass at least one prompt"),
    (
        "prompt_past_the_model_position_limit",
        lambda tmp, model: {"prompts": ["good " * 1030], "config": small_config(tmp, "train.seq_length=1100")},
        ValueError,
        r"prompt 0 has 1030 tokens but only 1018 fit \(the model's 1024 positions minus method\.gen_kwargs\."
        r"max_new_tokens; train\.seq_length \(1100\) is more than the model supports\)",
    ),
    (
        "max_new_tokens_fill_seq_length_and_the_model",
        lambda tmp, model: {
            "config": small_config(tmp, "train.seq_length=1024", "method.gen_kwargs.max_new_tokens=1024")
        },
        ValueError,
        r"method\.gen_kwargs\.max_new_tokens \(1024\) leaves no room for a prompt in train\.seq_length \(1024\), and "
        r"model '.*' has 1024 positions: set train\.seq_length to the prompt \+ continuation length you want",
    ),
    (
        "model_folder_without_tokenizer",
        model_without_tokenizer,
        FileNotFoundError,
        r"'.*bare-model' has no tokenizer files \(tokenizer\.json, .*\): save one there with "
        r"tokenizer\.save_pretrained\(folder\), or name another with tokenizer\.tokenizer_path",
    ),
    (
        "prompts_one_string",
        lambda tmp, model: {"prompts": "the movie was"},
        TypeError,
        r"prompts must be a list of prompts, not one string \(which would be read letter by letter\): pass \['the",
    ),
    (
        "model_path_missing",
        lambda tmp, model: {"model_path": str(tmp / "no-such-model")},
        FileNotFoundError,
        r"model_path '.*no-such-model' does not exist",
    ),
    (
        "unknown_builtin_model",
        lambda tmp, model: {"model_path": "gguf:llama-70b"},
        FileNotFoundError,
        r"model_path 'gguf:llama-70b': unknown; built-in: gguf:smollm2-135m",
    ),
    (
        "hub_model_not_cached_offline",
        lambda tmp, model: {"model_path": "nobody/no-such-model"},
        FileNotFoundError,
        r"model_path 'nobody/no-such-model' is not a local folder and not in the Hugging Face cache, and "
        r"HF_HUB_OFFLINE is set; point it at a local folder",
    ),
    ("reward_fn_missing", lambda tmp, model: {"reward_fn": None}, ValueError, r"reward_fn is required"),
    (
        "reward_fn_needs_a_metadata_key_eval_prompts_lack",
        eval_prompts_without_label,
        TypeError,
        r"reward_fn requires 'label', which trlx does not pass: arguments are samples, prompts, outputs, tokenizer "
        r"and the metadata keys of dict prompts; eval_prompts have no 'label' key \(give every prompt a 'label' "
        r"key, or a default in reward_fn\)",
    ),
    (
        "reward_fn_positional_only",
        lambda tmp, model: {"reward_fn": positional_only_reward},
        TypeError,
        r"reward_fn takes 'samples' positional-only, but trlx passes arguments by name \(samples, prompts, outputs, "
        r"tokenizer and prompt metadata keys\): drop the '/' from its signature",
    ),
    ("reward_fn_not_callable", lambda tmp, model: {"reward_fn": 3.0}, TypeError, r"reward_fn must be callable"),
    (
        "stop_sequences_string",
        lambda tmp, model: {"stop_sequences": "\n"},
        TypeError,
        r"stop_sequences must be a list of strings",
    ),
    ("tokenizer_without_pad_or_eos", no_pad_or_eos_tokenizer, ValueError, r"has neither a pad nor an eos token"),
    (
        "tokenizer_larger_than_embedding",
        larger_tokenizer,
        ValueError,
        r"tokenizer .* has 80 tokens but model .* has only 78 embedding rows, so ids >= 78 would index past them",
    ),
    (
        "tokenizer_of_another_model",
        other_vocabulary,
        ValueError,
        r"tokenizer\.tokenizer_path .* has a different vocabulary from the tokenizer shipped with model",
    ),
    (
        "optimizer_kwargs_mismatch",
        lambda tmp, model: {"config": small_config(tmp, "optimizer.kwargs={lr: 0.001, momentum: 0.9}")},
        ValueError,
        r"optimizer\.kwargs \{.*\} do not fit torch adamw",
    ),
    (
        "scheduler_kwargs_mismatch",
        lambda tmp, model: {"config": small_config(tmp, "scheduler.name=linear", "scheduler.kwargs={T_max: 3}")},
        ValueError,
        r"scheduler\.kwargs \{'T_max': 3\} do not fit torch linear",
    ),
    (
        "earlier_run_in_checkpoint_dir",
        earlier_run,
        CheckpointError,
        r"train\.checkpoint_dir: '.*' already holds another run's results \(metrics\.jsonl\); starting a new run "
        r"there would overwrite them\. Continue that run with train\.resume_from_checkpoint=latest, or start afresh "
        r"in a new or empty folder .* train\.overwrite_output_dir=true",
    ),
    (
        "checkpoint_dir_is_a_file",
        checkpoint_dir_under_a_file,
        CheckpointError,
        r"train\.checkpoint_dir: '.*run' is a file, not a folder",
    ),
    (
        "resume_latest_without_checkpoint",
        lambda tmp, model: {"config": small_config(tmp, "train.resume_from_checkpoint=latest")},
        CheckpointError,
        r"train\.resume_from_checkpoint=latest but .*latest does not exist: no checkpoint has been written",
    ),
    (
        "resume_path_missing",
        lambda tmp, model: {"config": small_config(tmp, f"train.resume_from_checkpoint={tmp / 'gone'}")},
        CheckpointError,
        r"train\.resume_from_checkpoint: checkpoint folder '.*gone' does not exist",
    ),
    (
        "resume_from_model_folder",
        lambda tmp, model: {"config": small_config(tmp, f"train.resume_from_checkpoint={model}")},
        CheckpointError,
        r"is not a complete trlx checkpoint \(missing trainer_state\.json, optimizer\.safetensors",
    ),
    (
        "resume_mid_rollout_with_other_batch_size",
        lambda tmp, model: {
            "config": small_config(
                tmp,
                "train.resume_from_checkpoint="
                + str(
                    fake_checkpoint(tmp / "c", {"rollout": {"metrics": {}, "minibatch_index": 1}}, model, batch_size=8)
                ),
            )
        },
        CheckpointError,
        r"train\.batch_size is 4 but checkpoint .* was saved mid-rollout with 8; resume with train\.batch_size=8",
    ),
    (
        "resume_with_other_process_count",
        lambda tmp, model: {
            "config": small_config(
                tmp, "train.resume_from_checkpoint=" + str(fake_checkpoint(tmp / "c", {"num_processes": 2}, model))
            )
        },
        CheckpointError,
        r"was written by 2 process\(es\) but this run has 1; .* launch with 2 process\(es\)",
    ),
    (
        "resume_into_another_model",
        checkpoint_of_another_model,
        CheckpointError,
        r"checkpoint '.*c' was written for model '.*other-model' but model\.model_path is '.*no-weights.*': the policy "
        r"would resume from the other model's weights while the reference and tokenizer come from this one; resume "
        r"with model\.model_path='.*other-model', or start a new run",
    ),
    (
        "encoder_decoder_model",
        encoder_decoder_model,
        ValueError,
        r"model\.model_path '.*t5' is an encoder-decoder \(t5\) model; encoder-decoder policies are not supported "
        r"yet: trlx trains decoder-only causal LMs",
    ),
    (
        "resume_from_sharded_optimizer_checkpoint",
        lambda tmp, model: {
            "config": small_config(
                tmp, "train.resume_from_checkpoint=" + str(fake_checkpoint(tmp / "c", {"optimizer": None}, model))
            )
        },
        CheckpointError,
        r"was written under DeepSpeed or FSDP, whose optimizer state is partitioned .* and not saved; exact resume",
    ),
]


@pytest.mark.parametrize(
    "build, error, message", [c[1:] for c in PREFLIGHT_CASES], ids=[c[0] for c in PREFLIGHT_CASES]
)
def test_fails_before_model_load(build, error, message, model_folder, tmp_path):
    kwargs = {
        "model_path": str(model_folder),
        "reward_fn": lambda samples: [0.0] * len(samples),
        "prompts": ["the movie was"],
        "config": small_config(tmp_path),
        **build(tmp_path, model_folder),
    }
    with pytest.raises(error, match=message):
        trlx.train(**kwargs)


def test_docs_table_matches_the_tests():
    """Every row of docs/bad_inputs.md names a test that exists, and every case here has a row."""
    doc = (ROOT / "docs" / "bad_inputs.md").read_text()
    references = re.findall(r"`(tests/[\w/]+\.py)::(\w+)(?:\[(\w+)\])?`", doc)
    assert references, "docs/bad_inputs.md names no tests"
    for file, function, case in references:
        source = (ROOT / file).read_text()
        names = {node.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)}
        assert function in names, f"docs/bad_inputs.md names {file}::{function}, which does not exist"
        assert case is None or f'"{case}"' in source, f"{file}::{function} has no case {case!r}"
    documented = {(function, case) for _, function, case in references}
    for function, cases in (("test_config_error", CONFIG_CASES), ("test_fails_before_model_load", PREFLIGHT_CASES)):
        missing = [c[0] for c in cases if (function, c[0]) not in documented]
        assert not missing, f"cases without a row in docs/bad_inputs.md: {missing}"
