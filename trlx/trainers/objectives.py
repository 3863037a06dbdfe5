"""What each offline method adds to the offline loop (`trlx.trainers.offline`): its batches and its loss.

- `SFTObjective`: the negative log-likelihood of the learned tokens (completions, assistant turns).
- `DPOObjective`: the DPO / IPO loss on (prompt, chosen, rejected) pairs against reference log-probs that are
  computed once, up front, so the reference model is not kept during training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trlx.algorithms.preference import dpo_loss
from trlx.algorithms.sft import sft_loss
from trlx.config import PPOConfig
from trlx.data.samples import SequenceBatch, TokenizedExample, collate
from trlx.rollout.scoring import ForwardFn, score_response


def sequence_logprobs(forward: ForwardFn, batch: SequenceBatch) -> Tensor:
    """(B, R) log-probs of each response token under the model's plain softmax (0 where not learned)."""
    scored = score_response(forward, batch.query_ids, batch.query_mask, batch.response_ids, batch.response_mask)
    return scored.logprobs * batch.loss_mask


class SFTObjective:
    """Supervised fine-tuning: examples are (query, response) with the learned tokens marked."""

    def __init__(self, examples: Sequence[TokenizedExample], pad_id: int) -> None:
        self.examples = list(examples)
        self.pad_id = pad_id
        self.lengths = [len(e) for e in self.examples]

    def batch(self, indices: Sequence[int]) -> SequenceBatch:
        return collate([self.examples[i] for i in indices], self.pad_id)

    def start_pass(self, trainer: Any, epoch: int) -> None:
        """Nothing: the dataset is fixed."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore: the dataset is fixed."""

    def normalizer(self, batch: SequenceBatch) -> Tensor:
        return batch.loss_mask.sum()  # a token mean over the whole batch, whatever the micro-batching

    def loss(self, policy: Any, micro: SequenceBatch, total: Tensor) -> tuple[Tensor, dict[str, float], float]:
        logprobs = sequence_logprobs(policy, micro)
        tokens = micro.loss_mask.sum()
        nll = sft_loss(logprobs, micro.loss_mask)
        return nll * tokens / total, {"sft/nll": nll.item(), "sft/tokens": tokens.item()}, (tokens / total).item()


@dataclass
class PairBatch:
    """Preference pairs: the chosen and the rejected completion of each prompt (row b of both is one pair) and
    the reference's summed log-probs of each, (B,)."""

    chosen: SequenceBatch
    rejected: SequenceBatch
    ref_chosen: Tensor
    ref_rejected: Tensor

    def __len__(self) -> int:
        return len(self.chosen)

    def select(self, index: Tensor) -> PairBatch:
        return PairBatch(
            self.chosen.select(index), self.rejected.select(index), self.ref_chosen[index], self.ref_rejected[index]
        )

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(
            self.chosen.to(device), self.rejected.to(device), self.ref_chosen.to(device), self.ref_rejected.to(device)
        )


@torch.no_grad()
def summed_logprobs(forward: ForwardFn, examples: Sequence[TokenizedExample], pad_id: int, device: Any) -> Tensor:
    """(N,) summed log-probs of each example's learned tokens, in batches of 16 (for the reference, up front)."""
    sums = []
    for start in range(0, len(examples), 16):
        batch = collate(examples[start : start + 16], pad_id).to(device)
        sums.append(sequence_logprobs(forward, batch).sum(-1).float().cpu())
    return torch.cat(sums) if sums else torch.zeros(0)


class DPOObjective:
    """Direct preference optimisation (or IPO) on pairs; `reference` is a forward of the frozen reference."""

    def __init__(
        self,
        pairs: Sequence[tuple[TokenizedExample, TokenizedExample]],
        pad_id: int,
        method: PPOConfig,
        reference: ForwardFn,
        device: Any,
    ) -> None:
        self.chosen = [c for c, _ in pairs]
        self.rejected = [r for _, r in pairs]
        self.pad_id = pad_id
        self.method = method
        self.lengths = [max(len(c), len(r)) for c, r in pairs]
        self.ref_chosen = summed_logprobs(reference, self.chosen, pad_id, device)
        self.ref_rejected = summed_logprobs(reference, self.rejected, pad_id, device)

    def batch(self, indices: Sequence[int]) -> PairBatch:
        index = torch.tensor(list(indices), dtype=torch.long)
        return PairBatch(
            collate([self.chosen[i] for i in indices], self.pad_id),
            collate([self.rejected[i] for i in indices], self.pad_id),
            self.ref_chosen[index],
            self.ref_rejected[index],
        )

    def normalizer(self, batch: PairBatch) -> Tensor:
        return torch.tensor(float(len(batch)))  # a mean over pairs

    start_pass = SFTObjective.start_pass
    state_dict = SFTObjective.state_dict
    load_state_dict = SFTObjective.load_state_dict

    def loss(self, policy: Any, micro: PairBatch, total: Tensor) -> tuple[Tensor, dict[str, float], float]:
        chosen = sequence_logprobs(policy, micro.chosen).sum(-1)
        rejected = sequence_logprobs(policy, micro.rejected).sum(-1)
        method = self.method
        out = dpo_loss(
            chosen,
            rejected,
            micro.ref_chosen,
            micro.ref_rejected,
            method.beta,
            method.label_smoothing,
            method.preference_loss,  # type: ignore[arg-type]
        )
        share = len(micro) / total
        stats = pair_metrics(out.chosen_rewards, out.rejected_rewards)
        stats[f"loss/{method.preference_loss}"] = out.losses.mean().item()
        return out.losses.sum() / total, stats, share.item()


def pair_metrics(chosen_rewards: Tensor, rejected_rewards: Tensor) -> dict[str, float]:
    """The implicit rewards of a batch of pairs: means of chosen, rejected, their margin, and the accuracy."""
    return {
        "rewards/chosen": chosen_rewards.mean().item(),
        "rewards/rejected": rejected_rewards.mean().item(),
        "rewards/margin": (chosen_rewards - rejected_rewards).mean().item(),
        "rewards/accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
    }
