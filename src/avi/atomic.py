"""Atomic file writes, so an interrupted program never leaves a half-written file.

Used by run directories (``avi.runs``) and by ``avi compare`` (``avi.baselines``) alike, so it
sits below both.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_bytes", "save_figure"]


def _new_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file under the process's umask (read once
    at import: reading the umask means setting it)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


#: ``mkstemp`` creates its file readable by the owner only; written files get this mode instead
_FILE_MODE = _new_file_mode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over
    ``path``: readers see the old file or the new one, never a part. The file gets the
    permissions a plain write would give it (umask). Temporary files that an earlier, killed
    write of the same file left behind are removed first."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_figure(fig: Any, path: Path, dpi: int) -> None:
    """A matplotlib figure as PNG at ``path``, atomically (rendered in memory first)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    atomic_write_bytes(path, buffer.getvalue())
