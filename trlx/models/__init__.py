from trlx.models.policy import PolicyWithValueHead, load_causal_lm, load_tokenizer
from trlx.models.reference import Reference, make_reference

__all__ = ["PolicyWithValueHead", "Reference", "load_causal_lm", "load_tokenizer", "make_reference"]
