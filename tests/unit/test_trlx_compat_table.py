"""docs/trlx_compat.md covers every trlX 0.7 config field and behaves as it says."""

import dataclasses
import importlib
import json
import re
import warnings
from pathlib import Path

import pytest

from trlx.config import SECTIONS, ConfigError, TRLConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "trlx_compat.md"
# trlX 0.7.0's config fields (trlx/data/configs.py; PPOConfig in trlx/models/modeling_ppo.py; RFTConfig in
# trlx/trainer/accelerate_rft_trainer.py; SFTConfig has only name and gen_kwargs).
TRLX_FIELDS = {
    "model": "model_path model_arch_type num_layers_unfrozen peft_config model_extra_configs",
    "tokenizer": "tokenizer_path padding_side truncation_side tokenizer_extra_configs",
    "optimizer": "name kwargs",
    "scheduler": "name kwargs",
    "train": "total_steps seq_length epochs batch_size checkpoint_interval eval_interval pipeline trainer "
    "trainer_kwargs project_name run_name entity_name group_name checkpoint_dir rollout_logging_dir save_best "
    "save_optimizer resume_from_checkpoint tracker logging_dir tags seed minibatch_size",
    "method": "name ppo_epochs num_rollouts chunk_size init_kl_coef target horizon gamma lam cliprange "
    "cliprange_value vf_coef scale_reward ref_mean ref_std cliprange_reward gen_kwargs gen_experience_kwargs "
    "num_value_layers_unfrozen n_generations_per_prompt start_percentile end_percentile n_improve_steps "
    "tau cql_scale awac_scale alpha beta steps_for_target_q_sync two_qs",  # ILQLConfig
}
STATUSES = {"supported", "differs", "warns", "refused"}


def table(heading: str) -> list[list[str]]:
    section = DOC.read_text().split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in section.splitlines()]
    return [r for r in rows if r[0].startswith("`")]


def test_every_trlx_field_has_a_row_and_exists_here():
    rows = {r[0].strip("`"): r for r in table("Config fields")}
    expected = {f"{s}.{f}" for s, names in TRLX_FIELDS.items() for f in names.split()}
    assert set(rows) == expected
    for name, row in rows.items():
        section, field = name.split(".")
        assert row[1] in STATUSES, name
        assert field in {f.name for f in dataclasses.fields(SECTIONS[section])}, f"{name} is not a trlx field"


@pytest.mark.parametrize(
    "row", [r for r in table("Config fields") if r[1] in ("warns", "refused", "differs") and r[3]]
)
def test_warns_and_refused_rows_behave_as_written(row):
    section, field = row[0].strip("`").split(".")
    value = json.loads(row[3].strip("`"))
    config = {section: {field: value}}
    if row[1] == "warns":
        with pytest.warns(UserWarning, match=re.escape(f"{section}.{field}=")):
            TRLConfig.from_dict(config)
    else:
        with pytest.raises(ConfigError, match=re.escape(f"{section}.{field}")):
            TRLConfig.from_dict(config)


def test_supported_rows_load_silently_with_trlx_defaults():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TRLConfig.from_dict({"method": {"name": "PPOConfig", "scale_reward": False}, "train": {"tags": ["a"]}})


@pytest.mark.parametrize("row", table("Public names"), ids=lambda r: r[0])
def test_supported_public_names_resolve(row):
    name = row[0].strip("`")
    if name.startswith("trainer.") or row[1] == "refused":
        if name.startswith("trainer."):
            from trlx.trainers.online import OnlineTrainer

            assert hasattr(OnlineTrainer, name.split(".", 1)[1]), name
        return
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return
    raise AssertionError(f"{name} does not resolve")
