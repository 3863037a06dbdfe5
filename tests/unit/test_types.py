import torch

from trlx.types import RolloutBatch, right_pad_cat


def _chunk(batch: int, prompt: int, response: int, fill: float, hidden: int = 2) -> RolloutBatch:
    shapes = {
        "query_ids": (batch, prompt),
        "query_mask": (batch, prompt),
        "scores": (batch,),
        "query_trunk": (batch, prompt, hidden),
        "response_trunk": (batch, response, hidden),
    }
    return RolloutBatch(
        **{name: torch.full(shapes.get(name, (batch, response)), fill) for name in RolloutBatch.__dataclass_fields__}
    )


def test_concat_pads_prompts_left_and_responses_right():
    merged = RolloutBatch.concat([_chunk(1, 2, 3, 1.0), _chunk(2, 4, 1, 2.0)], pad_id=9)
    assert merged.query_ids.tolist()[0] == [9, 9, 1, 1]  # the shorter prompt is padded on the left
    assert merged.query_mask.tolist()[0] == [0, 0, 1, 1]
    assert merged.response_ids.tolist()[1] == [2, 9, 9]  # the shorter response on the right, with pad ids
    assert merged.logprobs.tolist()[1] == [2, 0, 0]  # other per-token fields with zeros
    assert merged.scores.tolist() == [1, 2, 2] and len(merged) == 3
    # Trunk outputs (B, L, H) are padded along the sequence, not the hidden dimension.
    assert merged.query_trunk.shape == (3, 4, 2) and merged.query_trunk[0].tolist() == [[0, 0], [0, 0], [1, 1], [1, 1]]
    assert merged.response_trunk.shape == (3, 3, 2) and merged.response_trunk[1, :, 0].tolist() == [2, 0, 0]
    assert merged.trunk.shape == (3, 7, 2)


def test_select_and_right_pad_cat():
    merged = RolloutBatch.concat([_chunk(1, 2, 3, 1.0), _chunk(2, 2, 3, 2.0)], pad_id=0)
    assert merged.select(torch.tensor([2, 0])).scores.tolist() == [2, 1]
    stacked = right_pad_cat([torch.ones(1, 2), torch.ones(2, 3)], width=4)
    assert stacked.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]


def test_trimmed_drops_columns_that_are_padding_in_every_row():
    batch = RolloutBatch.concat([_chunk(1, 2, 3, 1.0), _chunk(2, 4, 1, 2.0)], pad_id=9)
    rows = batch.select(torch.tensor([0]))  # prompt of 2 left-padded to 4, response of 3
    rows.response_mask[0, 2] = 0  # its last response token is padding too
    trimmed = rows.trimmed()
    assert trimmed.query_ids.tolist() == [[1, 1]] and trimmed.query_trunk.shape == (1, 2, 2)
    assert trimmed.response_ids.tolist() == [[1, 1]] and trimmed.response_trunk.shape == (1, 2, 2)
    assert trimmed.scores.tolist() == [1.0]
    assert batch.trimmed().query_ids.shape == batch.query_ids.shape  # nothing to drop when one row is full


def test_fields_left_unset_are_skipped():
    plain = _chunk(2, 2, 2, 1.0)
    plain.query_trunk = plain.response_trunk = None
    assert plain.trunk is None and "query_trunk" not in plain.tensors()
    assert plain.select(torch.tensor([1])).query_trunk is None
