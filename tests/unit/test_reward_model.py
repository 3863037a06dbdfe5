import io
import json
import shutil

import pytest
import torch
from conftest import REFERENCE, separable_rm_config, write_separable_comparisons
from rich.console import Console
from transformers import BartConfig, BertConfig, GPT2Config

from trlx.feedback.cli import train_rm_main
from trlx.rewards.combine import CombinedReward, RewardComponent
from trlx.rewards.protocol import RewardFn
from trlx.rewards.reward_model import RewardModel, infer_pooling, pool
from trlx.rewards.train_rm import RewardModelConfig, train_reward_model


def test_pool_last_and_mean_respect_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)  # row 0: 0..3, row 1: 4..7
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    assert pool(hidden, right, "last").squeeze(-1).tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last").squeeze(-1).tolist() == [3.0, 7.0]
    assert pool(hidden, right, "mean").squeeze(-1).tolist() == [0.5, 5.5]
    assert pool(hidden, left, "mean").squeeze(-1).tolist() == [2.5, 6.0]


def test_infer_pooling_from_config():
    assert infer_pooling(GPT2Config()) == "last"
    assert infer_pooling(BertConfig()) == "mean"
    assert infer_pooling(BertConfig(is_decoder=True)) == "last"
    with pytest.raises(ValueError, match="encoder-decoder"):
        infer_pooling(BartConfig())


def test_trained_reward_model_ranks_held_out_comparisons(tmp_path, tiny_bert_path):
    config = separable_rm_config(tmp_path, tiny_bert_path, with_ties=True, log_every=2)
    untrained = RewardModel.from_backbone(tiny_bert_path)
    model, metrics = train_reward_model(config)
    assert metrics["eval_accuracy"] >= 0.9
    assert metrics["eval_loss"] < 0.3
    assert metrics["num_train_pairs"] + metrics["num_eval_pairs"] == 64  # ties give no pairs
    before = dict(untrained.backbone.named_parameters())
    # BERT's pooler reads the [CLS] position, which mean pooling does not use, so it gets no gradient.
    changed = {n: not torch.equal(before[n], p.cpu()) for n, p in model.backbone.named_parameters()}
    assert all(v for n, v in changed.items() if not n.startswith("pooler.")), changed

    lines = [json.loads(line) for line in (tmp_path / "rm" / "metrics.jsonl").read_text().splitlines()]
    losses = [line["rm/loss"] for line in lines if "rm/loss" in line]
    assert len(losses) >= 4 and losses[-1] < losses[0]
    assert lines[-2]["rm/eval_accuracy"] == pytest.approx(metrics["eval_accuracy"])

    # Normalised on the training samples; the checkpoint loads back with the same scores.
    reloaded = RewardModel.from_pretrained(tmp_path / "rm")
    texts = ["the movie was great", "the movie was awful", "this story is boring but the ending"]
    assert torch.allclose(model.score(texts), reloaded.score(texts), atol=1e-5)
    assert reloaded.score(["i thought the film was wonderful"]) > reloaded.score(["i thought the film was dull"])


def test_normalize_save_reload_and_last_token_pooling(tmp_path, tiny_gpt2_path):
    torch.manual_seed(0)
    model = RewardModel.from_backbone(tiny_gpt2_path)
    assert model.pooling == "last"
    torch.nn.init.normal_(model.head.weight, std=1.0)  # a random head alone gives near-constant scores
    stats = model.normalize(REFERENCE, batch_size=5)
    scores = model.score(REFERENCE, batch_size=7).double()
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert scores.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    assert stats["raw_std"] > 0

    # Scoring a text alone or inside a padded batch gives the same number: pooling reads the last real token.
    alone = torch.cat([model.score([text]) for text in REFERENCE[:6]])
    assert torch.allclose(alone, model.score(REFERENCE[:6]), atol=1e-5)

    model.save_pretrained(tmp_path / "rm")
    saved = json.loads((tmp_path / "rm" / "reward_model.json").read_text())
    assert saved["backbone_kind"] == "causal" and saved["tokenizer"]["vocab_size"] == len(model.tokenizer)
    assert (tmp_path / "rm" / "reward_head.safetensors").exists() and (tmp_path / "rm" / "model.safetensors").exists()
    reloaded = RewardModel.from_pretrained(tmp_path / "rm")
    assert not reloaded.training
    assert torch.allclose(reloaded.score(REFERENCE), model.score(REFERENCE), atol=1e-6)


