"""The speed-accuracy comparison, its figure, and the ``avi compare`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex

import avi.atomic
from avi.baselines.compare import (
    METHOD_STYLE,
    QUICK,
    Comparison,
    MethodResult,
    Settings,
    Stage,
    compare,
    comparison_figure,
    format_stage,
    format_table,
    make_model,
    posterior_errors,
    run_compare,
    write_figure,
)

SHORT = Settings(
    vi_steps=300, chains=2, mh_warmup=300, mh_samples=1000, gibbs_samples=300, nuts_warmup=100, nuts_samples=200
)


def test_posterior_errors_are_in_reference_sds() -> None:
    mean_error, sd_error = posterior_errors(
        torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0]), torch.zeros(2), torch.tensor([2.0, 1.0])
    )
    assert mean_error == pytest.approx((0.25 / 2) ** 0.5) and sd_error == 0.0


def test_compare_scores_every_method_against_the_exact_posterior(generator: torch.Generator, tmp_path: Path) -> None:
    target = make_model("beta-bernoulli", generator)
    result = compare(target, ["exact", "mean-field-vi", "mh", "gibbs"], generator=generator, settings=SHORT)
    assert result.reference == "exact"
    by_method = {r.method: r for r in result.results}
    assert by_method["exact"].mean_error == 0 and by_method["exact"].sd_error == 0
    for r in result.results:
        assert r.seconds > 0 and r.trace[-1][0] == r.seconds
        assert r.mean_error < 0.3 and r.sd_error < 0.3
    assert by_method["gibbs"].extra["rhat_max"] < 1.05
    table = format_table(result)
    assert "gibbs" in table and "mean err" in table
    write_figure([result], tmp_path / "figure.png")
    assert (tmp_path / "figure.png").read_bytes()[:4] == b"\x89PNG"


def run_avi(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "avi", *args], capture_output=True, text=True, timeout=300)


def test_avi_compare_writes_json_and_figure(tmp_path: Path) -> None:
    args = ["--model", "normal-normal", "--methods", "exact,mean-field-vi,gibbs"]
    done = run_avi("compare", *args, "--quick", "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    started = [line for line in done.stderr.splitlines() if ": started" in line]
    assert len(started) == 4 and started[-1].startswith("[4/4] gibbs: started")  # the reference, then each method
    printed = json.loads(done.stdout)
    assert set(printed["methods"]) == {"exact", "mean-field-vi", "gibbs"}
    for figures in printed["methods"].values():
        assert {"seconds", "mean_error", "sd_error", "seconds_to_tolerance", "trace"} <= set(figures)
    assert json.loads((tmp_path / "comparison.json").read_text()) == printed
    assert (tmp_path / "comparison.png").stat().st_size > 0


@pytest.mark.parametrize("args, message", [
    (["--model", "unknown"], "unknown model 'unknown'"),
    (["--model", "normal-normal", "--methods", "mh,hmc"], "unknown methods ['hmc']"),
    (["--model", "logistic-regression", "--methods", "exact"], "exact does not apply to logistic-regression"),
])  # fmt: skip
def test_avi_compare_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    done = run_avi("compare", *args, "--out", str(tmp_path))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]


def test_interrupted_compare_keeps_the_previous_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_compare("normal-normal", "exact", tmp_path)
    before = (tmp_path / "comparison.json").read_bytes()
    monkeypatch.setattr(avi.atomic.os, "replace", _interrupted_rename)
    with pytest.raises(KeyboardInterrupt):
        run_compare("normal-normal", "exact", tmp_path, seed=1)
    assert (tmp_path / "comparison.json").read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def _interrupted_rename(*_: object) -> None:
    raise KeyboardInterrupt


def test_quick_compare_runs_every_method_and_reports_each_stage_in_order(tmp_path: Path) -> None:
    stages: list[Stage] = []
    comparison, _ = run_compare("normal-normal", None, tmp_path, quick=True, progress=stages.append)
    methods = ["exact", "mean-field-vi", "full-rank-vi", "mh", "gibbs", "nuts"]
    assert [r.method for r in comparison.results] == methods
    assert all(r.mean_error < 0.3 and r.sd_error < 0.3 for r in comparison.results)
    # every stage starts, then ends, before the next one starts: the reference first, then each method
    names = ["reference", *methods]
    assert [(s.name, s.seconds is None) for s in stages] == [(n, start) for n in names for start in (True, False)]
    assert [s.index for s in stages] == [i for i in range(1, 8) for _ in range(2)]
    assert {s.total for s in stages} == {7}
    ends = stages[1::2]
    assert ends[0].reference == "exact" and [e.result for e in ends[1:]] == comparison.results
    assert all(e.seconds is not None and e.seconds >= e.result.seconds for e in ends[1:] if e.result)
    assert format_stage(stages[8]) == "[5/7] mh: started (2 chains x 1000+3000 draws)"
    assert format_stage(stages[9]).startswith("[5/7] mh: done in ") and "mean error" in format_stage(stages[9])
    assert json.loads((tmp_path / "comparison.json").read_text())["settings"] == asdict(QUICK)


def test_quick_logistic_regression_keeps_five_features(generator: torch.Generator) -> None:
    assert make_model("logistic-regression", generator, quick=True).dim == 6
    assert make_model("logistic-regression", generator).dim == 31


def _result(method: str, errors: list[float]) -> MethodResult:
    trace = [(0.01 * 2**i, e, e / 2) for i, e in enumerate(errors)]
    return MethodResult(method, trace[-1][0], errors[-1], errors[-1] / 2, None, trace)


def test_figure_keeps_each_methods_colour_and_draws_exact_as_a_line() -> None:
    exact = MethodResult("exact", 0.003, 0.0, 0.0, 0.003, [(0.003, 0.0, 0.0)])
    with_exact = Comparison(
        "linear", "exact", 0.1, [exact] + [_result(m, [0.5, 0.2, 0.05]) for m in ("mh", "gibbs", "nuts")]
    )
    without = Comparison(
        "logistic", "nuts-long", 0.1, [_result(m, [0.4, 0.1]) for m in ("mean-field-vi", "mh", "nuts")]
    )
    fig = comparison_figure([with_exact, without])
    styles: dict[str, set[tuple[str, str]]] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            method = str(line.get_label()).split(" ")[0]
            if method in METHOD_STYLE:
                styles.setdefault(method, set()).add((to_hex(line.get_color()), str(line.get_marker())))
            assert 1e-4 not in np.asarray(line.get_ydata(), dtype=float)  # no artificial error floor
    # mh and nuts sit at different positions in the two panels, yet keep one colour and marker
    assert set(styles) == {"exact", "mean-field-vi", "mh", "gibbs", "nuts"}
    assert all(len(s) == 1 for s in styles.values())
    assert len({next(iter(s))[0] for s in styles.values()}) == len(styles)
    (exact_line,) = [line for line in fig.axes[0].get_lines() if line.get_label() == "exact"]
    assert np.asarray(exact_line.get_xdata(), dtype=float).tolist() == [
        0.003,
        0.003,
    ]  # vertical, at the seconds exact inference takes
    assert exact_line.get_transform() == fig.axes[0].get_xaxis_transform()  # spans the panel's height
    assert not [line for line in fig.axes[1].get_lines() if line.get_label() == "exact"]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:5] == ["exact (error 0, at its time)", "mean-field-vi", "mh", "gibbs", "nuts"]
