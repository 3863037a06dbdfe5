"""PPO against a learned reward model (Ziegler et al. 2019's loop on tiny models): comparisons -> RM -> PPO."""

from conftest import TINY_PROMPTS, separable_rm_config, tiny_ppo_config

import trlx
from trlx.logging import read_metrics
from trlx.rewards.combine import CombinedReward, RewardComponent
from trlx.rewards.reward_model import RewardModel
from trlx.rewards.train_rm import train_reward_model


def test_ppo_improves_a_trained_reward_model_score(tmp_path, tiny_bert_path, tiny_gpt2_path):
    _, rm_metrics = train_reward_model(separable_rm_config(tmp_path, tiny_bert_path))
    assert rm_metrics["eval_accuracy"] >= 0.9

    # What PPO uses is the saved model, reloaded as any user would.
    reward_model = RewardModel.from_pretrained(tmp_path / "rm")
    reward = CombinedReward(
        [
            RewardComponent("rm", reward_model.as_reward_fn(batch_size=64)),
            RewardComponent("length", lambda samples, outputs, **kw: [len(o.split()) / 8 for o in outputs], 0.0),
        ]
    )
    config = tiny_ppo_config(tmp_path / "ppo", **{"train.total_steps": 96, "train.eval_interval": 96})
    trlx.train(str(tiny_gpt2_path), reward_fn=reward, prompts=TINY_PROMPTS, config=config)

    rows = [r for r in read_metrics(tmp_path / "ppo" / "metrics.jsonl") if "reward/mean" in r]
    assert {"reward/rm", "reward/length"} <= rows[0].keys()
    # The length component has weight 0, so the total is the reward model's score alone.
    assert abs(rows[0]["reward/mean"] - rows[0]["reward/rm"]) < 1e-6
    assert rows[-1]["reward/rm"] > rows[0]["reward/rm"] + 0.3, (rows[0]["reward/rm"], rows[-1]["reward/rm"])
