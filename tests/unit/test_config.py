import pytest
import yaml

from trlx.config import ConfigError, TRLConfig, config_reference_markdown
from trlx.data.configs import TRLConfig as CompatTRLConfig
from trlx.data.default_configs import default_ppo_config


def test_trlx_import_path_is_the_same_class():
    assert CompatTRLConfig is TRLConfig


def test_yaml_round_trip(tmp_path):
    config = default_ppo_config().evolve(train={"seed": 7}, method={"gamma": 0.99})
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump(config.to_dict()))
    loaded = TRLConfig.load_yaml(path)
    assert loaded == config
    assert loaded.train.seed == 7 and loaded.method.gamma == 0.99


def test_cli_style_overrides_parse_yaml_values():
    config = default_ppo_config().with_overrides(
        ["train.seed=3", "method.target=6", "method.gen_kwargs.max_new_tokens=16", "train.tracker=null"]
    )
    assert config.train.seed == 3
    assert config.method.target == 6.0 and isinstance(config.method.target, float)
    assert config.method.gen_kwargs["max_new_tokens"] == 16
    assert config.method.gen_kwargs["top_k"] == 0  # untouched keys of a dict field survive
    assert config.train.tracker is None


def test_dotted_evolve():
    assert default_ppo_config().evolve(**{"train.batch_size": 16}).train.batch_size == 16


@pytest.mark.parametrize(
    "override",
    [
        {"optimizer": {"kwargs": {"lr": 1e-4}}},
        {"optimizer.kwargs": {"lr": 1e-4}},
        {"optimizer.kwargs.lr": 1e-4},
    ],
    ids=["section_dict", "dotted_field", "dotted_key"],
)
def test_evolve_merges_dict_fields_instead_of_replacing_them(override):
    base = default_ppo_config()
    kwargs = base.evolve(**override).optimizer.kwargs
    assert kwargs == {**base.optimizer.kwargs, "lr": 1e-4}
    assert kwargs["weight_decay"] == 1e-6 and kwargs["betas"] == [0.9, 0.95]  # not torch's defaults


def test_evolve_none_removes_a_key_and_an_empty_dict_empties_the_field():
    base = default_ppo_config()
    gen = base.evolve(method={"gen_kwargs": {"top_k": None, "temperature": 0.7}}).method.gen_kwargs
    assert "top_k" not in gen and gen["temperature"] == 0.7 and gen["top_p"] == base.method.gen_kwargs["top_p"]
    assert "top_p" not in base.evolve(**{"method.gen_kwargs.top_p": None}).method.gen_kwargs
    assert (
        base.evolve(scheduler={"name": "linear", "kwargs": {"total_iters": 5}})
        .evolve(scheduler={"kwargs": {}})
        .scheduler.kwargs
        == {}
    )
    # A new optimizer/scheduler class starts from its own kwargs, not the previous class's.
    assert base.evolve(**{"optimizer.name": "sgd", "optimizer.kwargs": {"lr": 0.1}}).optimizer.kwargs == {"lr": 0.1}
    assert base.evolve(scheduler={"name": "linear"}).scheduler.kwargs == {}
    assert base.evolve(optimizer={"name": "adamw"}).optimizer.kwargs == base.optimizer.kwargs  # same name: kept
    assert base.with_overrides(["optimizer.kwargs={lr: 0.5}"]).optimizer.kwargs == {**base.optimizer.kwargs, "lr": 0.5}
    assert (
        base.train.tracker is None
        and base.evolve(train={"tracker": "tensorboard"}).evolve(**{"train.tracker": None}).train.tracker is None
    )  # a plain field set to None is set, not removed


