"""Output directories are checked before any work starts: a bad ``--out`` of ``avi fit`` or
``avi compare`` is one line, and comes before the data is loaded or anything is computed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avi.cli import app
from avi.errors import RunError
from avi.runs.config import resolve_config
from avi.runs.paths import check_output_dir
from avi.runs.train import run_fit


@pytest.mark.parametrize("make", ["existing", "new", "new/nested/deeper"])
def test_directories_that_exist_or_can_be_made_pass(tmp_path: Path, make: str) -> None:
    (tmp_path / "existing").mkdir()
    check_output_dir(tmp_path / make)
    assert not (tmp_path / "new").exists()  # checked, not created


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("file", r"output directory .*file is a file; choose a directory path$"),
        ("file/run", r"output directory .*file/run lies under the file .*file; choose a directory path$"),
        ("/proc/avi-run", r"output directory /proc/avi-run lies in /proc, a kernel file system"),
        ("/sys/avi-run", r"output directory /sys/avi-run lies in /sys, a kernel file system"),
    ],
)
def test_unusable_paths_are_one_line_run_errors(tmp_path: Path, out: str, message: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(RunError, match=message) as info:
        check_output_dir(tmp_path / out)
    assert "\n" not in str(info.value)


def test_a_link_into_proc_is_in_proc(tmp_path: Path) -> None:
    (tmp_path / "link").symlink_to("/proc")
    with pytest.raises(RunError, match=r"lies in /proc"):
        check_output_dir(tmp_path / "link" / "run")


@pytest.mark.parametrize(
    ("out", "where"), [("locked", "is"), ("locked/run", r"would be created in .*locked, which is")]
)
def test_a_read_only_directory_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, out: str, where: str
) -> None:
    """Asked of the file system's permissions (os.access), which root passes: stood in for here."""
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and access(p, mode))
    with pytest.raises(RunError, match=rf"output directory .*{out} {where} not writable; choose a directory"):
        check_output_dir(tmp_path / out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only directory")
def test_a_read_only_parent_is_refused_for_real(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(RunError, match="not writable"):
        check_output_dir(locked / "run")


def test_run_fit_checks_the_run_directory_before_loading_data(tmp_path: Path) -> None:
    """The data file does not exist: the run directory's error comes first, so no data was read."""
    (tmp_path / "file").write_text("")
    config = resolve_config({"data": {"source": str(tmp_path / "missing.npy")}})
    with pytest.raises(RunError, match="is a file"):
        run_fit(config, tmp_path / "file")
    with pytest.raises(RunError, match="lies in /proc"):
        run_fit(config, "/proc/avi-run")


@pytest.mark.parametrize("command", [["fit", "--data", "{missing}"], ["compare", "{missing}", "{missing}"]])
def test_cli_out_that_is_a_file_is_one_line_with_exit_code_2(tmp_path: Path, command: list[str]) -> None:
    """``avi fit`` before reading the (missing) data, ``avi compare`` before reading the (missing) runs."""
    out = tmp_path / "taken"
    out.write_text("")
    args = [arg.format(missing=tmp_path / "missing.npy") for arg in command]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is a file; choose a directory path" in lines[0], result.output


def test_compare_model_out_under_a_file_is_refused_before_computing(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = CliRunner().invoke(app, ["compare", "--model", "normal-normal", "--out", str(tmp_path / "file" / "c")])
    assert result.exit_code == 2, result.output
    assert "lies under the file" in result.output and not (tmp_path / "file").is_dir()


@pytest.mark.parametrize("taken", ["comparison.md", "comparison.png"])
def test_compare_whose_output_file_is_a_directory_is_one_line(tmp_path: Path, taken: str) -> None:
    config = resolve_config(
        {"data": {"source": "synthetic", "synthetic_dim": 6, "synthetic_points": 40}, "train": {"epochs": 1}}
    )
    run = run_fit(config, tmp_path / "run")
    (tmp_path / "out" / taken).mkdir(parents=True)
    result = CliRunner().invoke(app, ["compare", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and f"cannot write {tmp_path / 'out' / taken}: Is a directory" in lines[0], result.output
