"""Damaged run directories: ``avi report``, ``compare``, ``gaps``, ``evaluate`` and ``fit --resume``
answer every damaged file with one line on standard error that names the file and what is wrong,
and exit code 2; interrupted runs (a "running" summary whose lock no process holds) are accepted.

One small PPCA run is trained per module and copied per case; the CLI runs in-process."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avi.cli import app
from avi.runs.config import load_config
from avi.runs.gaps import plot_gaps
from avi.runs.rundir import run_lock
from avi.runs.train import run_fit
from tests.runs.conftest import small_job

#: a decomposition as ``avi gaps`` saves it
GAPS = {
    "family": "mean-field", "split": "test", "data": "test split", "n": 5, "log_likelihood": -9.0,
    "elbo_optimal": -9.5, "elbo_amortized": -10.0, "approximation_gap": 0.5, "amortization_gap": 0.5,
}  # fmt: skip
EVALUATION = {"n": 100, "data": "test split", "elbo": -10.0, "log_likelihood": -9.0, "active_units": 2}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-epoch PPCA run with an evaluation and a gap decomposition (and its figure)."""
    root = tmp_path_factory.mktemp("corrupt")
    (root / "job.toml").write_text(small_job(epochs=2, points=200, name="ppca"))
    config = load_config(root / "job.toml", {"inference": {"family": "mean-field"}})  # PPCA's default is full-rank
    run = run_fit(config, root / "run")
    (run / "evaluation.json").write_text(json.dumps(EVALUATION))
    (run / "gaps-mean-field-test.json").write_text(json.dumps(GAPS))
    plot_gaps(run)
    return run


@pytest.fixture(autouse=True)
def _keep_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """``avi fit --resume`` sets the run's threads for the process: not for the test process."""
    monkeypatch.setattr(torch, "set_num_threads", lambda threads: None)


Damage = Callable[[Path], object]