def test_mismatched_tokenizer_is_refused(tmp_path, tiny_gpt2_path, tiny_tokenizer):
    from conftest import TINY_WORDS, build_word_tokenizer

    model = RewardModel.from_backbone(tiny_gpt2_path)
    model.save_pretrained(tmp_path / "rm")

    smaller = build_word_tokenizer(TINY_WORDS[:-5], name="smaller")
    with pytest.raises(ValueError, match=r"does not match .* vocab size 73 != 78"):
        RewardModel.from_pretrained(tmp_path / "rm", tokenizer=smaller)

    shuffled = build_word_tokenizer(list(reversed(TINY_WORDS)), name="shuffled")
    assert len(shuffled) == len(tiny_tokenizer)
    with pytest.raises(ValueError, match="vocab hash differs"):
        RewardModel.from_pretrained(tmp_path / "rm", tokenizer=shuffled)

    # Someone swaps the tokenizer files in the checkpoint directory: caught too.
    shutil.copytree(tmp_path / "rm", tmp_path / "swapped")
    shuffled.save_pretrained(tmp_path / "swapped")
    with pytest.raises(ValueError, match="Use the tokenizer saved in that directory"):
        RewardModel.from_pretrained(tmp_path / "swapped")

    bigger = build_word_tokenizer([*TINY_WORDS, "extra", "words"], name="bigger")
    with pytest.raises(ValueError, match="80 tokens but the backbone embeds only 78"):
        RewardModel(model.backbone, bigger)


def test_as_reward_fn_scores_in_eval_mode_without_gradients(tiny_gpt2_path):
    model = RewardModel.from_backbone(tiny_gpt2_path)
    model.train()  # dropout active: the reward must still be deterministic
    grad_enabled = []
    model.head.register_forward_hook(lambda *_: grad_enabled.append(torch.is_grad_enabled()))
    reward_fn = model.as_reward_fn(batch_size=2)
    assert isinstance(reward_fn, RewardFn)
    samples = REFERENCE[:5]
    first = reward_fn(samples=samples, prompts=[""] * 5, outputs=samples)
    second = reward_fn(samples, [""] * 5, samples, extra_column=[1, 2, 3, 4, 5])
    assert first == second and len(first) == 5 and all(type(r) is float for r in first)
    assert grad_enabled and not any(grad_enabled) and len(grad_enabled) == 6  # 3 batches per call
    assert model.training  # the caller's mode is restored


def test_combined_reward_weights_and_metrics(tiny_gpt2_path):
    def length(samples, prompts, outputs, **_):
        return [float(len(o.split())) for o in outputs]

    def shouts(samples, prompts, outputs):  # no **kwargs: the extras below must not reach it
        return [float(o.count("!")) for o in outputs]

    combined = CombinedReward([RewardComponent("length", length, 2.0), RewardComponent("shouts", shouts, weight=-0.5)])
    assert isinstance(combined, RewardFn)
    outputs = ["great fun !", "awful", "! ! !"]
    rewards = combined(["p " + o for o in outputs], ["p"] * 3, outputs, tokenizer=None)
    assert rewards == pytest.approx([2 * 3 - 0.5 * 1, 2 * 1 - 0, 2 * 3 - 0.5 * 3])
    assert combined.last_metrics == pytest.approx({"reward/length": 7 / 3, "reward/shouts": 4 / 3})

    model = RewardModel.from_backbone(tiny_gpt2_path)
    with_rm = CombinedReward([RewardComponent("rm", model.as_reward_fn()), RewardComponent("length", length, 0.0)])
    rm_only = model.as_reward_fn()(["a b", "c"], ["", ""], ["a b", "c"])
    assert with_rm(["a b", "c"], ["", ""], ["a b", "c"]) == pytest.approx(rm_only)
    assert set(with_rm.last_metrics) == {"reward/rm", "reward/length"}


