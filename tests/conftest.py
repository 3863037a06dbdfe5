"""Shared fixtures: tiny, randomly initialised models and a word-level tokenizer built without the network."""

import math
import os
import re

# Set before transformers/huggingface_hub are imported by any test module: both read these once at import.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and on a shared 2-core machine OpenMP threads spinning against
# other processes made a 32-wide forward pass ~50x slower. One thread keeps the suite fast and its timing steady.
torch.set_num_threads(1)

TINY_WORDS = (
    "the a an this that it is was were be movie film plot acting story scene actor actors music ending "
    "and but or very really so too quite not of to in on with for at by as i you we they he she "
    "good great nice love loved wonderful excellent happy fun best beautiful brilliant enjoyable "
    "bad awful terrible hate hated boring worst sad poor dull horrible ugly waste "
    ". , ! ?"
).split()
SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "bos_token": "[BOS]", "eos_token": "[EOS]"}


def build_word_tokenizer(words=TINY_WORDS, name: str = "tiny-words"):
    """A whitespace/punctuation word-level fast tokenizer over ``words`` plus four special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS.values(), *dict.fromkeys(words)])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    # No decoder on purpose: ids then decode to tokens joined by single spaces, so generated text re-tokenizes
    # to the same words.
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)
    tokenizer.name_or_path = name
    return tokenizer


@pytest.fixture
def tiny_tokenizer():
    return build_word_tokenizer()


def save_tiny_gpt2(path: Path, seed: int = 0) -> Path:
    """Save a 2-layer random GPT-2 (32 wide) with the word-level tokenizer to `path`, in HF format."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_word_tokenizer()
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        n_positions=128,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_gpt2_path(tmp_path: Path) -> Path:
    """A 2-layer random GPT-2 with its tokenizer, saved in HF format."""
    return save_tiny_gpt2(tmp_path / "tiny-gpt2")


@pytest.fixture
def tiny_bert_path(tmp_path: Path) -> Path:
    """A 2-layer random BERT encoder with its tokenizer, saved in HF format."""
    from transformers import BertConfig, BertModel

    tokenizer = build_word_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(
        num_hidden_layers=2,
        num_attention_heads=2,
        hidden_size=32,
        intermediate_size=64,
        max_position_embeddings=128,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    path = tmp_path / "tiny-bert"
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_ppo_config(checkpoint_dir: Path, **overrides):
    """A TRLConfig sized for the tiny GPT-2: 64 rollouts of 8 tokens, 16-sample minibatches, lr 3e-3.

    `overrides` are dotted keys, e.g. tiny_ppo_config(tmp_path, **{"train.total_steps": 8}).
    """
    from trlx.data.default_configs import default_ppo_config

    base = {
        "train.total_steps": 64,
        "train.batch_size": 16,
        "train.seq_length": 32,
        "train.eval_interval": 32,
        "train.checkpoint_interval": 1000,
        "train.checkpoint_dir": str(checkpoint_dir),
        "train.progress_bar": False,
        "model.num_layers_unfrozen": -1,
        "tokenizer.tokenizer_path": None,
        "method.num_rollouts": 64,
        "method.chunk_size": 64,
        "method.init_kl_coef": 0.01,
        "method.gen_kwargs": {"max_new_tokens": 8, "do_sample": True, "top_k": 0, "top_p": 1.0},
        "optimizer.kwargs": {"lr": 3e-3},
        "scheduler.name": "constant",
        "scheduler.kwargs": {},
    }
    return default_ppo_config().evolve(**{**base, **overrides})


def random_gpt2(vocab: int, layers: int):
    """A random GPT-2 in eval mode (no tokenizer), seeded, for module-level tests."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=layers, n_head=2, n_embd=32, n_positions=64, vocab_size=vocab)).eval()


def random_llama(vocab: int, layers: int, tie_word_embeddings: bool = False):
    """A random Llama (grouped-query attention) in eval mode, seeded, for module-level tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=vocab,
        max_position_embeddings=64,
        tie_word_embeddings=tie_word_embeddings,
    )
    return LlamaForCausalLM(config).eval()


TINY_PROMPTS = ["the movie was", "this film is", "i think it", "the acting was", "the plot is", "it was very"] * 4


def good_word_reward(samples, prompts, outputs, **kwargs):
    """An easy reward for the tiny model: the fraction of generated words that are "good"."""
    return [o.split().count("good") / 8 for o in outputs]


POSITIVE = "good great nice love wonderful excellent happy fun best brilliant".split()
NEGATIVE = "bad awful terrible hate boring worst sad poor dull horrible".split()
OPENINGS = ["the movie was", "i thought the film was", "this story is", "the acting was really"]
FILLERS = ["", " and the music", " but the ending", " with the actors"]
REFERENCE = [f"{o} {w}{f}" for o in OPENINGS for w in POSITIVE[:3] + NEGATIVE[:3] for f in FILLERS[:2]]


def write_separable_comparisons(path, n, seed=0, with_ties=False):
    """Synthetic labeller: a continuation with a positive word always beats one with a negative word."""
    import random

    from trlx.feedback.store import Comparison, append_comparison

    rng = random.Random(seed)
    for i in range(n):
        good = f" {rng.choice(POSITIVE)}{rng.choice(FILLERS)}"
        bad = f" {rng.choice(NEGATIVE)}{rng.choice(FILLERS)}"
        flip = rng.random() < 0.5
        candidates = [bad, good] if flip else [good, bad]
        append_comparison(path, Comparison(prompt=rng.choice(OPENINGS), candidates=candidates, choice=int(flip)))
        if with_ties and i % 8 == 0:
            append_comparison(path, Comparison(prompt="the plot", candidates=[good, bad], choice=None, tie=True))


def separable_rm_config(tmp_path: Path, backbone: Path, with_ties: bool = False, **overrides):
    """64 separable comparisons written to tmp_path and a RewardModelConfig that learns them in seconds."""
    from trlx.rewards.train_rm import RewardModelConfig

    comparisons = tmp_path / "prefs.jsonl"
    write_separable_comparisons(comparisons, 64, with_ties=with_ties)
    settings = {"lr": 3e-3, "epochs": 4, "batch_size": 16, "eval_fraction": 0.25, **overrides}
    return RewardModelConfig(
        backbone=str(backbone), comparisons=str(comparisons), output_dir=str(tmp_path / "rm"), **settings
    )


def readme_train_commands() -> list[list[str]]:
    """The `trlx train ...` / `python -m trlx train ...` lines of the README's bash blocks, comments cut."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        for line in block.splitlines():
            words = line.split("#")[0].split()
            if words[:2] == ["trlx", "train"] or words[:4] == ["python", "-m", "trlx", "train"]:
                commands.append(words)
    return commands


def vocab_sized_allocations(fn, shape, exact: bool = False) -> list[str]:
    """The ops that allocated a tensor of at least (`exact`: exactly) `shape`'s bytes (float32) while `fn()` ran."""
    from torch.profiler import profile

    size = math.prod(shape) * 4
    with profile(profile_memory=True) as prof:
        fn()
    return [
        e.name
        for e in prof.events()
        if e.name.startswith("aten::")
        and (e.self_cpu_memory_usage == size if exact else e.self_cpu_memory_usage >= size)
    ]