def _copy(trained: Path, tmp_path: Path, damage: dict[str, bytes | Damage | None]) -> Path:
    """A copy of the run with each named file replaced by bytes, changed by a function of its
    path, or (None) deleted."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for name, change in damage.items():
        if change is None:
            (run / name).unlink()
        elif callable(change):
            change(run / name)
        else:
            (run / name).write_bytes(change)
    return run


def _args(command: str, run: Path) -> list[str]:
    return {
        "report": ["report", str(run)],
        "compare": ["compare", str(run), str(run), "--out", str(run.parent / "compared")],
        "gaps": ["gaps", str(run), "--points", "5", "--steps", "2"],
        "evaluate": ["evaluate", str(run), "--k", "2"],
        "resume": ["fit", "--resume", str(run)],
    }[command]


def _fails_in_one_line(command: str, run: Path, file: str, message: str) -> None:
    result = CliRunner().invoke(app, _args(command, run))
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(run / file) in lines[0] and message in lines[0], lines[0]


def _grid(commands: tuple[str, ...], cases: dict[str, tuple], more: dict[str, tuple]) -> list:
    """(command, case): every case of ``cases`` on each command, those of ``more`` (which check
    the same reader further) on the first command alone."""
    grid = [pytest.param(command, case, id=f"{case}-{command}") for case in cases for command in commands]
    return grid + [pytest.param(commands[0], case, id=f"{case}-{commands[0]}") for case in more]


def _replace(old: str, new: str, count: int = 1) -> Damage:
    return lambda path: path.write_text(path.read_text().replace(old, new, count))


def _cut(path: Path) -> None:
    """Cut the file in the middle of its last row."""
    path.write_bytes(path.read_bytes()[:-7])


def _non_numeric_epoch(path: Path) -> None:
    header, first, *rest = path.read_text().splitlines(keepends=True)
    path.write_text("".join([header, "abc" + first[first.index(",") :], *rest]))


METRICS = {
    "deleted": (None, "is missing, though the run has a checkpoint"),
    "truncated": (_cut, "is truncated: its last line ends in the middle of a row"),
    "emptied": (b"", "is empty, though the run has a checkpoint"),
    "binary": (bytes(range(256)) * 4, "is not a metrics table: byte 128 is not UTF-8 text"),
    "huge field": (
        lambda path: path.write_bytes(path.read_bytes() + b"x" * 200_000 + b"\n"),
        "line 4 is not CSV: field larger than field limit",
    ),
    "non-numeric epoch": (_non_numeric_epoch, "line 2: 'epoch' is 'abc', not an integer"),
}
MORE_METRICS = {
    "fractional epoch": (_replace("\n2,", "\n2.5,"), "line 3: 'epoch' is '2.5', not an integer"),
    "short row": (lambda path: path.write_text(path.read_text() + "3,1.5\n"), "line 4 has 2 fields, its header"),
    "header only": (lambda path: path.write_text(path.read_text().splitlines(keepends=True)[0]), "holds no epochs"),
    "foreign table": (b"a,b\n1,2\n", "lacks the column 'epoch'"),
}


@pytest.mark.parametrize(("command", "case"), _grid(("compare", "report"), METRICS, MORE_METRICS))
def test_damaged_metrics(trained: Path, tmp_path: Path, command: str, case: str) -> None:
    damage, message = {**METRICS, **MORE_METRICS}[case]
    _fails_in_one_line(command, _copy(trained, tmp_path, {"metrics.csv": damage}), "metrics.csv", message)


def test_a_non_numeric_value_in_a_number_column(trained: Path, tmp_path: Path) -> None:
    header = (trained / "metrics.csv").read_text().splitlines()[0].split(",")
    column = header.index("train_elbo")

    def damage(path: Path) -> None:
        lines = path.read_text().splitlines(keepends=True)
        fields = lines[1].split(",")
        fields[column] = "high"
        path.write_text("".join([lines[0], ",".join(fields), *lines[2:]]))

    run = _copy(trained, tmp_path, {"metrics.csv": damage})
    _fails_in_one_line("compare", run, "metrics.csv", "line 2: 'train_elbo' is 'high', not a number")


SUMMARY = {
    "list": (b"[1]", "holds an array, not a JSON object"),
    "null": (b"null", "holds null, not a JSON object"),
    "invalid": (b'{"status": ', "is not valid JSON: Expecting value (line 1 column 12)"),
    "empty object": (b"{}", "lacks 'status'"),
    "status a number": (b'{"status": 3}', "'status' is a number, not a string"),
}
MORE_SUMMARY = {
    "unknown status": (b'{"status": "paused"}', "unknown status 'paused'; avi writes one of running, finished"),
    "binary": (b"\xff\xfe{", "is not JSON: byte 0 is not UTF-8 text"),
    "nested": (b"[" * 100_000, "is nested too deeply"),
    "deleted": (None, "cannot read"),
}


@pytest.mark.parametrize(("command", "case"), _grid(("report", "compare", "gaps"), SUMMARY, MORE_SUMMARY))
def test_damaged_summary(trained: Path, tmp_path: Path, command: str, case: str) -> None:
    content, message = {**SUMMARY, **MORE_SUMMARY}[case]
    _fails_in_one_line(command, _copy(trained, tmp_path, {"summary.json": content}), "summary.json", message)


GAPS_DAMAGE = {
    "invalid": (b"{", "is not valid JSON"),
    "list": (b"[]", "holds an array, not a JSON object"),
    "missing keys": (json.dumps({"approximation_gap": 1.0}).encode(), "lacks 'family'"),
    "strings for numbers": (
        json.dumps({**GAPS, "amortization_gap": "0.5"}).encode(),
        "'amortization_gap' is a string, not a number",
    ),
}
MORE_GAPS = {"boolean for a count": (json.dumps({**GAPS, "n": True}).encode(), "'n' is a boolean, not an integer")}


@pytest.mark.parametrize(("command", "case"), _grid(("compare", "report"), GAPS_DAMAGE, MORE_GAPS))
def test_damaged_gaps(trained: Path, tmp_path: Path, command: str, case: str) -> None:
    content, message = {**GAPS_DAMAGE, **MORE_GAPS}[case]
    run = _copy(trained, tmp_path, {"gaps-mean-field-test.json": content})
    _fails_in_one_line(command, run, "gaps-mean-field-test.json", message)


def test_gaps_refuses_a_damaged_decomposition_before_the_work(trained: Path, tmp_path: Path, monkeypatch) -> None:
    """Another family's saved decomposition, drawn in the same figure, is checked first."""
    from avi.runs import gaps

    monkeypatch.setattr(gaps, "gap_decomposition", lambda *args, **kwargs: pytest.fail("the work started"))
    run = _copy(trained, tmp_path, {"gaps-full-rank-test.json": b'{"family": "full-rank"}'})
    _fails_in_one_line("gaps", run, "gaps-full-rank-test.json", "lacks 'split'")


CONFIG = {
    "list": (b"[]", "holds an array, not a JSON object"),
    "null": (b"null", "holds null, not a JSON object"),
    "invalid": (b"{", "is not valid JSON: Expecting property name enclosed in double quotes"),
    "unknown key": (
        lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "bogus": 1})),
        "config.json: unknown config key 'bogus'",
    ),
}
MORE_CONFIG = {
    "null section": (
        lambda path: path.write_text(json.dumps({**json.loads(path.read_text()), "model": None})),
        "config.json: invalid value for model",
    ),
}


