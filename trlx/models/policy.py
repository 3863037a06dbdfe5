"""The trainable policy (a causal LM plus a scalar value head) and its frozen reference.

Works with any `AutoModelForCausalLM`: nothing here names an architecture. Transformer blocks are found
as the `nn.ModuleList` whose length equals the config's layer count.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from trlx.logging import quiet_transformers


class PolicyWithValueHead(nn.Module):
    """A causal LM whose last hidden state also feeds a linear value head V(s_t), or a bare LM (`value_head=False`,
    for the critic-free methods: no value parameters, optimizer state or checkpoint file).

    The head is zero-initialised so the first value estimates are 0 and the first value-loss gradients do
    not disturb the pretrained trunk more than the returns warrant.
    """

    def __init__(self, lm: PreTrainedModel, value_head: bool = True) -> None:
        super().__init__()
        self.lm = lm
        self.value_head: nn.Linear | None = None
        if value_head:
            self.value_head = nn.Linear(hidden_size(lm), 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
            self.value_head.to(device=lm.device, dtype=next(lm.parameters()).dtype)
        self.accepts_keep = "logits_to_keep" in forward_parameters(lm)
        contiguous_head_input(lm)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, logits_to_keep: int = 0
    ) -> tuple[Tensor, Tensor | None]:
        """input_ids, attention_mask, position_ids: (B, L). Returns logits (B, K, V) and values (B, K) for the
        last K = logits_to_keep positions (all L when 0, or when the model has no `logits_to_keep`); values are
        None without a value head.

        The value head reads the LM head's input (`forward_with_head_input`), so neither the full-length logits
        nor every layer's hidden states (`output_hidden_states`) are materialised.
        """
        if self.value_head is None:
            keep = {"logits_to_keep": logits_to_keep} if self.accepts_keep and logits_to_keep else {}
            out = self.lm(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **keep
            )
            return out.logits, None
        out, hidden = forward_with_head_input(
            self.lm, self.accepts_keep, input_ids, attention_mask, position_ids, logits_to_keep
        )
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values

    @property
    def sampling_lm(self) -> nn.Module:
        """The model the sampler decodes with: the LM itself (ILQL's policy shifts its logits instead)."""
        return self.lm


def forward_with_head_input(
    lm: nn.Module,
    accepts_keep: bool,
    input_ids: Tensor,
    attention_mask: Tensor,
    position_ids: Tensor,
    logits_to_keep: int = 0,
    **kwargs: Any,
) -> tuple[Any, Tensor]:
    """The LM's output (logits (B, K, V) for its last K = logits_to_keep positions, and its KV cache when asked)
    and the hidden states its LM head read there (B, K, H), caught by a hook on the head, so neither full-length logits nor every layer's hidden states
    are kept. `kwargs` go to the LM (a KV cache when decoding; `use_cache` defaults to False)."""
    keep = {"logits_to_keep": logits_to_keep} if accepts_keep and logits_to_keep else {}
    with head_inputs(lm) as captured:
        out = lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{"use_cache": False, **kwargs},
            **keep,
        )
    return out, captured[-1][:, -out.logits.shape[1] :]


@contextlib.contextmanager
def head_inputs(lm: nn.Module) -> Iterator[list[Tensor]]:
    """Inside, every input (B, K, H) the LM head reads is appended to the yielded list (a forward pre-hook)."""
    captured: list[Tensor] = []
    handle = lm.get_output_embeddings().register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        yield captured
    finally:
        handle.remove()


def _contiguous_input(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.contiguous() if isinstance(a, Tensor) else a for a in args)


