"""Every finished run writes report.html: its images and files exist, and an online run's token view shows the
last rollout's first samples with one KL and one advantage per response token."""

import json
import re

import torch
from conftest import TINY_PROMPTS, good_word_reward, tiny_ppo_config

import trlx
from trlx.report import TOKEN_VIEW_FILE


def test_a_ppo_run_writes_its_report_with_a_token_view(tiny_gpt2_path, tmp_path):
    config = tiny_ppo_config(tmp_path, **{"train.total_steps": 20, "train.eval_interval": 10})
    trainer = trlx.train(str(tiny_gpt2_path), reward_fn=good_word_reward, prompts=TINY_PROMPTS, config=config)
    page = (tmp_path / "report.html").read_text()
    for image in re.findall(r"<img src='([^']+)'", page):
        assert (tmp_path / image).is_file(), image
    assert len(re.findall(r"<img src=", page)) >= 5  # reward, KL, entropy, clip fraction, explained variance, loss
    view = json.loads((tmp_path / TOKEN_VIEW_FILE).read_text())
    assert view["step"] == 16  # the second rollout (16 optimizer steps per rollout of 64)
    assert len(view["samples"]) == 4
    for sample in view["samples"]:
        assert len(sample["tokens"]) == len(sample["kl"]) == len(sample["advantage"]) >= 1
    assert any(k != 0 for s in view["samples"] for k in s["kl"])  # the policy moved away from the reference
    # The advantages are the rollout's own (whitened over all 64 samples, so nonzero).
    assert torch.tensor([a for s in view["samples"] for a in s["advantage"]]).abs().sum() > 0
    assert "Rollout at step 16" in page and "method:\n  name: ppo" in page
    assert trainer.step == 20


def test_an_offline_run_writes_its_report_too(tiny_gpt2_path, tmp_path):
    from trlx.data.default_configs import default_sft_config

    config = default_sft_config().evolve(
        train={"total_steps": 4, "checkpoint_dir": str(tmp_path), "progress_bar": False, "seq_length": 32}
    )
    trlx.train(str(tiny_gpt2_path), samples=[["the movie", " was good"]] * 8, config=config)
    page = (tmp_path / "report.html").read_text()
    assert "report/loss.png" in page and (tmp_path / "report" / "loss.png").is_file()
    assert not (tmp_path / TOKEN_VIEW_FILE).exists() and "No token view" in page