@pytest.mark.parametrize(
    "data, message",
    [
        ({"trian": {}}, "unknown config section(s) ['trian']"),
        ({"train": {"sed": 1}}, "unknown field(s) ['sed'] in section 'train'"),
        ({"train": {"seed": "one"}}, "train.seed: must be an integer"),
        ({"train": {"gradient_checkpointing": "some"}}, "train.gradient_checkpointing: 'some' matches none of"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be a positive integer"),
        ({"method": {"scale_reward": "std"}}, "method.scale_reward: allowed: ignored, running, ref, None"),
        ({"method": {"kl_estimator": "k4"}}, "method.kl_estimator: allowed: k1, k2, k3"),
        ({"method": {"gen_kwargs": {"max_new_tokens": 8, "top_k": 2.5}}}, "method.gen_kwargs.top_k"),
        ({"optimizer": {"name": "lion"}}, "optimizer.name: allowed: adamw, adam, sgd"),
        ({"scheduler": {"name": "warmup"}}, "scheduler.name: allowed: constant, linear, cosine_annealing"),
        ({"tokenizer": {"padding_side": "right"}}, "tokenizer.padding_side: allowed: 'left'"),
        ({"method": {"gen_kwargs": {"max_new_tokens": 0}}}, "method.gen_kwargs.max_new_tokens"),
        ({"method": {"gen_kwargs": {"max_new_tokens": 8, "temperature": 0}}}, "method.gen_kwargs.temperature"),
        (
            {"train": {"batch_size": 3, "gradient_accumulation_steps": 3}, "method": {"num_rollouts": 8}},
            "train.batch_size: (3) leaves a last minibatch of 2 samples per epoch",
        ),
        ({"task": {"stop_sequences": [""]}}, "task.stop_sequences"),
        ({"method": {"name": "kto"}}, "method.name: allowed: ppo, grpo, rloo, reinforce_pp"),
        ({"method": {"name": "grpo"}}, "method.num_generations: grpo needs at least 2 completions per prompt"),
        ({"method": {"name": "rloo", "num_generations": 1}}, "method.num_generations: rloo needs at least 2"),
        (
            {"method": {"name": "grpo", "num_generations": 3, "num_rollouts": 64, "chunk_size": 63}},
            "method.num_generations: (3) must divide method.num_rollouts (64)",
        ),
        (
            {"method": {"name": "grpo", "num_generations": 4, "num_rollouts": 64, "chunk_size": 6}},
            "method.num_generations: (4) must divide method.chunk_size (6)",
        ),
        ({"method": {"loss_type": "seq_mean"}}, "method.loss_type: allowed: token_mean, sequence_mean, constant"),
        ({"method": {"scale_rewards": "std"}}, "method.scale_rewards: allowed: group, batch, none"),
        ({"method": {"cliprange_high": 0}}, "method.cliprange_high: must be positive"),
        ({"method": {"kl_loss_coef": -1}}, "method.kl_loss_coef: must be >= 0"),
        ({"method": {"dynamic_sampling": True}}, "method.dynamic_sampling: drops groups"),
        ({"method": {"overlong_buffer": 99}}, "method.overlong_buffer: must be between 0 and"),
    ],
)
def test_invalid_configs_name_the_field(data, message):
    with pytest.raises(ConfigError) as err:
        TRLConfig.from_dict(data)
    assert message in str(err.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="must look like section.field=value"):
        default_ppo_config().with_overrides(["seed=3"])
    with pytest.raises(ConfigError, match="unknown field 'train.sed'"):
        default_ppo_config().with_overrides(["train.sed=3"])


def test_load_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("train:\n  epochs: -1\n")
    with pytest.raises(ConfigError, match=r"bad.yml: train.epochs"):
        TRLConfig.load_yaml(path)
    with pytest.raises(FileNotFoundError):
        TRLConfig.load_yaml(tmp_path / "missing.yml")


def test_every_field_is_documented():
    table = config_reference_markdown()
    rows = [line for line in table.splitlines()[2:]]
    assert rows and all(not line.endswith("|  |") for line in rows)
    assert "`method.init_kl_coef`" in table


def test_update_is_trlx_classmethod_with_merge_semantics():
    base = default_ppo_config()
    for start in (base, base.to_dict()):
        config = TRLConfig.update(start, {"train.seed": 5, "optimizer": {"kwargs": {"lr": 2e-4}}})
        assert config.train.seed == 5
        assert config.optimizer.kwargs == {**base.optimizer.kwargs, "lr": 2e-4}
    with pytest.raises(ConfigError, match="unknown field 'train.sed'"):
        TRLConfig.update(base.to_dict(), {"train.sed": 1})


def test_yaml_1_1_number_strings_are_numbers(tmp_path):
    """PyYAML reads `1e-5` (no dot) as a string; as a learning rate it must still be the number."""
    path = tmp_path / "c.yml"
    path.write_text(
        "optimizer: {name: adamw, kwargs: {lr: 1e-5, betas: [9e-1, 0.999], eps: 1e-8}}\n"
        "scheduler: {name: cosine_annealing, kwargs: {T_max: 100, eta_min: 1e-6}}\n"
        "method: {init_kl_coef: 5e-2, gen_kwargs: {max_new_tokens: 8, temperature: 7e-1}}\n"
    )
    assert yaml.safe_load(path.read_text())["optimizer"]["kwargs"]["lr"] == "1e-5"  # what PyYAML gives
    config = TRLConfig.load_yaml(path)
    assert config.optimizer.kwargs == {"lr": 1e-5, "betas": [0.9, 0.999], "eps": 1e-8}
    assert config.scheduler.kwargs == {"T_max": 100, "eta_min": 1e-6}
    assert config.method.init_kl_coef == 0.05 and config.method.gen_kwargs["temperature"] == 0.7
    assert default_ppo_config().with_overrides(["optimizer.kwargs.lr=3e-4"]).optimizer.kwargs["lr"] == 3e-4
    with pytest.raises(ConfigError, match="must be a number, got 'fast'"):
        default_ppo_config().with_overrides(["method.init_kl_coef=fast"])


def test_reward_model_yaml_number_strings_are_numbers(tmp_path):
    from trlx.rewards.train_rm import RewardModelConfig

    path = tmp_path / "rm.yml"
    path.write_text("backbone: x\ncomparisons: c.jsonl\noutput_dir: out\nlr: 5e-5\nweight_decay: 1e-2\n")
    config = RewardModelConfig.from_yaml(path)
    assert config.lr == 5e-5 and config.weight_decay == 0.01


def test_tab_indented_yaml_names_the_line(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("train:\n\tseed: 3\n")
    with pytest.raises(
        ConfigError, match=r"c\.yml: not valid YAML: .*line 2, column 1 \(YAML indents with spaces, not tabs\)"
    ):
        TRLConfig.load_yaml(path)


def test_python_yaml_and_cli_start_from_the_same_defaults(tmp_path):
    empty = tmp_path / "empty.yml"
    empty.write_text("")
    assert default_ppo_config() == TRLConfig() == TRLConfig.from_dict({}) == TRLConfig.load_yaml(empty)


@pytest.mark.parametrize(
    "name, expected",
    [("PPOConfig", "ppo"), ("ppoconfig", "ppo"), ("GRPO", "grpo"), ("reinforce++", "reinforce_pp"), ("RLOO", "rloo")],
)
def test_method_names_in_trlx_and_common_spellings(name, expected):
    method = {"name": name, "num_generations": 2}
    assert TRLConfig.from_dict({"method": method}).method.name == expected


def test_only_ppo_has_a_value_head_and_kl_zero_needs_no_reference():
    from trlx.algorithms import advantages, ppo
    from trlx.config import GROUP_SCALES, LOSS_TYPES, PPOConfig

    assert LOSS_TYPES == ppo.LOSS_TYPES and GROUP_SCALES == advantages.GROUP_SCALES  # restated without torch
    grpo = PPOConfig(name="grpo", num_generations=4, init_kl_coef=0.0)
    assert not grpo.has_value_head and not grpo.uses_reference
    assert PPOConfig().has_value_head and PPOConfig().uses_reference
    assert PPOConfig(name="grpo", num_generations=4, init_kl_coef=0.0, kl_loss_coef=0.04).uses_reference
    assert PPOConfig(init_kl_coef=0.0, target=6.0).uses_reference  # the adaptive controller starts from 0


def test_default_grpo_config_is_critic_free_and_reference_free():
    from trlx.data.default_configs import default_grpo_config

    config = default_grpo_config(4)
    assert config.method.name == "grpo" and config.method.num_generations == 4
    assert not config.method.has_value_head and not config.method.uses_reference
    assert config.method.cliprange_high == 0.28 and config.train == TRLConfig().train
