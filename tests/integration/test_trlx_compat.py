"""A trlX user's script and YAML vocabulary run unchanged: a dict config through `TRLConfig.update`, trlX's
method name and field spellings, and a batch_size that does not divide num_rollouts (a last, smaller minibatch)."""

import warnings

import pytest
from conftest import TINY_PROMPTS, save_tiny_gpt2

import trlx
from trlx.config import ConfigError, TRLConfig
from trlx.data.default_configs import default_ppo_config
from trlx.logging import read_metrics


def test_trlx_style_script_with_a_ragged_last_minibatch_trains(tmp_path):
    model = save_tiny_gpt2(tmp_path / "model")
    hparams = {  # as a trlX example writes it (randomwalks uses batch_size 100 of num_rollouts 128)
        "train": {
            "batch_size": 6,
            "minibatch_size": 3,
            "total_steps": 12,
            "seq_length": 24,
            "eval_interval": 6,
            "checkpoint_interval": 1000,
            "checkpoint_dir": str(tmp_path / "run"),
            "project_name": "trlx-tiny",
            "tags": ["compat"],
            "progress_bar": False,
        },
        "model": {"model_path": str(model), "model_arch_type": "causal", "num_layers_unfrozen": -1},
        "tokenizer": {"tokenizer_path": str(model)},
        "method": {
            "name": "ppoconfig",
            "num_rollouts": 16,
            "chunk_size": 16,
            "ppo_epochs": 2,
            "scale_reward": False,
            "gen_kwargs": {"max_new_tokens": 6, "top_k": 0, "top_p": 1.0, "do_sample": True},
        },
    }
    config = TRLConfig.update(default_ppo_config().to_dict(), hparams)
    assert config.method.name == "ppo" and config.method.scale_reward is None
    assert config.train.gradient_accumulation_steps == 2  # minibatch_size 3 of batch_size 6

    def reward_fn(samples, **kwargs):
        return [float(s.count("good")) for s in samples]

    trainer = trlx.train(reward_fn=reward_fn, prompts=TINY_PROMPTS, config=config)
    # 16 samples in minibatches of 6, 6 and 4, twice per rollout: 6 steps per rollout, 2 rollouts.
    assert [len(mb) for mb in trainer.minibatches(trainer.collect_rollout()[0])] == [6, 6, 4, 6, 6, 4]
    steps = [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "reward/mean" in r]
    assert steps == list(range(1, 13)) and trainer.iteration == 2


