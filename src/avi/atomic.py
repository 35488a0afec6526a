"""Atomic file writes, so an interrupted program never leaves a half-written file.

Used by run directories (``avi.runs``) and by ``avi compare`` (``avi.baselines``) alike, so it
sits below both.
"""

from __future__ import annotations

import glob
import io
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from avi.errors import RunError

__all__ = ["atomic_write_bytes", "save_figure"]


def _new_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file under the process's umask (read once
    at import: reading the umask means setting it)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: ``mkstemp`` creates its file readable by the owner only; written files get this mode instead
_FILE_MODE = _new_file_mode()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 probes without signalling)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries of ``path`` that writers no longer alive left behind:
    ``.NAME.PID.XXXXXXXX.tmp`` whose PID is gone, and ``.NAME.XXXXXXXX.tmp`` of versions that
    did not name the writer. A live writer's temporary (another process's, or another thread's
    of this one) is left alone: removing it would fail that writer's rename."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]+\.tmp")
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        match = pattern.fullmatch(candidate.name)
        if match is None:  # another file's temporary (``NAME.x``'s), not ours
            continue
        if match[1] is None or not _alive(int(match[1])):
            candidate.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: readers see the old file or the new one, never a part. The file gets the
    permissions a plain write would give it (umask). The temporary's name holds the writer's
    pid; temporaries that an earlier, killed write of the same file left behind are removed
    first, those of writers still running are not. A write the system refuses (a directory in
    the file's place, a full disk, no permission) is a one-line :class:`~avi.errors.RunError`."""
    try:
        _remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as err:
        raise RunError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise RunError(f"cannot write {path}: {err.strerror or err}") from None
        raise


def save_figure(fig: Any, path: Path, dpi: int) -> None:
    """A matplotlib figure as PNG at ``path``, atomically (rendered in memory first)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
