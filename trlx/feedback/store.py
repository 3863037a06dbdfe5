"""Human comparisons and their append-only JSONL store.

A comparison is one judgement: a person saw a prompt and ``n`` candidate continuations and picked the best one
(Ziegler et al. 2019 use n = 4 for the sentiment/descriptiveness tasks, n = 2 is the common pairwise case), called
it a tie, or skipped it. Each judgement is one JSON line, written and fsynced the moment it is made, so a crash or a
closed laptop loses at most the judgement being typed.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["Comparison", "append_comparison", "append_json_line", "read_comparisons", "task_key"]


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Comparison:
    """One human judgement over ``len(candidates)`` continuations of ``prompt``.

    Exactly one outcome holds: ``choice`` is the 0-based index of the preferred candidate, or ``tie`` is set
    (no candidate is better), or ``skipped`` is set (the labeller could not judge). Ties and skips carry
    ``choice=None``; they are kept so a resumed session does not ask again, and so labeller agreement can be
    audited, but they contribute no training pairs (see ``trlx.algorithms.preference.pairs_from_choice``).
    """

    prompt: str
    candidates: list[str]
    choice: int | None
    tie: bool = False
    skipped: bool = False
    labeller: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=_utc_now)

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if not isinstance(self.candidates, list | tuple) or not all(isinstance(c, str) for c in self.candidates):
            raise ValueError("candidates must be a list of strings")
        if len(self.candidates) < 2:
            raise ValueError(f"a comparison needs at least 2 candidates, got {len(self.candidates)}")
        if not isinstance(self.created, str):
            raise ValueError(f"created must be an ISO-8601 string, got {self.created!r}")
        if not isinstance(self.meta, dict):
            raise ValueError("meta must be a mapping (a JSON object)")
        if self.tie and self.skipped:
            raise ValueError("a comparison cannot be both a tie and skipped")
        if self.tie or self.skipped:
            if self.choice is not None:
                raise ValueError(f"choice must be None for a tie or a skip, got {self.choice!r}")
            return
        # bool is an int subclass; `true` in a hand-edited file is a mistake, not candidate 1.
        if not isinstance(self.choice, int) or isinstance(self.choice, bool):
            raise ValueError(f"choice must be a candidate index (int) unless tie/skipped, got {self.choice!r}")
        if not 0 <= self.choice < len(self.candidates):
            raise ValueError(
                f"choice {self.choice} refers to a missing candidate: valid indices are 0..{len(self.candidates) - 1}"
            )

    @property
    def key(self) -> tuple[str, tuple[str, ...]]:
        """What identifies the task that was judged (used to resume a session without asking twice)."""
        return task_key(self.prompt, self.candidates)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidates"] = list(self.candidates)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Comparison:
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; allowed: {sorted(known)}")
        missing = [name for name in ("prompt", "candidates", "choice") if name not in data]
        if missing:
            raise ValueError(f"missing field(s) {missing}")
        return cls(**data)


def task_key(prompt: str, candidates: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    return prompt, tuple(candidates)


def append_json_line(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one JSON object as a line and fsync it before returning.

    If the file does not end with a newline, a previous writer died mid-line; we start a fresh line first so the
    torn fragment stays a single malformed line instead of swallowing this record.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def append_comparison(path: str | os.PathLike[str], comparison: Comparison) -> None:
    """Durably append ``comparison`` to the JSONL file at ``path`` (created with its parent folders if needed)."""
    append_json_line(path, comparison.to_dict())


def read_comparisons(path: str | os.PathLike[str], skip_malformed: bool = False) -> list[Comparison]:
    """Read every comparison in ``path``, in file order. Blank lines are ignored.

    A malformed line (bad JSON, wrong fields, a choice pointing at a missing candidate) raises
    ``ValueError("<path>:<lineno>: <reason>")``; with ``skip_malformed=True`` it is reported as a warning with the
    same location and skipped, which is how a line torn by a crash is tolerated on resume.
    """
    comparisons: list[Comparison] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                comparisons.append(Comparison.from_dict(json.loads(line)))
            except (ValueError, TypeError) as err:
                # JSONDecodeError is a ValueError; TypeError covers wrongly typed fields passed to the dataclass.
                message = f"{path}:{lineno}: malformed comparison: {err}"
                if not skip_malformed:
                    raise ValueError(message) from err
                warnings.warn(message + " (skipped)", stacklevel=2)
    return comparisons
