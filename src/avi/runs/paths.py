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
    under /proc or /sys, no link on the way that points nowhere (a directory cannot be made
    through it), and names the file system takes."""
    path = Path(path)
    try:
        problem = _placement(path) or _making(path.resolve())
    except (OSError, RuntimeError) as err:  # a path too long for the file system; a loop of links (RuntimeError)
        problem = f"cannot be used: {getattr(err, 'strerror', None) or err}; choose another path"
    if problem is not None:
        raise RunError(f"output directory {path} {problem}")


def _placement(path: Path) -> str | None:
    """What puts ``path`` out of reach: a kernel file system, or a link to nothing on its way."""
    resolved = path.resolve()  # symbolic links followed: a link into /proc is in /proc
    virtual = next((root for root in VIRTUAL_ROOTS if resolved.is_relative_to(root)), None)
    if virtual is not None:
        return f"lies in {virtual}, a kernel file system; choose a directory elsewhere"
    dangling = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
    if dangling is not None:
        target = os.readlink(dangling)
        return f"goes through {dangling}, a link to {target}, which does not exist; create it or choose another path"
    return None


def _making(resolved: Path) -> str | None:
    """What stops the directory ``resolved`` (links followed) from being made or written to."""
    existing = next(p for p in (resolved, *resolved.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == resolved else f"lies under the file {existing}"
        return f"{where}; choose a directory path"
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "is" if existing == resolved else f"would be created in {existing}, which is"
        return f"{where} not writable; choose a directory you can write to"
    longest = os.pathconf(existing, "PC_NAME_MAX")
    if any(len(os.fsencode(part)) > longest for part in resolved.relative_to(existing).parts):
        return f"has a name longer than the file system's {longest} bytes; choose a shorter one"
    return None
