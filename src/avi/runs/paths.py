"""Output directories checked before any work starts, so that a bad ``--out`` fails in one
line at once rather than with a traceback after the data is loaded or a model trained."""

from __future__ import annotations

import os
from pathlib import Path

from avi.errors import RunError

__all__ = ["check_output_dir"]

#: kernel file systems: writable-looking to root, but no place for output
VIRTUAL_ROOTS = (Path("/proc"), Path("/sys"))


def check_output_dir(path: str | Path) -> None:
    """A :class:`RunError` unless ``path`` is a writable directory or can be made one: its
    nearest existing ancestor a writable directory (``os.access`` W_OK | X_OK), none of it
    under /proc or /sys."""
    path = Path(path)
    resolved = path.resolve()  # symbolic links followed: a link into /proc is in /proc
    virtual = next((root for root in VIRTUAL_ROOTS if resolved.is_relative_to(root)), None)
    if virtual is not None:
        raise RunError(f"output directory {path} lies in {virtual}, a kernel file system; choose a directory elsewhere")
    existing = next(p for p in (resolved, *resolved.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == resolved else f"lies under the file {existing}"
        raise RunError(f"output directory {path} {where}; choose a directory path")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is" if existing == resolved else f"would be created in {existing}, which is"
        raise RunError(f"output directory {path} {where} not writable; choose a directory you can write to")
