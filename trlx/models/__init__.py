"""The policy, its reference, and model loading. Names are resolved on first use, so importing a submodule (e.g.
`trlx.models.policy` from `trlx.rollout.scoring`) does not drag in the others and cannot import in a circle."""

from importlib import import_module
from typing import Any

_WHERE = {
    "PolicyWithValueHead": "trlx.models.policy",
    "load_causal_lm": "trlx.models.policy",
    "load_tokenizer": "trlx.models.policy",
    "Reference": "trlx.models.reference",
    "make_reference": "trlx.models.reference",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'trlx.models' has no attribute {name!r}")
