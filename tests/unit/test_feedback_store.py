import json

import pytest

from trlx.feedback.store import Comparison, append_comparison, read_comparisons


def _comparisons():
    return [
        Comparison(prompt="The film", candidates=[" was great", " was awful"], choice=0, labeller="ann"),
        Comparison(prompt="Ünïcode ✓", candidates=["a", "b", "c"], choice=2, meta={"source": "test"}),
        Comparison(prompt="p", candidates=["x", "y"], choice=None, tie=True),
        Comparison(prompt="q", candidates=["x", "y"], choice=None, skipped=True),
    ]


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "prefs.jsonl"
    written = _comparisons()
    for c in written:
        append_comparison(path, c)
    # Equality covers every field, the timestamp and the labeller/meta included.
    assert read_comparisons(path) == written
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4


def test_append_starts_a_new_line_after_a_torn_one(tmp_path):
    path = tmp_path / "prefs.jsonl"
    append_comparison(path, _comparisons()[0])
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"prompt": "half wri')
    append_comparison(path, _comparisons()[1])
    with pytest.warns(UserWarning, match=r"prefs\.jsonl:2: "):
        loaded = read_comparisons(path, skip_malformed=True)
    assert [c.prompt for c in loaded] == ["The film", "Ünïcode ✓"]


def test_malformed_line_reported_with_line_number(tmp_path):
    path = tmp_path / "prefs.jsonl"
    append_comparison(path, _comparisons()[0])
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n")  # blank lines are fine
        f.write("not json at all\n")
    append_comparison(path, _comparisons()[1])
    with pytest.raises(ValueError, match=rf"{path}:3: malformed"):
        read_comparisons(path)


def test_skip_malformed_warns_and_keeps_the_rest(tmp_path):
    path = tmp_path / "prefs.jsonl"
    good = _comparisons()[0].to_dict()
    lines = [json.dumps(good), "{broken", json.dumps({**good, "extra": 1}), json.dumps(good)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning) as record:
        loaded = read_comparisons(path, skip_malformed=True)
    assert len(loaded) == 2
    messages = [str(w.message) for w in record]
    assert any(":2: " in m for m in messages) and any(":3: " in m and "extra" in m for m in messages)


@pytest.mark.parametrize("choice", [2, -1])
def test_choice_of_missing_candidate_rejected(tmp_path, choice):
    path = tmp_path / "prefs.jsonl"
    record = {"prompt": "p", "candidates": ["a", "b"], "choice": choice}
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r":1: .*missing candidate"):
        read_comparisons(path)
    with pytest.raises(ValueError, match="missing candidate"):
        Comparison(prompt="p", candidates=["a", "b"], choice=choice)


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "p", "candidates": ["a"], "choice": 0},
        {"prompt": "p", "candidates": ["a", "b"], "choice": True},
        {"prompt": "p", "candidates": ["a", "b"], "choice": 0, "tie": True},
        {"prompt": "p", "candidates": ["a", "b"], "choice": None},
        {"prompt": "p", "candidates": "ab", "choice": 0},
        {"candidates": ["a", "b"], "choice": 0},
    ],
)
def test_invalid_records_rejected(tmp_path, record):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"prefs\.jsonl:1: "):
        read_comparisons(path)
