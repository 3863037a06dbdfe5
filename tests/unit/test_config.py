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
    "data, message",
    [
        ({"trian": {}}, "unknown config section(s) ['trian']"),
        ({"train": {"sed": 1}}, "unknown field(s) ['sed'] in section 'train'"),
        ({"train": {"seed": "one"}}, "train.seed: must be an integer"),
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
            {"train": {"seq_length": 16}, "method": {"gen_kwargs": {"max_new_tokens": 16}}},
            "smaller than train.seq_length",
        ),
        ({"train": {"batch_size": 3}, "method": {"num_rollouts": 8}}, "train.batch_size: (3) must divide"),
        ({"task": {"stop_sequences": [""]}}, "task.stop_sequences"),
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
