"""The speed-accuracy comparison, its figure, and the ``avi compare`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import avi.atomic
from avi.baselines.compare import Settings, compare, format_table, make_model, posterior_errors, run_compare, write_figure

QUICK = Settings(vi_steps=300, chains=2, mh_warmup=300, mh_samples=1000, gibbs_samples=300, nuts_warmup=100, nuts_samples=200)


def test_posterior_errors_are_in_reference_sds() -> None:
    mean_error, sd_error = posterior_errors(torch.tensor([1.0, 0.0]), torch.tensor([2.0, 1.0]), torch.zeros(2), torch.tensor([2.0, 1.0]))
    assert mean_error == pytest.approx((0.25 / 2) ** 0.5) and sd_error == 0.0


def test_compare_scores_every_method_against_the_exact_posterior(generator: torch.Generator, tmp_path: Path) -> None:
    target = make_model("beta-bernoulli", generator)
    result = compare(target, ["exact", "mean-field-vi", "mh", "gibbs"], generator=generator, settings=QUICK)
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
    done = run_avi("compare", "--model", "normal-normal", "--methods", "exact,mean-field-vi,gibbs", "--out", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
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
