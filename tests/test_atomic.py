"""Atomic writes: a write interrupted before its rename leaves the previous file whole."""

from __future__ import annotations

import os
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
