"""IMDB loader: HTML cleaning, label balance, IMDB-only rows, disjoint prefixes."""

from __future__ import annotations

from trlx.datasets import Review, clean_review, load_imdb


def test_clean_review_strips_tags_and_entities() -> None:
    raw = "Great film.<br /><br />The  cast&amp;crew were <i>superb</i> &quot;really&quot;\n\tgood &#39;n fun"
    assert clean_review(raw) == 'Great film. The cast&crew were superb "really" good \'n fun'


def test_clean_review_keeps_non_tag_angle_brackets() -> None:
    assert clean_review("I give it <3 stars, <=8 for sure<br/>ok") == "I give it <3 stars, <=8 for sure ok"


def test_load_imdb_is_cleaned_balanced_and_imdb_only() -> None:
    reviews = load_imdb()
    # 25,000 IMDB rows minus a few exact duplicates; the 8,530 Rotten Tomatoes rows are excluded.
    assert 24_800 <= len(reviews) <= 25_000
    assert all(isinstance(r, Review) and r.label in (0, 1) for r in reviews)
    assert abs(sum(r.label for r in reviews) - len(reviews) / 2) < 100
    assert not any("<br" in r.text for r in reviews)
    assert len({r.text for r in reviews}) == len(reviews)
    # Rotten Tomatoes rows are lower-cased, tokenised sentences; IMDB reviews are long, cased prose.
    assert sum(len(r.text.split()) for r in reviews) / len(reviews) > 150


def test_limit_gives_both_labels_and_a_stable_prefix() -> None:
    first = load_imdb(10)
    assert [r.label for r in first] == [0, 1] * 5
    assert first == load_imdb(100)[:10]
    assert load_imdb(0) == []
