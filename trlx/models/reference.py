"""The frozen KL reference: log-probs of the initial policy, at three memory costs.

    copy   a frozen deep copy of the whole model                           + one model
    hydra  the bottom layers are frozen and shared with the policy; only   + num_layers_unfrozen blocks, final
           the top `num_layers_unfrozen` blocks (and final norm/head)        norm and head (a fraction)
           are copied, and the shared trunk runs once for both
    lora   the policy itself with its LoRA adapters disabled               + nothing

All three work for any `AutoModelForCausalLM`: the hydra reference is the model's own forward whose bottom
blocks are the policy's (replayed from the rollout's recorded trunk output, `trlx.models.trunk`), so position
ids, attention masks and rotary embeddings are computed by the architecture's code as usual. The trainer only calls `forward_fn()`.
"""

from __future__ import annotations

import copy
import functools
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
from transformers import PreTrainedModel

from trlx.config import ModelConfig
from trlx.models.onednn import onednn_available
from trlx.models.policy import (
    disable_dropout,
    freeze_bottom_layers,
    parameters_below,
    transformer_blocks,
)
from trlx.rollout.scoring import ForwardFn, reference_forward


class Reference(Protocol):
    """What the trainer needs from a reference: a forward giving its logits, and moving to a device."""

    kind: str

    def forward_fn(self) -> ForwardFn: ...

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Reference: ...


def owned_parameters(reference_model: nn.Module, policy_lm: nn.Module) -> int:
    """Number of parameter elements the reference holds that the policy does not (its memory cost)."""
    shared = {id(p) for p in policy_lm.parameters()}
    unique = {id(p): p for p in reference_model.parameters() if id(p) not in shared}
    return sum(p.numel() for p in unique.values())


class FrozenCopy:
    """A frozen deep copy of the initial model (the default; costs one extra model)."""

    kind = "copy"

    def __init__(self, lm: PreTrainedModel) -> None:
        self.model = copy.deepcopy(lm)
        self.model.requires_grad_(False)
        self.model.eval()

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> FrozenCopy:
        self.model.to(device=device, dtype=dtype)
        return self

    def forward_fn(self) -> ForwardFn:
        return reference_forward(self.model)


class HydraReference:
    """Shares the frozen trunk (everything that runs before the top `num_layers_unfrozen` blocks) with the policy.

    Only parameters the policy can train are deep-copied, so the reference costs the top blocks plus the final
    norm and head; its bottom blocks are the policy's own block objects. When the trainer replays the rollout's
    recorded trunk output (`trlx.models.trunk.FrozenTrunk.replay`), those shared blocks return it in the
    reference's forward too, so only the reference's top blocks run. That reuse is exact because the trunk is
    frozen: its output depends only on the tokens. Without a replay the shared blocks simply run.
    """

    kind = "hydra"

    def __init__(self, lm: PreTrainedModel, num_layers_unfrozen: int) -> None:
        blocks = transformer_blocks(lm)
        if not 0 < num_layers_unfrozen < len(blocks):
            raise ValueError(
                f"model.num_layers_unfrozen={num_layers_unfrozen}: the hydra reference needs 1 to {len(blocks) - 1} "
                f"trainable top blocks (the model has {len(blocks)}) so that a frozen trunk is left to share"
            )
        first_top = len(blocks) - num_layers_unfrozen
        trunk = parameters_below(lm, blocks[first_top])
        trunk_ids = {id(p) for p in trunk}
        trainable = [n for n, p in lm.named_parameters() if p.requires_grad and id(p) in trunk_ids]
        if trainable:
            raise ValueError(
                f"the hydra reference shares the layers below the top {num_layers_unfrozen} blocks, so they must be "
                f"frozen (freeze_bottom_layers), but these train: {trainable[:5]}"
            )
        # deepcopy with a memo that maps the trunk to itself: shared objects are reused, the rest copied.
        memo: dict[int, Any] = {id(p): p for p in trunk}
        memo.update({id(b): b for b in blocks[:first_top]})
        self.model = copy.deepcopy(lm, memo)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> HydraReference:
        # Moves the copied top only in effect: the shared trunk is the policy's, already placed by accelerate.
        self.model.to(device=device, dtype=dtype)
        return self

    def forward_fn(self) -> ForwardFn:
        return reference_forward(self.model)


