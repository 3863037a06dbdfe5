"""The frozen KL reference: log-probs of the initial policy, at three memory costs.

    copy   a frozen deep copy of the whole model                           + one model
    hydra  the bottom layers are frozen and shared with the policy; only   + num_layers_unfrozen blocks, final
           the top `num_layers_unfrozen` blocks (and final norm/head)        norm and head (a fraction)
           are copied, and the shared trunk runs once for both
    lora   the policy itself with its LoRA adapters disabled               + nothing

All three work for any `AutoModelForCausalLM`: the hydra reference is the model's own forward with its
bottom blocks swapped for stand-ins, so position ids, attention masks and rotary embeddings are computed by
the architecture's code as usual. The trainer only calls `forward_fn()`.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from trlx.config import ModelConfig
from trlx.models.policy import (
    disable_dropout,
    freeze_bottom_layers,
    logits_kwargs,
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


class _SharedBlock(nn.Module):
    """Stands in for a shared bottom block in the reference: returns the policy's cached trunk output when one
    is armed, else runs the (shared, frozen) block itself."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.cached: Any = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.cached is not None:
            return self.cached
        return self.block(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Model loops read block attributes (e.g. `attention_type` for sliding-window layers).
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "block":  # not set yet (e.g. while copying): no recursion
                raise
            return getattr(self.block, name)


class HydraReference:
    """Shares the frozen trunk (everything that runs before the top `num_layers_unfrozen` blocks) with the policy.

    Only parameters the policy can train are deep-copied, so the reference costs the top blocks plus the final
    norm and head. Hooks on the policy record the trunk's output (the input of the first trainable block) of its
    last no-grad forward; when the reference is then called on the same tokens, as `PPOTrainer.score` does, the
    reference's bottom blocks return that output instead of recomputing it. On other inputs the shared blocks run.
    That reuse is exact because the trunk is frozen: its output depends only on the tokens.
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
        self.policy_lm = lm
        ref_blocks = transformer_blocks(self.model)
        self.stand_ins = [_SharedBlock(ref_blocks[i]) for i in range(first_top)]
        for i, stand_in in enumerate(self.stand_ins):
            ref_blocks[i] = stand_in
        self.trunk_reused, self.trunk_recomputed = 0, 0
        self._pending: dict[str, Any] | None = None
        self._cache: dict[str, Any] | None = None
        # Registered after the copy so the hooks are not copied into the reference.
        lm.register_forward_pre_hook(self._start_capture, with_kwargs=True)
        blocks[first_top - 1].register_forward_hook(self._capture_trunk)
        lm.register_forward_hook(self._finish_capture, with_kwargs=True)

    # -- hooks on the policy: remember the trunk output of its latest no-grad forward
    def _start_capture(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._pending = None
        if torch.is_grad_enabled():  # training forwards: keeping their activations would hold the graph
            return
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        self._pending = {
            "input_ids": input_ids,
            "attention_mask": kwargs.get("attention_mask"),
            "position_ids": kwargs.get("position_ids"),
            "output": None,
        }

    def _capture_trunk(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._pending is not None:
            self._pending["output"] = output

    def _finish_capture(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self._pending is not None and self._pending["output"] is not None:
            self._cache = self._pending
        self._pending = None

    # -- the reference
    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> HydraReference:
        # Moves the copied top only in effect: the shared trunk is the policy's, already placed by accelerate.
        self.model.to(device=device, dtype=dtype)
        return self

    def forward_fn(self) -> ForwardFn:
        keep_kwargs = logits_kwargs(self.model, 1)

        def forward(input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, keep: int) -> tuple[Tensor, None]:
            cache, self._cache = self._cache, None
            hit = (
                cache is not None
                and _same(cache["input_ids"], input_ids)
                and _same(cache["attention_mask"], attention_mask)
                and _same(cache["position_ids"], position_ids)
            )
            for stand_in in self.stand_ins:
                stand_in.cached = cache["output"] if hit else None
            try:
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    use_cache=False,
                    **({"logits_to_keep": keep} if keep_kwargs else {}),
                )
            finally:
                for stand_in in self.stand_ins:
                    stand_in.cached = None
            self.trunk_reused += int(hit)
            self.trunk_recomputed += int(not hit)
            return out.logits, None

        return forward


def _same(a: Tensor | None, b: Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and torch.equal(a, b.to(a.device))


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


def build_policy_and_reference(
    lm: PreTrainedModel, model: ModelConfig, gradient_checkpointing: bool, params_sharded: bool
) -> tuple[nn.Module, Reference]:
    """Turn a freshly loaded LM into the trainable policy LM and its reference, per `model.reference`.

    `params_sharded` (ZeRO-3 / FSDP): the hydra reference shares modules that the engine would shard under
    it, and a LoRA policy is saved merged from unsharded weights, so both need DDP or ZeRO-1/2.
    """
    kind = model.reference_kind
    if params_sharded and kind != "copy":
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
    reference = make_reference(lm, kind, model.num_layers_unfrozen)
    if gradient_checkpointing:
        # Non-reentrant checkpointing also gives gradients to blocks whose inputs come from frozen layers.
        kwargs = {"use_reentrant": False}
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers >= 5.x name
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return lm, reference
