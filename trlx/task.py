"""Resolve the `task` config section and the data `trlx.train` is given: functions by import path; prompts and
samples from files, lists, or Hugging Face `datasets` (a `datasets.Dataset`, or a .json / .parquet file that
`datasets` loads)."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any


def load_object(spec: str, what: str = "object") -> Any:
    """`package.module:name` or `path/to/file.py:name` -> the named attribute."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r} must look like 'module:name' or 'path/to/file.py:name'")
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{what} {spec!r}: file {path} not found")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules.setdefault(path.stem, module)
        module_spec.loader.exec_module(module)
    else:
        # As under `python -m trlx`: modules in the working directory import (the `trlx` script lacks this).
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise ImportError(f"{what} {spec!r}: cannot import module {module_name!r}: {e}") from e
    if not hasattr(module, attr):
        raise AttributeError(f"{what} {spec!r}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def load_function(spec: str, what: str) -> Any:
    fn = load_object(spec, what)
    if not callable(fn):
        raise TypeError(f"{what} {spec!r} is not callable")
    return fn


def text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of every non-empty line of a UTF-8 text file."""
    lines = enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
    return [(n, line) for n, line in lines if line.strip()]


def json_lines(path: Path) -> list[tuple[int, Any]]:
    """(line number, value) of every non-empty line of a JSONL file; a bad line fails naming it."""
    out = []
    for lineno, line in text_lines(path):
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
    return out


def load_list(source: str, what: str) -> list[Any]:
    """A `module:attr` list, or what a zero-argument callable named so returns."""
    value = load_object(source, what)
    value = value() if callable(value) else value
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} {source!r} must be (or return) a list, got {type(value).__name__}")
    return list(value)


def existing_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    return path


DATASET_SUFFIXES = {".json": "json", ".parquet": "parquet"}  # files read through `datasets.load_dataset`


def is_dataset(value: Any) -> bool:
    """A Hugging Face `datasets.Dataset` (duck-typed, so `datasets` is only imported by those who use it)."""
    return hasattr(value, "column_names") and hasattr(value, "to_list") and not isinstance(value, (list, tuple))


def load_dataset_file(path: Path, what: str) -> Any:
    """A local .json / .parquet file as a `datasets.Dataset` (its one split)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError(
            f"{what} {str(path)!r}: reading {path.suffix} files needs the datasets package: pip install "
            "'trlx[datasets]' (or use .jsonl / .csv, read without it)"
        ) from e
    existing_file(path, what)
    return datasets.load_dataset(DATASET_SUFFIXES[path.suffix.lower()], data_files=str(path), split="train")


def dataset_prompts(dataset: Any, field: str, what: str) -> list[dict[str, Any]]:
    """Rows of a `datasets.Dataset` as prompt dicts: column `field` (task.prompt_field) is the prompt, or a
    `messages` column a chat conversation; the other columns become metadata for reward_fn / metric_fn."""
    columns = list(dataset.column_names)
    if field not in columns and "messages" not in columns:
        raise ValueError(
            f"{what}: the dataset has no {field!r} column (task.prompt_field) and no 'messages' column; its columns "
            f"are {columns}: set task.prompt_field to the prompt column"
        )
    rows = dataset.to_list()
    if field in columns and field != "prompt":  # the chosen column is the prompt (a `prompt` column gives way)
        rows = [{**{k: v for k, v in row.items() if k not in (field, "prompt")}, "prompt": row[field]} for row in rows]
    return rows


def dataset_samples(dataset: Any, field: str, what: str = "samples") -> tuple[list[Any], list[Any] | None]:
    """Rows of a `datasets.Dataset` as offline samples, and its `reward` column (ILQL) if any. The columns say
    the form: `field` + chosen + rejected (dpo), messages (chat), `field` + completion, or text (whole texts)."""
    columns = set(dataset.column_names)
    rows = dataset.to_list()
    rewards = [row.pop("reward") for row in rows] if "reward" in columns else None
    if {field, "chosen", "rejected"} <= columns:
        samples: list[Any] = [
            {"prompt": row[field], "chosen": row["chosen"], "rejected": row["rejected"]} for row in rows
        ]
    elif "messages" in columns:
        samples = [row["messages"] for row in rows]
    elif {field, "completion"} <= columns:
        samples = [[row[field], row["completion"]] for row in rows]
    elif "text" in columns:
        samples = [row["text"] for row in rows]
    else:
        raise ValueError(
            f"{what}: cannot tell the sample form from the dataset's columns {sorted(columns)}: give text, "
            f"{field} + completion, messages, or prompt + chosen + rejected (and reward for ilql)"
        )
    return samples, rewards


def load_prompts(source: str, what: str = "prompts", field: str = "prompt") -> list[str | dict[str, Any]]:
    """Prompts from a .txt (one per non-empty line), .jsonl (strings or objects with `prompt`), .csv (a
    `prompt` column; other columns become metadata) file, a .json / .parquet file through `datasets` (column
    `field`), or a `module:attr` list or zero-argument callable."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in DATASET_SUFFIXES:
        return dataset_prompts(load_dataset_file(path, what), field, what)
    if suffix == ".txt":
        return [line for _, line in text_lines(existing_file(path, what))]
    if suffix == ".jsonl":
        out = []
        for lineno, record in json_lines(existing_file(path, what)):
            if not isinstance(record, str) and not (isinstance(record, dict) and "prompt" in record):
                raise ValueError(f'{path}:{lineno}: expected a JSON string or an object with a "prompt" key')
            out.append(record)
        return out
    if suffix == ".csv":
        with existing_file(path, what).open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "prompt" not in rows[0]:
            raise ValueError(f"{path}: CSV needs a 'prompt' column, found {list(rows[0])}")
        return rows
    return load_list(source, what)


def load_samples(source: str, what: str = "task.samples") -> Any:
    """Offline samples from a .txt (one per non-empty line) or .jsonl file (one JSON value per line), a .json /
    .parquet file through `datasets` (returned as the Dataset), or a `module:attr` list or zero-argument callable.
    A `trlx label` comparisons file is returned as its path, which the DPO data reader expands into pairs."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in DATASET_SUFFIXES:
        return load_dataset_file(path, what)
    if suffix == ".txt":
        return [line for _, line in text_lines(existing_file(path, what))]
    if suffix == ".jsonl":
        out = [value for _, value in json_lines(existing_file(path, what))]
        if out and all(isinstance(r, dict) and "candidates" in r for r in out):
            return str(path)  # comparisons written by `trlx label`
        return out
    return load_list(source, what)