class AdaptersOff:
    """The LoRA policy with its adapters disabled: exactly the base model, at no extra memory."""

    kind = "lora"

    def __init__(self, peft_lm: nn.Module) -> None:
        self.lm = peft_lm

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> AdaptersOff:
        return self  # the policy's own weights, placed by accelerate

    def forward_fn(self) -> ForwardFn:
        lm_forward = reference_forward(self.lm)

        def forward(input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, keep: int) -> tuple[Tensor, None]:
            with self.lm.disable_adapter():
                return lm_forward(input_ids, attention_mask, position_ids, keep)

        return forward


def make_reference(lm: PreTrainedModel, kind: str, num_layers_unfrozen: int = -1) -> Reference:
    """The reference for `model.reference` (`kind`), built from the policy LM before any update.

    For hydra, `lm` must already have its bottom layers frozen; for lora, `lm` is the peft model.
    """
    if kind == "copy":
        return FrozenCopy(lm)
    if kind == "hydra":
        return HydraReference(lm, num_layers_unfrozen)
    if kind == "lora":
        if not hasattr(lm, "disable_adapter"):
            raise TypeError("reference=lora needs a peft model (set model.peft_config)")
        return AdaptersOff(lm)
    raise ValueError(f"model.reference: allowed copy, hydra, lora; got {kind!r}")


# Ops whose outputs selective checkpointing keeps: the matmuls (the projections, most of a block's FLOPs) and the
# attention kernels (quadratic in the sequence). Everything else in a block (norms, rotary, activations, products,
# residual adds, the KV repeat) is recomputed in the backward pass, which costs little time and frees most of the
# activation memory: those element-wise intermediates are most of what a block stores.
_KEPT_BY_SELECTIVE_CHECKPOINTING = frozenset(
    getattr(torch.ops.aten, name).default
    for name in (
        "mm",
        "addmm",
        "bmm",
        "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention",
    )
    if hasattr(torch.ops.aten, name)
) | frozenset(
    [torch.ops.mkldnn._linear_pointwise.default] if onednn_available() else []
)  # `train.onednn_linear`'s matmul


def _keep_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _KEPT_BY_SELECTIVE_CHECKPOINTING else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_kwargs(mode: bool | Literal["selective"]) -> dict[str, Any]:
    """`torch.utils.checkpoint.checkpoint` arguments for `train.gradient_checkpointing` (True or "selective").

    Non-reentrant checkpointing also gives gradients to blocks whose inputs come from frozen layers. "selective"
    adds a policy (torch's selective activation checkpointing) that keeps the matmul and attention outputs, so
    the backward pass recomputes only element-wise ops instead of the whole block.
    """
    kwargs: dict[str, Any] = {"use_reentrant": False}
    if mode == "selective":
        kwargs["context_fn"] = functools.partial(create_selective_checkpoint_contexts, _keep_matmuls)
    return kwargs


def build_policy_and_reference(
    lm: PreTrainedModel,
    model: ModelConfig,
    gradient_checkpointing: bool | Literal["selective"],
    params_sharded: bool,
    with_reference: bool = True,
) -> tuple[nn.Module, Reference | None]:
    """Turn a freshly loaded LM into the trainable policy LM and its reference, per `model.reference`.

    `with_reference=False` (no KL anywhere: `method.uses_reference`) builds none, saving a model copy's memory.

    `params_sharded` (ZeRO-3 / FSDP): the hydra reference shares modules that the engine would shard under
    it, and a LoRA policy is saved merged from unsharded weights, so both need DDP or ZeRO-1/2.
    """
    kind = model.reference_kind
    if params_sharded and (kind == "lora" or (kind == "hydra" and with_reference)):
        raise ValueError(
            f"model.reference={kind} is not supported with sharded parameters (DeepSpeed ZeRO-3, FSDP); use "
            "reference=copy there, or ZeRO-2/DDP for hydra and lora"
        )
    if model.peft_config:
        from trlx.models.lora import add_lora

        lm = add_lora(lm, model.peft_config)
        # The adapters bring their own dropout (peft's lora_dropout), added after load_causal_lm switched the
        # model's off: without this, update-time log-probs would differ from rollout-time ones.
        disable_dropout(lm)
    else:
        freeze_bottom_layers(lm, model.num_layers_unfrozen)
    reference = make_reference(lm, kind, model.num_layers_unfrozen) if with_reference else None
    if gradient_checkpointing:
        kwargs = checkpoint_kwargs(gradient_checkpointing)
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x name
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return lm, reference
