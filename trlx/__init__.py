"""trlx: reinforcement learning from human feedback (PPO, GRPO, RLOO, REINFORCE++) for Hugging Face causal LMs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trlx.config import TRLConfig

if TYPE_CHECKING:
    from trlx.trlx import make_trainer, train

__all__ = ["TRLConfig", "make_trainer", "train"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # torch and transformers load on first use of train/make_trainer, so `trlx --help` answers at once.
    if name in ("train", "make_trainer"):
        import trlx.trlx as entry

        return getattr(entry, name)
    raise AttributeError(f"module 'trlx' has no attribute {name!r}")
