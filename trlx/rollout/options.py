"""Which sampling options (`method.gen_kwargs`) trlx accepts, and why it refuses the others.

PPO's importance ratio and KL penalty are only right when the log-probs it computes are those of the
distribution that drew the tokens. trlx samples with its own decode loop (`trlx.rollout.generation`) and
scores with the same logits processing (`trlx.algorithms.sampling.sampling_logits`), so every option
accepted here is applied identically in both places. A checkpoint's `generation_config.json` is never
read for sampling: nothing it sets (a repetition penalty, top_p, a temperature) leaks into a rollout; only
its end-of-sequence ids are merged with the tokenizer's.

Options that reshape the distribution in ways trlx does not score are refused before any model loads.
This module imports nothing heavy, so config validation stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

# What each accepted key means; the README's sampling table is generated from it.
SUPPORTED: dict[str, str] = {
    "max_new_tokens": "tokens sampled per response (required)",
    "min_new_tokens": "EOS cannot be drawn before this many tokens; scored with the same ban (policy and reference)",
    "temperature": "logits are divided by it when sampling and when scoring (policy and reference)",
    "top_k": "sample from the k most likely tokens (0: off); the policy's log-probs are scored with the same cut",
    "top_p": "sample from the smallest set holding this much probability (1.0: off); scored with the same cut",
    "do_sample": "must be true: PPO needs sampled tokens and their probabilities",
    "eos_token_id": "end-of-sequence id or ids; default: the tokenizer's merged with the model's generation_config",
    "pad_token_id": "accepted for trlX configs; padding is masked, so the id does not affect training",
    "use_cache": "accepted for trlX configs; the KV cache is always used",
    "num_return_sequences": "must be 1 (set method.num_generations for several completions per prompt)",
    "beta": "ilql only: the sampling policy is log pi + beta * (min target Q - V) (trlX's; default 1, 0: the LM)",
}

_DEPENDS_ON_HISTORY = "makes each token's probability depend on the tokens before it in a way trlx does not score"
_UNSCORED_TRUNCATION = "truncates the distribution in a way trlx does not score; use top_k or top_p"
_NOT_SAMPLING = "is a search strategy, not sampling: PPO needs tokens drawn from the policy"
REFUSED: dict[str, str] = {
    "repetition_penalty": _DEPENDS_ON_HISTORY,
    "encoder_repetition_penalty": _DEPENDS_ON_HISTORY,
    "no_repeat_ngram_size": _DEPENDS_ON_HISTORY,
    "encoder_no_repeat_ngram_size": _DEPENDS_ON_HISTORY,
    "bad_words_ids": _DEPENDS_ON_HISTORY,
    "sequence_bias": _DEPENDS_ON_HISTORY,
    "exponential_decay_length_penalty": _DEPENDS_ON_HISTORY,
    "suppress_tokens": "bans tokens in a way trlx does not score",
    "begin_suppress_tokens": "bans tokens in a way trlx does not score",
    "forced_bos_token_id": "forces tokens the policy did not sample",
    "forced_eos_token_id": "forces tokens the policy did not sample",
    "typical_p": _UNSCORED_TRUNCATION,
    "min_p": _UNSCORED_TRUNCATION,
    "top_h": _UNSCORED_TRUNCATION,
    "epsilon_cutoff": _UNSCORED_TRUNCATION,
    "eta_cutoff": _UNSCORED_TRUNCATION,
    "num_beams": _NOT_SAMPLING,
    "num_beam_groups": _NOT_SAMPLING,
    "diversity_penalty": _NOT_SAMPLING,
    "length_penalty": _NOT_SAMPLING,
    "early_stopping": _NOT_SAMPLING,
    "penalty_alpha": _NOT_SAMPLING,
    "guidance_scale": "mixes in a second distribution that trlx does not score",
    "stop_strings": "use task.stop_sequences (or trlx.train(stop_sequences=...)), which trlx scores correctly",
}


def sampling_options_markdown() -> str:
    """The README's table of sampling options, generated from the tables above so it cannot drift."""
    lines = ["| option | what trlx does |", "| --- | --- |"]
    lines += [f"| `{key}` | {meaning} |" for key, meaning in SUPPORTED.items()]
    refused: dict[str, list[str]] = {}
    for key, reason in REFUSED.items():
        refused.setdefault(reason, []).append(f"`{key}`")
    lines += [f"| {', '.join(keys)} | refused: {reason} |" for reason, keys in refused.items()]
    return "\n".join(lines)


