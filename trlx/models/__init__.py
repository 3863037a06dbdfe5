"""The policy, its reference, and model loading. Names are resolved on first use, so importing a submodule (e.g.
`trlx.models.policy` from `trlx.rollout.scoring`) does not drag in the others and cannot import in a circle."""

from trlx.lazy import lazy_getattr

_EXPORTS = {
    "PolicyWithValueHead": "trlx.models.policy",
    "load_causal_lm": "trlx.models.policy",
    "load_tokenizer": "trlx.models.policy",
    "Reference": "trlx.models.reference",
    "make_reference": "trlx.models.reference",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_getattr(__name__, _EXPORTS)
