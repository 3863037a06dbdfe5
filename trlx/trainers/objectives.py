"""What each offline method adds to the offline loop (`trlx.trainers.offline`): its batches and its loss.

- `SFTObjective`: the negative log-likelihood of the learned tokens (completions, assistant turns).
- `DPOObjective`: the DPO / IPO loss on (prompt, chosen, rejected) pairs against reference log-probs that are
  computed once, up front, so the reference model is not kept during training. With a frozen trunk
  (`model.num_layers_unfrozen` and the hydra reference, which shares it) the trunk's output for every
  sequence is recorded in that same pass and replayed in every update, so training runs only the top blocks.
- `ILQLObjective`: ILQL's loss on samples with one reward each, the target Q heads synced every
  `steps_for_target_q_sync` optimizer steps.
"""

from __future__ import annotations

import contextlib
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
from trlx.models.trunk import FrozenTrunk
from trlx.rollout.scoring import ForwardFn, score_response
from trlx.trainers import common


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
    """Preference pairs: the chosen and the rejected completion of each prompt (row b of both is one pair), the
    reference's summed log-probs of each, (B,), and the frozen trunk's output for each sequence, (B, L, H) in the
    batch's layout (left-padded query, right-padded response), when it is cached."""

    chosen: SequenceBatch
    rejected: SequenceBatch
    ref_chosen: Tensor
    ref_rejected: Tensor
    trunk_chosen: Tensor | None = None
    trunk_rejected: Tensor | None = None

    def __len__(self) -> int:
        return len(self.chosen)

    def _map(self, fn: Any) -> PairBatch:
        return PairBatch(*(None if t is None else fn(t) for t in vars(self).values()))

    def select(self, index: Tensor) -> PairBatch:
        return self._map(lambda t: t.select(index) if isinstance(t, SequenceBatch) else t[index])

    def to(self, device: torch.device | str) -> PairBatch:
        return self._map(lambda t: t.to(device))


@dataclass
class TrunkOutput:
    """One sequence's frozen-trunk output, split at the prompt: (P_i, H) and (R_i, H), without padding."""

    query: Tensor
    response: Tensor


def trunk_rows(trunk: Tensor, batch: SequenceBatch) -> list[TrunkOutput]:
    """Cut a batch's (B, P + R - 1, H) trunk output (scoring does not feed the last response token) into each
    row's unpadded query and response parts; the longest responses' parts lack that last position."""
    width_q = batch.query_ids.shape[1]
    rows = []
    for b in range(len(batch)):
        n_q, n_r = int(batch.query_mask[b].sum()), int(batch.response_mask[b].sum())
        rows.append(TrunkOutput(trunk[b, width_q - n_q : width_q].clone(), trunk[b, width_q : width_q + n_r].clone()))
    return rows


def collate_trunk(rows: Sequence[TrunkOutput], batch: SequenceBatch) -> Tensor:
    """The (B, P + R, H) trunk output in `batch`'s layout, zero at padding (which attention masks out) and at
    positions never fed."""
    width_q, width_r = batch.query_ids.shape[1], batch.response_ids.shape[1]
    out = rows[0].query.new_zeros((len(rows), width_q + width_r, rows[0].query.shape[-1]))
    for b, row in enumerate(rows):
        out[b, width_q - len(row.query) : width_q] = row.query
        out[b, width_q : width_q + len(row.response)] = row.response
    return out


@torch.no_grad()
def summed_logprobs(
    forward: ForwardFn,
    examples: Sequence[TokenizedExample],
    pad_id: int,
    device: Any,
    trunk: FrozenTrunk | None = None,
) -> tuple[Tensor, list[TrunkOutput] | None]:
    """(N,) summed log-probs of each example's learned tokens, in batches of 16 (for the reference, up front), and,
    with `trunk` (shared by the forward's model), each example's recorded trunk output."""
    sums, outputs = [], []
    for start in range(0, len(examples), 16):
        batch = collate(examples[start : start + 16], pad_id).to(device)
        with trunk.capture() if trunk is not None else contextlib.nullcontext() as captured:
            sums.append(sequence_logprobs(forward, batch).sum(-1).float().cpu())
        if captured:
            outputs += trunk_rows(captured[-1].cpu(), batch.to("cpu"))
    return (torch.cat(sums) if sums else torch.zeros(0)), (outputs if trunk is not None else None)


class DPOObjective:
    """Direct preference optimisation (or IPO) on pairs; `reference` is a forward of the frozen reference, and
    `trunk` the frozen trunk it shares with the policy (hydra), whose output is then cached for every update."""

    def __init__(
        self,
        pairs: Sequence[tuple[TokenizedExample, TokenizedExample]],
        pad_id: int,
        method: PPOConfig,
        reference: ForwardFn,
        device: Any,
        trunk: FrozenTrunk | None = None,
    ) -> None:
        self.chosen = [c for c, _ in pairs]
        self.rejected = [r for _, r in pairs]
        self.pad_id = pad_id
        self.method = method
        self.lengths = [max(len(c), len(r)) for c, r in pairs]
        self.trunk = trunk
        self.ref_chosen, self.trunk_chosen = summed_logprobs(reference, self.chosen, pad_id, device, trunk)
        self.ref_rejected, self.trunk_rejected = summed_logprobs(reference, self.rejected, pad_id, device, trunk)

    def batch(self, indices: Sequence[int]) -> PairBatch:
        index = torch.tensor(list(indices), dtype=torch.long)
        chosen = collate([self.chosen[i] for i in indices], self.pad_id)
        rejected = collate([self.rejected[i] for i in indices], self.pad_id)
        trunks: tuple[Tensor | None, Tensor | None] = (None, None)
        if self.trunk_chosen is not None and self.trunk_rejected is not None:
            trunks = (
                collate_trunk([self.trunk_chosen[i] for i in indices], chosen),
                collate_trunk([self.trunk_rejected[i] for i in indices], rejected),
            )
        return PairBatch(chosen, rejected, self.ref_chosen[index], self.ref_rejected[index], *trunks)

    def logprobs(self, policy: Any, batch: SequenceBatch, trunk: Tensor | None) -> Tensor:
        """(B,) the policy's summed log-probs of the learned tokens, replaying the cached trunk if there is one."""
        with self.trunk.replay(trunk) if self.trunk is not None else contextlib.nullcontext():
            return sequence_logprobs(policy, batch).sum(-1)

    def normalizer(self, batch: PairBatch) -> Tensor:
        return torch.tensor(float(len(batch)))  # a mean over pairs

    start_pass = SFTObjective.start_pass
    state_dict = SFTObjective.state_dict
    load_state_dict = SFTObjective.load_state_dict
    end_step = SFTObjective.end_step

    def loss(self, policy: Any, micro: PairBatch, total: Tensor) -> tuple[Tensor, dict[str, float], float]:
        chosen = self.logprobs(policy, micro.chosen, micro.trunk_chosen)
        rejected = self.logprobs(policy, micro.rejected, micro.trunk_rejected)
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
            heads = common.unwrapped_policy(trainer).ilql_heads
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
