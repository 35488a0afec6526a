"""A user's own classes and functions, named by import path in a config.

``path/to/file.py:Name`` loads the file as a module (its own folder first on ``sys.path``, so
it can import its neighbours); ``package.module:Name`` imports an installed or importable
module. A run directory records the path (a file's as an absolute path) and imports it again
when the run is loaded, so ``avi evaluate``, ``avi gaps``, ``avi report``, resume and torchrun's
other processes rebuild the same objects.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from avi.errors import ConfigError, first_line

__all__ = ["import_object", "is_import_path", "normalise_import_path"]


def is_import_path(name: str) -> bool:
    """Whether ``name`` names an object by import path (``module:Name`` or ``file.py:Name``)."""
    return ":" in name


def normalise_import_path(name: str) -> str:
    """``name`` with a file's path made absolute, so that the run can be loaded from any
    working directory; module paths are left as they are."""
    target, _, attribute = name.rpartition(":")
    if target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attribute}"
    return name


def import_object(name: str) -> Any:
    """The object ``name`` (``file.py:Name`` or ``package.module:Name``), or a one-line
    :class:`ConfigError` naming what is missing."""
    target, _, attribute = name.rpartition(":")
    if not target or not attribute:
        raise ConfigError(f"import path {name!r} must be 'path/to/file.py:Name' or 'package.module:Name'")
    module = _load_file(target) if target.endswith(".py") else _load_module(target)
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"{target} has no attribute {attribute!r} (from import path {name!r})") from None


def _load_file(target: str) -> Any:
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"cannot import {target}: no such file")
    key = f"avi_user_{hashlib.sha256(str(path).encode()).hexdigest()[:16]}_{path.stem}"
    if key in sys.modules:  # one module object per file and process
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {target}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    _execute(lambda: spec.loader.exec_module(module), target, key)
    return module


def _load_module(target: str) -> Any:
    return _execute(lambda: importlib.import_module(target), target)


def _execute(load: Any, target: str, key: str | None = None) -> Any:
    """Run ``load``; an error raised by the user's module becomes one line naming its place."""
    try:
        return load()
    except Exception as err:  # the user's code: any error, reported in one line
        if key is not None:
            sys.modules.pop(key, None)
        raise ConfigError(f"importing {target} failed: {type(err).__name__}: {first_line(err)}") from None