@pytest.mark.parametrize(
    ("command", "case"), _grid(("compare", "report", "gaps", "evaluate", "resume"), CONFIG, MORE_CONFIG)
)
def test_damaged_config(trained: Path, tmp_path: Path, command: str, case: str) -> None:
    content, message = {**CONFIG, **MORE_CONFIG}[case]
    _fails_in_one_line(command, _copy(trained, tmp_path, {"config.json": content}), "config.json", message)


EVALUATION_DAMAGE = {
    "invalid": (b"{", "is not valid JSON"),
    "list": (b"[]", "holds an array, not a JSON object"),
    "missing keys": (b'{"n": 3}', "lacks 'elbo'"),
    "strings for numbers": (b'{"elbo": "x", "log_likelihood": -1}', "'elbo' is a string, not a number"),
}
MORE_EVALUATION = {
    "fractional units": (
        json.dumps({**EVALUATION, "active_units": 1.5}).encode(),
        "'active_units' is a number, not an integer",
    ),
}


@pytest.mark.parametrize(("command", "case"), _grid(("compare", "report"), EVALUATION_DAMAGE, MORE_EVALUATION))
def test_damaged_evaluation(trained: Path, tmp_path: Path, command: str, case: str) -> None:
    content, message = {**EVALUATION_DAMAGE, **MORE_EVALUATION}[case]
    _fails_in_one_line(command, _copy(trained, tmp_path, {"evaluation.json": content}), "evaluation.json", message)


CHECKPOINT: dict[str, tuple] = {
    "truncated": (lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),),
    "zero bytes": (b"",),
}
MORE_CHECKPOINT: dict[str, tuple] = {"truncated at the end": (lambda path: path.write_bytes(path.read_bytes()[:-100]),)}


@pytest.mark.parametrize(
    ("command", "case"), _grid(("report", "gaps", "evaluate", "resume"), CHECKPOINT, MORE_CHECKPOINT)
)
def test_damaged_checkpoint(trained: Path, tmp_path: Path, command: str, case: str) -> None:
    """Not "[Errno 22] Invalid argument", which torch's reader raises for a cut archive."""
    run = _copy(trained, tmp_path, {"checkpoint.pt": {**CHECKPOINT, **MORE_CHECKPOINT}[case][0]})
    _fails_in_one_line(command, run, "checkpoint.pt", "it is truncated or not a checkpoint")


@pytest.mark.parametrize("command", ["report", "compare", "gaps"])
def test_a_run_still_being_written_is_refused(trained: Path, tmp_path: Path, command: str) -> None:
    """An ``avi fit`` holds the run's lock (here: this process, through another open file)."""
    run = _copy(trained, tmp_path, {"summary.json": b'{"status": "running", "epochs_done": 2}'})
    with run_lock(run):
        result = CliRunner().invoke(app, _args(command, run))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"run {run} is still being written by avi fit (pid " in lines[0], result.stderr


def _page_note(run: Path) -> list[str]:
    return re.findall(r"<p><em>(.*?)</em></p>", (run / "report.html").read_text())


@pytest.mark.parametrize("summary", ["interrupted", "running"])
def test_report_of_an_interrupted_run_says_where_it_stopped(trained: Path, tmp_path: Path, summary: str) -> None:
    """Stopped by Ctrl-C ("interrupted"), or killed (a "running" summary whose lock nobody
    holds): reported from its last checkpoint, and the page says so."""
    run = _copy(trained, tmp_path, {"summary.json": json.dumps({"status": summary, "epochs_done": 2}).encode()})
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.stderr
    assert (
        f"This run was interrupted at epoch 2: the figures show its last checkpoint. "
        f"Continue it with avi fit --resume {run}." in _page_note(run)
    )


def test_report_of_a_diverged_run_says_so(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path, {"summary.json": b'{"status": "diverged", "diverged": {"epoch": 3, "step": 1}}'})
    result = CliRunner().invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.stderr
    assert "This run diverged after epoch 2: the figures show its last finite checkpoint." in _page_note(run)


def test_a_killed_run_is_compared_evaluated_and_decomposed_as_interrupted(trained: Path, tmp_path: Path) -> None:
    run = _copy(trained, tmp_path, {"summary.json": b'{"status": "running", "epochs_done": 2}'})
    compared = CliRunner().invoke(app, [*_args("compare", run), "--json"])
    assert compared.exit_code == 0, compared.stderr
    assert [r["status"] for r in json.loads(compared.stdout)["runs"]] == ["interrupted", "interrupted"]
    for command in ("evaluate", "gaps"):
        result = CliRunner().invoke(app, _args(command, run))
        assert result.exit_code == 0, (command, result.stderr)
