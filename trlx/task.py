"""Resolve the `task` config section: functions by import path and prompts from files."""

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


def load_prompts(source: str, what: str = "prompts") -> list[str | dict[str, Any]]:
    """Prompts from a .txt (one per non-empty line), .jsonl (strings or objects with `prompt`), .csv (a
    `prompt` column; other columns become metadata) file, or a `module:attr` list or zero-argument callable."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
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
    """Offline samples from a .txt (one per non-empty line) or .jsonl file (one JSON value per line), or a
    `module:attr` list or zero-argument callable. A `trlx label` comparisons file is returned as its path, which
    the DPO data reader expands into pairs."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return [line for _, line in text_lines(existing_file(path, what))]
    if suffix == ".jsonl":
        out = [value for _, value in json_lines(existing_file(path, what))]
        if out and all(isinstance(r, dict) and "candidates" in r for r in out):
            return str(path)  # comparisons written by `trlx label`
        return out
    return load_list(source, what)
