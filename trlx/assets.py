"""Files shipped inside installed packages (offline models and data), found without importing the package."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def packaged_file(package: str, relative: str, install_hint: str, what: str) -> Path:
    """Path of `relative` inside the installed `package`, or a clear error naming the install command.

    `find_spec` locates the folder without running the package's `__init__`, which for these asset packages
    imports heavy or missing dependencies (pandas, llama_cpp) that trlx does not need.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{what} ships in the `{package}` package, which is not installed: {install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"`{package}` is installed but {path} is missing; reinstall it: {install_hint}")
    return path