def test_trlx_fields_without_an_effect_here_warn_and_seq2seq_is_refused():
    with pytest.warns(UserWarning, match=r"train\.rollout_logging_dir='rollouts' is a trlX setting"):
        TRLConfig.from_dict({"train": {"rollout_logging_dir": "rollouts"}})
    with pytest.warns(UserWarning, match=r"train\.save_optimizer=False"):
        TRLConfig.from_dict({"train": {"save_optimizer": False}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the run-naming fields are kept silently (for the trackers)
        TRLConfig.from_dict({"train": {"project_name": "p", "run_name": "r", "entity_name": "e", "group_name": "g"}})
    with pytest.raises(ConfigError, match="model.model_arch_type: allowed: 'causal'"):
        TRLConfig.from_dict({"model": {"model_arch_type": "seq2seq"}})
    with pytest.raises(ConfigError, match="train.minibatch_size: means gradient_accumulation_steps=2"):
        TRLConfig.from_dict({"train": {"batch_size": 8, "minibatch_size": 4, "gradient_accumulation_steps": 4}})


def test_trainer_surface_modules_and_a_peft_lora_config_object(tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from trlx.data.method_configs import PPOConfig
    from trlx.models.modeling_ppo import AutoModelForCausalLMWithValueHead

    model = save_tiny_gpt2(tmp_path / "model")
    config = default_ppo_config().evolve(
        **{
            "model.model_path": str(model),
            "model.num_layers_unfrozen": -1,
            "model.peft_config": LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]),  # an object, as in trlX
            "tokenizer.tokenizer_path": None,
            "train.batch_size": 8,
            "train.total_steps": 2,
            "train.seq_length": 24,
            "train.checkpoint_dir": str(tmp_path / "run"),
            "method.num_rollouts": 8,
            "method.chunk_size": 8,
            "method.ppo_epochs": 1,
            "method.gen_kwargs": {"max_new_tokens": 4},
        }
    )
    assert isinstance(config.method, PPOConfig) and config.model.peft_config["r"] == 4
    trainer = trlx.train(reward_fn=lambda samples, **kw: [1.0] * len(samples), prompts=TINY_PROMPTS, config=config)
    assert trainer.model.lm.peft_config["default"].r == 4  # the adapters of the LoraConfig object train
    generation = trainer.generate_eval(trainer.eval_prompts.batch([0, 1]))
    assert len(generation.outputs) == 2
    exported = trainer.save_pretrained(tmp_path / "export")
    assert AutoModelForCausalLM.from_pretrained(exported).config.n_layer == 2
    head_model = AutoModelForCausalLMWithValueHead.from_pretrained(str(model))
    assert head_model.value_head is not None and head_model.lm.config.n_layer == 2


TRLX_STYLE_YAML = """
train:
  seq_length: 64
  epochs: 100
  total_steps: 1000
  batch_size: 100              # does not divide num_rollouts, as in trlX's randomwalks
  checkpoint_interval: 10000
  eval_interval: 128
  pipeline: "PromptPipeline"
  trainer: "AcceleratePPOTrainer"
  project_name: "trlx-style"
  tags: ["a", "b"]
model:
  model_path: "gpt2"
  model_arch_type: "causal"
  num_layers_unfrozen: 2
tokenizer:
  tokenizer_path: "gpt2"
  truncation_side: "right"
optimizer:
  name: "adamw"
  kwargs: {lr: 1.412e-4, betas: [0.9, 0.95], eps: 1.0e-8, weight_decay: 1.0e-6}
scheduler:
  name: "cosine_annealing"
  kwargs: {T_max: 10000, eta_min: 1.412e-4}
method:
  name: "ppoconfig"
  num_rollouts: 128
  chunk_size: 128
  ppo_epochs: 4
  init_kl_coef: 0.2
  target: 6
  horizon: 10000
  gamma: 0.99
  lam: 0.95
  cliprange: 0.2
  cliprange_value: 0.2
  vf_coef: 1.0
  scale_reward: False
  cliprange_reward: 10
  ref_mean: null
  ref_std: null
  gen_kwargs: {max_length: 48, min_length: 48, top_k: 0.0, top_p: 1.0, do_sample: True}
"""


def test_trlx_style_yaml_loads_and_round_trips(tmp_path):
    path = tmp_path / "trlx_style.yml"
    path.write_text(TRLX_STYLE_YAML)
    with pytest.warns(UserWarning, match=r"gen_kwargs\.max_length=48 counts the prompt too in trlX; read as max_new"):
        config = TRLConfig.load_yaml(path)
    gen = config.method.gen_kwargs
    assert (gen["max_new_tokens"], gen["min_new_tokens"], gen["top_k"]) == (48, 48, 0) and "max_length" not in gen
    assert config.method.name == "ppo" and config.method.scale_reward is None and config.train.tags == ["a", "b"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the converted config is plain trlx: it reloads without warnings
        assert TRLConfig.from_dict(config.to_dict()) == config
    # With both spellings, max_new_tokens wins (as in Hugging Face generate) and max_length is dropped.
    with pytest.warns(UserWarning, match="max_new_tokens=40 is also set and takes precedence"):
        both = TRLConfig.update(default_ppo_config().to_dict(), {"method": {"gen_kwargs": {"max_length": 48}}})
    assert both.method.gen_kwargs["max_new_tokens"] == 40 and "max_length" not in both.method.gen_kwargs


def test_max_new_tokens_equal_to_seq_length_runs_with_a_warning(tmp_path):
    """trlX's grounded_program_synthesis config sets both to 256; trlX then cuts every prompt to nothing. Here
    the model's position limit bounds prompts instead, with a warning naming it."""
    model = save_tiny_gpt2(tmp_path / "model")  # 128 positions
    config = default_ppo_config().evolve(
        **{
            "train.seq_length": 6,
            "train.batch_size": 8,
            "train.total_steps": 1,
            "train.checkpoint_dir": str(tmp_path / "run"),
            "train.progress_bar": False,
            "method.num_rollouts": 8,
            "method.chunk_size": 8,
            "method.gen_kwargs.max_new_tokens": 6,
        }
    )
    long_prompt = " ".join(TINY_PROMPTS[:4])  # more than seq_length tokens, well within 128 - 6
    with pytest.warns(
        UserWarning,
        match=r"train\.seq_length \(6\) leaves no room for a prompt next to .*max_new_tok"
        r"ens \(6\) \(trlX would cut every prompt to nothing\); prompts are bounded by the model's 128 "
        r"positions instead: up to 122 tokens",
    ):
        trainer = trlx.train(
            str(model), reward_fn=lambda samples, **kw: [0.0] * len(samples), prompts=[long_prompt], config=config
        )
    rollout = trainer.collect_rollout()[0]
    assert rollout.query_ids.shape[1] > 6  # the whole prompt went in


def test_model_path_as_a_pretrained_config_builds_saves_and_resumes(tmp_path):
    """trlX's randomwalks builds its model from a config: `trlx.train(model_path=GPT2Config(...))`."""
    from conftest import build_word_tokenizer
    from transformers import AutoModelForCausalLM, GPT2Config

    tokenizer = build_word_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    model_config = GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=64, vocab_size=len(tokenizer))
    overrides = {
        "train.batch_size": 8,
        "train.seq_length": 24,
        "train.total_steps": 2,
        "train.checkpoint_interval": 1,
        "train.checkpoint_dir": str(tmp_path / "run"),
        "train.progress_bar": False,
        "tokenizer.tokenizer_path": str(tmp_path / "tokenizer"),
        "method.num_rollouts": 8,
        "method.chunk_size": 8,
        "method.gen_kwargs.max_new_tokens": 4,
    }
    config = default_ppo_config().evolve(**overrides)
    reward = {"reward_fn": lambda samples, **kw: [float(s.count("good")) for s in samples], "prompts": TINY_PROMPTS}
    trainer = trlx.train(model_config, config=config, **reward)
    initial = tmp_path / "run" / "initial_model"
    assert trainer.config.model.model_path == str(initial)
    assert AutoModelForCausalLM.from_pretrained(initial).config.n_embd == 16  # the run's base, loadable

    # Resuming names the same config; the saved initial model (and so the reference) is reused, not rebuilt.
    before = (initial / "model.safetensors").read_bytes()
    longer = config.evolve(**{"train.total_steps": 3, "train.resume_from_checkpoint": "latest"})
    resumed = trlx.train(model_config, config=longer, **reward)
    assert resumed.step == 3 and (initial / "model.safetensors").read_bytes() == before

    with pytest.raises(ValueError, match=r"model_path is a GPT2Config .*: set tokenizer\.tokenizer_path"):
        trlx.make_trainer(model_config, config=default_ppo_config(), **reward)
