"""Supervised fine-tuning's loss: the negative log-likelihood of the tokens to be learned."""

from __future__ import annotations

from torch import Tensor

from trlx.algorithms.stats import masked_mean


def sft_loss(logprobs: Tensor, loss_mask: Tensor) -> Tensor:
    """Token-mean negative log-likelihood over the learned tokens.

    logprobs: (B, R) float, log p(token_t | tokens before it) of each response token
    loss_mask: (B, R) float 1/0, 1 where the token is learned (a completion, an assistant turn); prompt tokens,
        other turns and padding are 0 and contribute nothing, not even to the count
    returns: () float, -sum(mask * logprobs) / sum(mask)
    """
    return -masked_mean(logprobs, loss_mask)