def gen_kwargs_problem(gen_kwargs: dict[str, Any]) -> tuple[str, str] | None:
    """The first (key, message) that makes `gen_kwargs` unusable, or None. Key is relative to gen_kwargs."""
    for key in gen_kwargs:
        if key in REFUSED:
            return key, f"not supported: {key} {REFUSED[key]}; supported options: {', '.join(SUPPORTED)}"
        if key not in SUPPORTED:
            return key, f"unknown sampling option; supported options: {', '.join(SUPPORTED)}"
    checks = (
        ("max_new_tokens", _is_int(gen_kwargs.get("max_new_tokens"), 1), "must be a positive integer"),
        ("min_new_tokens", _is_int(gen_kwargs.get("min_new_tokens", 0), 0), "must be a non-negative integer"),
        (
            "temperature",
            _is_number(gen_kwargs.get("temperature", 1.0)) and gen_kwargs.get("temperature", 1.0) > 0,
            "must be a positive number",
        ),
        ("top_k", _is_int(gen_kwargs.get("top_k", 0), 0), "must be a non-negative integer (0: off)"),
        (
            "top_p",
            _is_number(gen_kwargs.get("top_p", 1.0)) and 0 < gen_kwargs.get("top_p", 1.0) <= 1,
            "must be in (0, 1] (1.0: off)",
        ),
        (
            "do_sample",
            gen_kwargs.get("do_sample", True) is True,
            "must be true: greedy decoding is not a stochastic policy, and PPO needs sampled tokens and their "
            "probabilities",
        ),
        ("use_cache", gen_kwargs.get("use_cache", True) is True, "must be true (the KV cache is always used)"),
        (
            "num_return_sequences",
            gen_kwargs.get("num_return_sequences", 1) == 1,
            "must be 1: set method.num_generations for several completions per prompt (a group)",
        ),
        (
            "beta",
            _is_number(gen_kwargs.get("beta", 1.0)) and gen_kwargs.get("beta", 1.0) >= 0,
            "must be a number >= 0",
        ),
        ("eos_token_id", _is_ids(gen_kwargs.get("eos_token_id", [])), "must be a token id or a list of token ids"),
        (
            "pad_token_id",
            gen_kwargs.get("pad_token_id") is None or _is_int(gen_kwargs.get("pad_token_id"), 0),
            "must be a token id",
        ),
    )
    for key, ok, message in checks:
        if not ok:
            return key, f"{message}, got {gen_kwargs.get(key)!r}"
    if gen_kwargs.get("min_new_tokens", 0) > gen_kwargs["max_new_tokens"]:
        return "min_new_tokens", f"({gen_kwargs['min_new_tokens']}) must not exceed max_new_tokens"
    return None


def _is_int(value: Any, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_ids(value: Any) -> bool:
    values = value if isinstance(value, (list, tuple)) else [value]
    return all(_is_int(v, 0) for v in values)


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]


def merge_eos_ids(*sources: Any) -> tuple[int, ...]:
    """End-of-sequence ids from several sources (ints, lists or None), in first-seen order without repeats."""
    return tuple(dict.fromkeys(i for source in sources for i in _ids(source)))


@dataclass(frozen=True)
class SamplingParams:
    """The distribution the policy samples from, applied identically when its log-probs are scored.

    max_new_tokens: response length limit. min_new_tokens: EOS ids are banned at response positions below it.
    temperature, top_k (0: off), top_p (1.0: off): applied in that order, as in Hugging Face `generate`.
    eos_token_ids: a response ends after the first of these. pad_token_id: written after it (the tokenizer's).
    """

    max_new_tokens: int
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0

    @classmethod
    def from_gen_kwargs(
        cls, gen_kwargs: dict[str, Any], default_eos_ids: Iterable[int], default_pad_id: int
    ) -> SamplingParams:
        """From `method.gen_kwargs`; an `eos_token_id` there replaces the default EOS ids."""
        problem = gen_kwargs_problem(gen_kwargs)
        if problem is not None:
            raise ValueError(f"method.gen_kwargs.{problem[0]}: {problem[1]}")
        eos = gen_kwargs.get("eos_token_id")
        return cls(
            max_new_tokens=int(gen_kwargs["max_new_tokens"]),
            min_new_tokens=int(gen_kwargs.get("min_new_tokens", 0)),
            temperature=float(gen_kwargs.get("temperature", 1.0)),
            top_k=int(gen_kwargs.get("top_k", 0)),
            top_p=float(gen_kwargs.get("top_p", 1.0)),
            eos_token_ids=merge_eos_ids(eos) if eos is not None else tuple(default_eos_ids),
            pad_token_id=int(default_pad_id),
        )

    @property
    def truncates(self) -> bool:
        return self.top_k > 0 or self.top_p < 1.0

    def for_reference(self) -> SamplingParams:
        """How the reference scores the same tokens: same temperature and EOS ban, no top-k/top-p cut.

        Truncating the reference by its own top-k/top-p would give tokens outside its set probability 0 and the
        KL penalty an infinite value as soon as the policy moves; so with truncation, the KL at step 0 is
        -log(probability mass kept by the cut) per token instead of 0.
        """
        return replace(self, top_k=0, top_p=1.0)