def contiguous_head_input(lm: nn.Module) -> None:
    """Give the LM head a contiguous input. With `logits_to_keep`, transformers feeds it a slice of the hidden
    states; on CPU a linear layer on that strided view ran 2-5x slower (0.53 s instead of 0.10 s per decode step
    of SmolLM2 at batch 64, whose 49k-row head dominates), so the slice is copied first (a few MB)."""
    head = lm.get_output_embeddings()
    if head is not None and not getattr(head, "_trlx_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._trlx_contiguous_input = True


def forward_parameters(lm: nn.Module) -> set[str]:
    """Names the causal LM's forward accepts (a peft wrapper forwards everything to its base model)."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return set(inspect.signature(base.forward).parameters)


def logits_kwargs(lm: nn.Module, keep: int) -> dict[str, Any]:
    """`logits_to_keep=keep` where the model supports it: the LM head then runs only on the last positions."""
    return {"logits_to_keep": keep} if keep and "logits_to_keep" in forward_parameters(lm) else {}


def hidden_size(lm: PreTrainedModel) -> int:
    """Width of the last hidden state, read from the output embedding so any architecture works."""
    head = lm.get_output_embeddings()
    if head is not None and hasattr(head, "weight"):
        return int(head.weight.shape[1])
    return int(lm.config.get_text_config().hidden_size)


def transformer_blocks(lm: PreTrainedModel) -> nn.ModuleList:
    """The model's stack of transformer blocks: the ModuleList as long as the config's layer count."""
    n_layers = lm.config.get_text_config().num_hidden_layers
    for _, module in lm.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(f"cannot find the {n_layers} transformer blocks of {type(lm).__name__}")


def parameters_below(lm: PreTrainedModel, block: nn.Module) -> list[nn.Parameter]:
    """Parameters used before `block` runs: embeddings (token, position, their norms), the blocks beneath it.

    Found by running the model on one token and recording which modules start before `block`, so no
    architecture is named. Parameters held directly by a module that encloses `block` count as below too:
    they cannot be placed, and freezing/sharing them is the safe side.
    """
    started: list[nn.Module] = []
    seen: set[int] = set()

    def record(module: nn.Module, args: tuple) -> None:
        if id(module) not in seen:
            seen.add(id(module))
            started.append(module)

    class _Reached(Exception):
        pass

    def stop(module: nn.Module, args: tuple) -> None:
        raise _Reached

    handles = [m.register_forward_pre_hook(record) for m in lm.modules() if m is not block]
    handles.append(block.register_forward_pre_hook(stop))
    try:
        with torch.no_grad():
            lm(input_ids=torch.zeros((1, 1), dtype=torch.long, device=lm.device), use_cache=False)
    except _Reached:
        pass
    else:
        raise ValueError(f"{type(lm).__name__}: the forward pass never reached the given transformer block")
    finally:
        for handle in handles:
            handle.remove()
    below: dict[int, nn.Parameter] = {}
    for module in started:
        for p in module.parameters(recurse=False):
            below[id(p)] = p
    return list(below.values())


def freeze_bottom_layers(lm: PreTrainedModel, num_layers_unfrozen: int) -> None:
    """Train only the top `num_layers_unfrozen` blocks and what sits above them; -1 leaves all trainable.

    Everything that runs before those blocks is frozen: the bottom blocks and all embeddings (token and
    position; a head tied to the token embedding stays frozen with it), as in trlX. The trunk below the top
    blocks is then the initial model's, which is what lets the hydra reference share it.
    """
    if num_layers_unfrozen == -1:
        return
    blocks = transformer_blocks(lm)
    if num_layers_unfrozen > len(blocks):
        raise ValueError(f"model.num_layers_unfrozen={num_layers_unfrozen} but the model has {len(blocks)} layers")
    lm.get_input_embeddings().requires_grad_(False)
    for p in parameters_below(lm, blocks[len(blocks) - num_layers_unfrozen]):
        p.requires_grad_(False)


def disable_dropout(model: nn.Module) -> None:
    """RL needs the same log-probs at rollout and update time, so dropout is switched off everywhere."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0


def check_model_path(model_path: str, field: str = "model_path", need_config: bool = True) -> None:
    """Fail early and clearly on a local path that does not exist (before any download or compute).

    A tokenizer folder (`field="tokenizer_path"`, `need_config=False`) needs no config.json.
    """
    path = Path(model_path).expanduser()
    if path.exists():
        if need_config and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{field} {model_path!r} is a folder without config.json: not a HF model")
        return
    looks_local = model_path.startswith((".", "/", "~")) or model_path.count("/") > 1 or os.sep == "\\"
    if looks_local:
        raise FileNotFoundError(f"{field} {model_path!r} does not exist")
    check_hub_model(model_path, field)


OFFLINE_HINT = (
    "; point it at a local folder (SmolLM2-135M offline: python -c 'from trlx.models.gguf import smollm2_135m; "
    "print(smollm2_135m())' prints one)"
)


def check_hub_model(name: str, field: str, timeout_s: float = 5.0) -> None:
    """A Hub name must be in the local cache, or the Hub must answer within `timeout_s`: otherwise fail now
    with trlx's message instead of after a minute of download retries and a long traceback."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import RepositoryNotFoundError

    if isinstance(huggingface_hub.try_to_load_from_cache(name, "config.json"), str) or isinstance(
        huggingface_hub.try_to_load_from_cache(name, "tokenizer_config.json"), str
    ):
        return
    if constants.HF_HUB_OFFLINE:
        raise FileNotFoundError(
            f"{field} {name!r} is not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE is set"
            + OFFLINE_HINT
        )
    try:
        huggingface_hub.model_info(name, timeout=timeout_s)
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"{field} {name!r}: no such local folder or Hugging Face Hub model") from None
    except Exception as e:  # no network, a proxy, a timeout: the download would retry for a minute, then fail
        raise FileNotFoundError(
            f"{field} {name!r} is not a local folder and the Hugging Face Hub did not answer within {timeout_s:.0f} s "
            f"({type(e).__name__})" + OFFLINE_HINT
        ) from None


def model_eos_ids(tokenizer: PreTrainedTokenizerBase, lm: nn.Module) -> tuple[int, ...]:
    """End-of-sequence ids: the tokenizer's, then any more the model's generation_config lists (Llama-3's
    <|eot_id|>, a chat model's end-of-turn), so a response ends where the model means it to."""
    from trlx.rollout.options import merge_eos_ids

    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    generation_config = getattr(base, "generation_config", None)
    return merge_eos_ids(tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None))


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


def load_tokenizer(path: str, truncation_side: str = "right") -> PreTrainedTokenizerBase:
    check_model_path(path, "tokenizer path", need_config=False)
    folder = Path(path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{path!r} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): save one there with "
            "tokenizer.save_pretrained(folder), or name another with tokenizer.tokenizer_path"
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = truncation_side
    if tokenizer.pad_token_id is None:
        # Padding is always masked out, so the EOS token is a safe stand-in for a missing pad token.
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {path!r} has neither a pad nor an eos token; set one before training")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_config(model_path: str) -> PretrainedConfig | None:
    """The model's config.json, or None when it cannot be read without the weights'
    loader reporting it (`load_causal_lm` then fails with its own message)."""
    try:
        return AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError):
        return None


