"""What each offline method adds to the offline loop (`trlx.trainers.offline`): its batches and its loss.

- `SFTObjective`: the negative log-likelihood of the learned tokens (completions, assistant turns).
- `DPOObjective`: the DPO / IPO loss on (prompt, chosen, rejected) pairs against reference log-probs that are
  computed once, up front, so the reference model is not kept during training.
- `ILQLObjective`: ILQL's loss on samples with one reward each, the target Q heads synced every
  `steps_for_target_q_sync` optimizer steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from trlx.algorithms.ilql import ilql_loss, sync_target_heads
from trlx.algorithms.preference import dpo_loss
from trlx.algorithms.sft import sft_loss
from trlx.config import PPOConfig
from trlx.data.prompts import position_ids_from_mask
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

    def end_step(self, trainer: Any, step: int) -> None:
        """Nothing after an optimizer step (ilql syncs its target heads here)."""

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
    end_step = SFTObjective.end_step

    def loss(self, policy: Any, micro: PairBatch, total: Tensor) -> tuple[Tensor, dict[str, float], float]:
        chosen = sequence_logprobs(policy, micro.chosen).sum(-1)
        rejected = sequence_logprobs(policy, micro.rejected).sum(-1)
        method = self.method
        out = dpo_loss(
            chosen,
            rejected,
            micro.ref_chosen,
            micro.ref_rejected,
            method.method_beta,
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


@dataclass
class ILQLBatch:
    """Samples (their learned tokens are the actions) and each sample's normalised return, (B,)."""

    sequences: SequenceBatch
    returns: Tensor

    def __len__(self) -> int:
        return len(self.sequences)

    def select(self, index: Tensor) -> ILQLBatch:
        return ILQLBatch(self.sequences.select(index), self.returns[index])

    def to(self, device: torch.device | str) -> ILQLBatch:
        return ILQLBatch(self.sequences.to(device), self.returns.to(device))


def action_positions(loss_mask: Tensor) -> tuple[Tensor, Tensor]:
    """The learned positions of each row, in order and packed to the left: (B, A) long indices into the response
    and their (B, A) float validity mask, A the most actions of a row. Multi-turn samples' prompt turns are thus
    skipped, so the state after an output's last token is followed by the next output's first action state."""
    counts = loss_mask.sum(1).long()
    width = int(counts.max().item()) if len(counts) else 0
    order = torch.sort((loss_mask == 0).to(torch.int8), dim=1, stable=True).indices
    valid = torch.arange(width, device=loss_mask.device)[None, :] < counts[:, None]
    return order[:, :width], valid.float()


class ILQLObjective:
    """Implicit language Q-learning (trlx.algorithms.ilql) on samples whose reward falls on their last action."""

    def __init__(
        self, examples: Sequence[TokenizedExample], returns: Sequence[float], pad_id: int, method: PPOConfig
    ) -> None:
        self.sft = SFTObjective(examples, pad_id)
        self.lengths = self.sft.lengths
        self.returns = torch.tensor(list(returns), dtype=torch.float)
        self.method = method

    def batch(self, indices: Sequence[int]) -> ILQLBatch:
        return ILQLBatch(self.sft.batch(indices), self.returns[torch.tensor(list(indices), dtype=torch.long)])

    def normalizer(self, batch: ILQLBatch) -> Tensor:
        return batch.sequences.loss_mask.sum()  # every term is a mean over the batch's actions

    start_pass = SFTObjective.start_pass
    state_dict = SFTObjective.state_dict
    load_state_dict = SFTObjective.load_state_dict

    def end_step(self, trainer: Any, step: int) -> None:
        """Polyak-average the target Q heads towards the Q heads every steps_for_target_q_sync steps (trlX's)."""
        if step % self.method.steps_for_target_q_sync == 0:
            heads = trainer.accelerator.unwrap_model(trainer.policy).ilql_heads
            sync_target_heads(heads.q_heads, heads.target_q_heads, self.method.alpha)

    def loss(self, policy: Any, micro: ILQLBatch, total: Tensor) -> tuple[Tensor, dict[str, float], float]:
        seq = micro.sequences
        positions, mask = action_positions(seq.loss_mask)
        input_ids = torch.cat([seq.query_ids, seq.response_ids], dim=1)
        attention_mask = torch.cat([seq.query_mask, seq.response_mask], dim=1)
        keep = seq.response_ids.shape[1] + 1  # logit P-1+t predicts response token t
        out = policy(input_ids, attention_mask, position_ids_from_mask(attention_mask), keep, positions)
        actions = seq.response_ids.gather(1, positions)
        last = (mask.sum(1).long() - 1).clamp(min=0)
        rewards = torch.zeros_like(mask).scatter(1, last[:, None], micro.returns[:, None].to(mask.dtype))
        values = torch.cat([out.values, torch.zeros_like(out.values[:, :1])], dim=1)  # V(terminal) = 0
        method = self.method
        result = ilql_loss(
            out.logits,
            out.qs,
            out.target_qs,
            values,
            actions,
            rewards,
            mask,
            method.gamma,
            method.tau,
            method.cql_scale,
            method.awac_scale,
            method.method_beta,
        )
        share = mask.sum() / total
        stats = {
            "loss/q": result.q.item(),
            "loss/v": result.v.item(),
            "loss/cql": result.cql.item(),
            "loss/awac": result.awac.item(),
            "values/advantage_mean": result.advantage.item(),
            "values/v_mean": ((out.values * mask).sum() / mask.sum().clamp(min=1)).item(),
        }
        return result.loss * share, stats, share.item()
