import torch

from trlx.types import RolloutBatch, right_pad_cat


def _chunk(batch: int, prompt: int, response: int, fill: float) -> RolloutBatch:
    full = {"query_ids": (batch, prompt), "query_mask": (batch, prompt), "scores": (batch,)}
    return RolloutBatch(
        **{name: torch.full(full.get(name, (batch, response)), fill) for name in RolloutBatch.__dataclass_fields__}
    )


def test_concat_pads_prompts_left_and_responses_right():
    merged = RolloutBatch.concat([_chunk(1, 2, 3, 1.0), _chunk(2, 4, 1, 2.0)], pad_id=9)
    assert merged.query_ids.tolist()[0] == [9, 9, 1, 1]  # the shorter prompt is padded on the left
    assert merged.query_mask.tolist()[0] == [0, 0, 1, 1]
    assert merged.response_ids.tolist()[1] == [2, 9, 9]  # the shorter response on the right, with pad ids
    assert merged.logprobs.tolist()[1] == [2, 0, 0]  # other per-token fields with zeros
    assert merged.scores.tolist() == [1, 2, 2] and len(merged) == 3


def test_select_and_right_pad_cat():
    merged = RolloutBatch.concat([_chunk(1, 2, 3, 1.0), _chunk(2, 2, 3, 2.0)], pad_id=0)
    assert merged.select(torch.tensor([2, 0])).scores.tolist() == [2, 1]
    stacked = right_pad_cat([torch.ones(1, 2), torch.ones(2, 3)], width=4)
    assert stacked.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
