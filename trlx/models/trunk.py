"""The frozen trunk, computed once per rollout.

With `model.num_layers_unfrozen = k`, everything that runs before the top k blocks (embeddings and the bottom
blocks) is frozen, so its output for a rollout's tokens never changes: it is the same for the policy's scoring,
for the hydra reference (which shares those blocks) and for every PPO epoch. The decode loop computes it anyway,
one position per step, so `FrozenTrunk` records it there (`capture`) and afterwards makes the bottom blocks
return the recorded output instead of running (`replay`). Scoring and updates then run only the top k blocks,
and no activations are kept for the frozen ones.

The bottom blocks stay where they are (parameter names and checkpoints do not change); only their `forward`
is wrapped on the instance. Build the trunk after any deep copy of the model (the frozen-copy reference).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from torch import Tensor, nn

from trlx.models.policy import transformer_blocks


class FrozenTrunk:
    """Records the frozen trunk's output during generation and replays it into later forwards."""

    def __init__(self, lm: nn.Module, num_layers_unfrozen: int) -> None:
        blocks = transformer_blocks(lm)
        if not 0 < num_layers_unfrozen < len(blocks):
            raise ValueError(
                f"a frozen trunk needs 1 to {len(blocks) - 1} trainable top blocks, got {num_layers_unfrozen}"
            )
        self.bottom = list(blocks[: len(blocks) - num_layers_unfrozen])
        self.replays = 0  # forwards that skipped the trunk (for tests and benchmarks)
        self._replay: Tensor | None = None
        self._captured: list[Tensor] | None = None
        self._returns_tuple = False
        for block in self.bottom:
            block.forward = self._stand_in(block)
        self.bottom[-1].register_forward_hook(self._record)

    def _stand_in(self, block: nn.Module) -> Any:
        original = block.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            if self._replay is None:
                return original(*args, **kwargs)
            replay = self._replay
            hidden = args[0] if args else kwargs.get("hidden_states")
            if isinstance(hidden, Tensor) and hidden.shape[:2] != replay.shape[:2]:
                # Scoring does not feed a response's last token: replay the recorded positions that were fed.
                if hidden.shape[0] != replay.shape[0] or hidden.shape[1] > replay.shape[1]:
                    raise ValueError(
                        f"the replayed trunk output {tuple(replay.shape)} does not cover the block's input "
                        f"{tuple(hidden.shape)}: record the trunk for the same tokens"
                    )
                replay = replay[:, : hidden.shape[1]]
            return (replay,) if self._returns_tuple else replay

        return forward

    def _record(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._captured is not None and self._replay is None:
            self._returns_tuple = isinstance(output, tuple)
            self._captured.append((output[0] if self._returns_tuple else output).detach())

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[Tensor]]:
        """Collect the trunk's output of every forward inside the block: (B, L_i, H) tensors, in call order."""
        self._captured = []
        try:
            yield self._captured
        finally:
            self._captured = None

    @contextlib.contextmanager
    def replay(self, output: Tensor | None) -> Iterator[None]:
        """Inside the block, the bottom blocks return `output` (B, L, H), the trunk's output for the tokens the
        next forwards receive (or for more: a forward of the first L' < L of them gets the first L' positions),
        instead of computing it. `None` replays nothing."""
        if output is None:
            yield
            return
        self._replay = output
        self.replays += 1
        try:
            yield
        finally:
            self._replay = None


def frozen_trunk(lm: nn.Module, num_layers_unfrozen: int) -> FrozenTrunk | None:
    """The trunk below the top `num_layers_unfrozen` blocks, or None when there is none (-1 trains every block,
    and so does a count as large as the model; LoRA models train adapters everywhere)."""
    if hasattr(lm, "disable_adapter") or num_layers_unfrozen <= 0:
        return None
    if num_layers_unfrozen >= len(transformer_blocks(lm)):
        return None
    return FrozenTrunk(lm, num_layers_unfrozen)
