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


def load_prompts(source: str, what: str = "prompts") -> list[str | dict[str, Any]]:
    """Prompts from a .txt (one per non-empty line), .jsonl (strings or objects with `prompt`), .csv (a
    `prompt` column; other columns become metadata) file, or a `module:attr` list or zero-argument callable."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".txt", ".jsonl", ".csv"):
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
        if suffix == ".txt":
            return [line.rstrip("\n") for line in path.read_text().splitlines() if line.strip()]
        if suffix == ".jsonl":
            out = []
            for lineno, line in enumerate(path.read_text().splitlines(), start=1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
                    if not isinstance(record, str) and not (isinstance(record, dict) and "prompt" in record):
                        raise ValueError(f'{path}:{lineno}: expected a JSON string or an object with a "prompt" key')
                    out.append(record)
            return out
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and "prompt" not in rows[0]:
            raise ValueError(f"{path}: CSV needs a 'prompt' column, found {list(rows[0])}")
        return rows
    value = load_object(source, what)
    value = value() if callable(value) else value
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} {source!r} must be (or return) a list, got {type(value).__name__}")
    return list(value)


def load_samples(source: str, what: str = "task.samples") -> Any:
    """Offline samples from a .txt (one per non-empty line) or .jsonl file (one JSON value per line), or a
    `module:attr` list or zero-argument callable. A `trlx label` comparisons file is returned as its path, which
    the DPO data reader expands into pairs."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".txt", ".jsonl"):
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}")
        lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)]
        lines = [(n, line) for n, line in lines if line.strip()]
        if suffix == ".txt":
            return [line for _, line in lines]
        out = []
        for lineno, line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({e.msg})") from e
        if out and all(isinstance(r, dict) and "candidates" in r for r in out):
            return str(path)  # comparisons written by `trlx label`
        return out
    value = load_object(source, what)
    value = value() if callable(value) else value
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} {source!r} must be (or return) a list, got {type(value).__name__}")
    return list(value)