def test_combined_reward_rejects_bad_components():
    def constant(samples, prompts, outputs, **_):
        return [1.0]

    with pytest.raises(ValueError, match="unique"):
        CombinedReward([RewardComponent("a", constant), RewardComponent("a", constant)])
    with pytest.raises(ValueError, match="name"):
        RewardComponent("reward/a", constant)
    with pytest.raises(ValueError, match="returned 1 scores for 2 samples"):
        CombinedReward([RewardComponent("a", constant)])(["x", "y"], ["", ""], ["x", "y"])
    per_token = CombinedReward([RewardComponent("dense", lambda samples, prompts, outputs: [[0.1, 0.2]])])
    with pytest.raises(TypeError, match="per-token"):
        per_token(["x"], [""], ["x"])


def test_config_yaml_overrides_and_validation(tmp_path):
    path = tmp_path / "rm.yml"
    path.write_text("backbone: some/model\ncomparisons: prefs.jsonl\nepochs: 2\n", encoding="utf-8")
    config = RewardModelConfig.from_yaml(path, ["lr=1e-4", "normalize_on=null", "epochs=3", "device=cpu"])
    assert (config.lr, config.normalize_on, config.epochs, config.device) == (1e-4, None, 3, "cpu")
    with pytest.raises(ValueError, match="eval_fraction must be in"):
        RewardModelConfig.from_yaml(path, ["eval_fraction=1.5"])
    with pytest.raises(ValueError, match="normalize_on must be 'train' or None"):
        RewardModelConfig.from_yaml(path, ["normalize_on=test"])
    with pytest.raises(ValueError, match="field=value"):
        RewardModelConfig.from_yaml(path, ["learning_rate=1"])
    with pytest.raises(ValueError, match="backbone is required"):
        RewardModelConfig(comparisons="x")
    path.write_text("backbone: m\ncomparisons: c\nlearning_rate: 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown RewardModelConfig field\(s\) \['learning_rate'\]"):
        RewardModelConfig.from_yaml(path)


def test_train_rm_cli(tmp_path, tiny_bert_path):
    comparisons = tmp_path / "prefs.jsonl"
    write_separable_comparisons(comparisons, 16, seed=1)
    config = tmp_path / "rm.yml"
    config.write_text(f"backbone: {tiny_bert_path}\ncomparisons: {comparisons}\nlr: 0.001\n", encoding="utf-8")
    console = Console(file=io.StringIO(), width=120)
    # 16 comparisons, a quarter held out: 4 held-out pairs, too few for an accuracy to mean much.
    with pytest.warns(UserWarning, match=r"only 4 held-out pair\(s\): eval_accuracy is a coarse estimate"):
        assert (
            train_rm_main([str(config), f"output_dir={tmp_path / 'rm'}", "eval_fraction=0.25"], console=console) == 0
        )
    assert "eval_accuracy" in console.file.getvalue()
    assert (tmp_path / "rm" / "reward_model.json").exists()
    assert train_rm_main([str(config), "epochs=0"], console=console) == 2
    assert "epochs must be >= 1" in console.file.getvalue()


def test_train_rm_cli_missing_comparisons_is_one_line(tmp_path):
    config = tmp_path / "rm.yml"
    config.write_text(f"backbone: unused\ncomparisons: {tmp_path / 'prefs.jsonl'}\n", encoding="utf-8")
    console = Console(file=io.StringIO(), width=400)
    assert train_rm_main([str(config)], console=console) == 2
    (line,) = console.file.getvalue().splitlines()
    assert "prefs.jsonl' does not exist: write one with `trlx label --out" in line
