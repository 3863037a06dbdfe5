from trlx.models.policy import PolicyWithValueHead, load_causal_lm, load_tokenizer, make_reference

__all__ = ["PolicyWithValueHead", "load_causal_lm", "load_tokenizer", "make_reference"]
