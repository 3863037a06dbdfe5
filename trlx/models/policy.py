"""The trainable policy (a causal LM plus a scalar value head) and its frozen reference.

Works with any `AutoModelForCausalLM`: nothing here names an architecture. Transformer blocks are found
as the `nn.ModuleList` whose length equals the config's layer count.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


class PolicyWithValueHead(nn.Module):
    """A causal LM whose last hidden state also feeds a linear value head V(s_t).

    The head is zero-initialised so the first value estimates are 0 and the first value-loss gradients do
    not disturb the pretrained trunk more than the returns warrant.
    """

    def __init__(self, lm: PreTrainedModel) -> None:
        super().__init__()
        self.lm = lm
        self.value_head = nn.Linear(hidden_size(lm), 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)
        self.value_head.to(device=lm.device, dtype=next(lm.parameters()).dtype)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """input_ids, attention_mask, position_ids: (B, L). Returns logits (B, L, V) and values (B, L)."""
        out = self.lm(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            use_cache=False,
        )
        hidden = out.hidden_states[-1]
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values


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


def check_model_path(model_path: str) -> None:
    """Fail early and clearly on a local path that does not exist (before any download or compute)."""
    path = Path(model_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"model_path {model_path!r} is a folder without config.json: not a HF model")
        return
    looks_local = model_path.startswith((".", "/", "~")) or model_path.count("/") > 1 or os.sep == "\\"
    if looks_local:
        raise FileNotFoundError(f"model_path {model_path!r} does not exist")


def load_tokenizer(path: str, truncation_side: str = "right") -> PreTrainedTokenizerBase:
    check_model_path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = truncation_side
    if tokenizer.pad_token_id is None:
        # Padding is always masked out, so the EOS token is a safe stand-in for a missing pad token.
        if tokenizer.eos_token_id is None:
            raise ValueError(f"tokenizer {path!r} has neither a pad nor an eos token; set one before training")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


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
    lm = AutoModelForCausalLM.from_pretrained(model_path, config=config, dtype=dtype)
    disable_dropout(lm)
    return lm
