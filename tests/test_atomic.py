"""Atomic writes: a write interrupted before its rename leaves the previous file whole."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import avi.atomic
from avi.atomic import atomic_write_bytes


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def test_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "summary.json"
    atomic_write_bytes(path, b"old")
    (tmp_path / ".summary.json.abc.tmp").write_bytes(b"left by a killed write")
    monkeypatch.setattr(avi.atomic.os, "replace", _interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]  # stale and own temporaries gone


def test_written_file_has_the_permissions_of_a_plain_write(tmp_path: Path) -> None:
    plain, atomic = tmp_path / "plain.json", tmp_path / "atomic.json"
    plain.write_bytes(b"x")
    atomic_write_bytes(atomic, b"x")
    assert os.stat(atomic).st_mode == os.stat(plain).st_mode  # mkstemp alone gives 0o600


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_live_writers_temporary_survives_and_a_dead_ones_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".metrics.csv.{sleeper.pid}.k2x9_abq.tmp"
        dead = tmp_path / f".metrics.csv.{_dead_pid()}.p0m3zz7c.tmp"
        other = tmp_path / f".metrics.csv.bak.{_dead_pid()}.q1w2e3r4.tmp"  # metrics.csv.bak's temporary
        for temporary in (live, dead, other):
            temporary.write_bytes(b"partial")
        atomic_write_bytes(path, b"epoch\n1\n")
        assert path.read_bytes() == b"epoch\n1\n"
        assert live.exists() and not dead.exists() and other.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from avi.atomic import atomic_write_bytes

    path, tag = Path(sys.argv[1]), sys.argv[2].encode()
    for i in range(int(sys.argv[3])):
        atomic_write_bytes(path, tag * 1000)
    """
)


def test_concurrent_writers_of_one_file_all_succeed(tmp_path: Path) -> None:
    """Two processes rewriting the same file: neither removes the other's temporary (which failed
    the other's rename), and the file is always one writer's whole content."""
    path = tmp_path / "summary.json"
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, "300"], stderr=subprocess.PIPE, text=True)
        for tag in ("a", "b")
    ]
    errors = [writer.communicate(timeout=120)[1] for writer in writers]
    assert [writer.returncode for writer in writers] == [0, 0], errors
    assert path.read_bytes() in (b"a" * 1000, b"b" * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]