def position_limit(model_path: str) -> int | None:
    """How many positions the model's config allows (GPT-2's n_positions, Llama's max_position_embeddings)."""
    config = model_config(model_path)
    for name in ("n_positions", "max_position_embeddings"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


def check_decoder_only(model: str | PretrainedConfig) -> None:
    """Refuse an encoder-decoder model (T5, BART) in one line, before its weights load."""
    config = model if isinstance(model, PretrainedConfig) else model_config(model)
    if config is not None and getattr(config, "is_encoder_decoder", False):
        name = repr(model) if isinstance(model, str) else f"({type(model).__name__})"
        raise ValueError(
            f"model.model_path {name} is an encoder-decoder ({config.model_type}) model; encoder-decoder "
            "policies are not supported yet: trlx trains decoder-only causal LMs (GPT-2, Llama, SmolLM2, ...)"
        )


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, model_path: str, tokenizer_path: str | None) -> None:
    """Refuse a tokenizer that does not belong to the model, before the weights load.

    A tokenizer with more tokens than the model has embedding rows would index past the embedding; one from
    another model (`tokenizer.tokenizer_path` set to a different vocabulary) would train on garbage ids. Models
    often pad their embedding beyond the vocabulary (e.g. to a multiple of 64), so fewer tokens alone is fine.
    """
    config = model_config(model_path)
    if config is None:
        return  # load_causal_lm reports an unloadable model with its own message
    rows = int(config.get_text_config().vocab_size)
    if len(tokenizer) > rows:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has {len(tokenizer)} tokens but model {model_path!r} has only {rows} "
            f"embedding rows, so ids >= {rows} would index past them; use the model's own tokenizer "
            "(tokenizer.tokenizer_path: null)"
        )
    if tokenizer_path is None or Path(tokenizer_path).expanduser() == Path(model_path).expanduser():
        return
    folder = Path(model_path).expanduser()
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return  # the model folder ships no tokenizer of its own (e.g. one built from a config): nothing to compare
    try:
        own = AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError, TypeError):
        return  # the model ships no tokenizer of its own: nothing to compare with
    if own.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"tokenizer.tokenizer_path {tokenizer_path!r} has a different vocabulary from the tokenizer shipped with "
            f"model {model_path!r} ({len(tokenizer)} vs {len(own)} tokens): the model would read other ids than the "
            "ones it was trained on; use tokenizer.tokenizer_path: null (the model's own)"
        )


def load_causal_lm(model_path: str, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Load any AutoModelForCausalLM with every dropout probability in its config set to 0."""
    check_model_path(model_path)
    try:
        config = AutoConfig.from_pretrained(model_path)
    except OSError as e:
        raise FileNotFoundError(
            f"cannot load model {model_path!r}: not a local folder, and the Hugging Face Hub did not provide it "
            f"({type(e).__name__}: {str(e).splitlines()[0]})"
        ) from e
    for cfg in {id(config): config, id(config.get_text_config()): config.get_text_config()}.values():
        for name, value in vars(cfg).items():
            if "dropout" in name and isinstance(value, float):
                setattr(cfg, name, 0.0)
    with quiet_transformers():
        lm = AutoModelForCausalLM.from_pretrained(model_path, config=config, dtype=dtype)
    disable_dropout(lm)
    contiguous_head_input(lm)
    return lm
