"""LoRA policies through peft: add adapters, and save them merged so plain `transformers` can load the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn
from transformers import PreTrainedModel

from trlx.config import ConfigError
from trlx.logging import quiet_transformers

ADAPTER_DIR = "adapter"


def add_lora(lm: PreTrainedModel, peft_config: dict[str, Any]) -> nn.Module:
    """Wrap `lm` in a peft model whose only trainable parameters are LoRA adapters (`model.peft_config`)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:
        raise ImportError("model.peft_config needs peft: pip install 'trlx[peft]'") from e
    kwargs = {k: v for k, v in peft_config.items() if k != "peft_type"}
    kwargs.setdefault("task_type", "CAUSAL_LM")
    if kwargs.get("use_dora"):
        raise ConfigError("model.peft_config.use_dora: DoRA is not supported (merged checkpoints assume plain LoRA)")
    try:
        config = LoraConfig(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model.peft_config: {e}") from e
    try:
        return get_peft_model(lm, config)
    except ValueError as e:  # e.g. target_modules that match nothing in this architecture
        raise ConfigError(f"model.peft_config: {e}") from e


def is_peft_model(lm: nn.Module) -> bool:
    return hasattr(lm, "disable_adapter") and hasattr(lm, "get_base_model")


def merged_state_dict(peft_lm: nn.Module) -> dict[str, Tensor]:
    """The base model's state dict with W + B·A·scale folded into every adapted weight, under the base model's
    own key names. Computed out of place: merging in place and unmerging later would leave rounding drift in
    the frozen weights that the reference (adapters off) relies on."""
    from peft.tuners.lora import LoraLayer

    base = peft_lm.get_base_model()
    adapter = peft_lm.active_adapter
    deltas: dict[str, Tensor] = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            deltas[f"{name}.weight"] = module.get_delta_weight(adapter)
    merged: dict[str, Tensor] = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        key = key.replace(".base_layer.", ".")
        merged[key] = (value + deltas[key].to(value.dtype)).detach() if key in deltas else value.detach()
    return merged


def save_merged(peft_lm: nn.Module, folder: str | Path) -> None:
    """Write the merged model (loadable by AutoModelForCausalLM) to `folder` and the adapters to `folder/adapter`.

    The adapters live in a subfolder: an `adapter_config.json` next to `config.json` would make
    `from_pretrained` load the base model named inside it instead of the merged weights.
    """
    folder = Path(folder)
    base = peft_lm.get_base_model()
    base.save_pretrained(folder, state_dict=merged_state_dict(peft_lm), safe_serialization=True)
    peft_lm.save_pretrained(folder / ADAPTER_DIR, safe_serialization=True)


def save_lm(lm: nn.Module, folder: str | Path, state_dict: dict[str, Tensor] | None = None) -> None:
    """Save a policy LM in Hugging Face format: merged when it carries LoRA adapters; `state_dict` when the
    parameters are sharded (ZeRO-3/FSDP gather them first, see `trlx.distributed.gathered_state_dict`)."""
    with quiet_transformers():
        if is_peft_model(lm):
            if state_dict is not None:
                raise NotImplementedError("saving a LoRA policy whose parameters are sharded (ZeRO-3/FSDP)")
            save_merged(lm, folder)
        else:
            lm.save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
