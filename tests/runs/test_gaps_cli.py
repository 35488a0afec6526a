"""``avi gaps`` and the semi-amortized, iterative and flow strategies as a user runs them."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from avi.cli import app
from avi.evaluation import gaps as gap_estimates
from avi.inference.fit import fit
from avi.inference.loop import Hook
from avi.inference.state import TrainState
from avi.runs import gaps as gaps_module
from avi.runs.build import build_posterior
from avi.runs.config import learning_rate, load_config
from avi.runs.gaps import MEMORY_BUDGET, merge_gaps, run_gaps
from avi.runs.train import run_fit

PPCA_JOB = """
[model]
name = "ppca"
latent_dim = 2
[data]
source = "synthetic"
synthetic_dim = 6
synthetic_points = 400
[inference]
family = "mean-field"  # PPCA's default is full-rank
[train]
epochs = 3
batch_size = 50
lr = 0.01
threads = 1
"""

KEYS = {
    "log_likelihood",
    "elbo_optimal",
    "elbo_amortized",
    "approximation_gap",
    "amortization_gap",
    "family",
}


def _one_line_error(result: subprocess.CompletedProcess[str], message: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_gaps_of_a_ppca_run_and_of_a_new_full_rank_encoder(avi_cli, tmp_path: Path) -> None:
    config, run = tmp_path / "ppca.toml", tmp_path / "ppca"
    config.write_text(PPCA_JOB)
    fitted = avi_cli("fit", str(config), "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr

    result = avi_cli("gaps", str(run), "--json", "--steps", "300")
    assert result.returncode == 0, result.stderr
    gaps = json.loads(result.stdout)
    assert KEYS <= set(gaps)
    assert (gaps["family"], gaps["log_likelihood_method"], gaps["n"]) == ("mean-field", "exact", 40)
    total = gaps["log_likelihood"] - gaps["elbo_amortized"]
    assert total == pytest.approx(gaps["approximation_gap"] + gaps["amortization_gap"], abs=1e-5)
    assert (run / "gaps-mean-field-test.json").is_file()
    assert (run / "gaps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Another family trains a new amortized encoder against the fixed model. Full-rank q
    # contains PPCA's posterior, so its approximation gap is 0 up to the 300-step optimiser
    # (float32; we allow 0.03 nats) and 4 of its reported standard errors.
    result = avi_cli("gaps", str(run), "--json", "--steps", "300", "--family", "full-rank")
    assert result.returncode == 0, result.stderr
    full_rank = json.loads(result.stdout)
    assert full_rank["family"] == "full-rank" and KEYS <= set(full_rank)
    tolerance = 0.03 + 4 * full_rank["approximation_gap_stderr"]
    assert abs(full_rank["approximation_gap"]) < tolerance, full_rank
    for name in ("gaps-mean-field-test.json", "gaps-full-rank-test.json", "gaps.png"):
        assert (run / name).is_file(), name

    _one_line_error(avi_cli("gaps", str(run), "--family", "spline"), "unknown variational family 'spline'")
    _one_line_error(avi_cli("gaps", str(run), "--first", "40"), "first point 40 is past the last of the 40 points")
    _one_line_error(avi_cli("gaps", str(run), "--first", "-1"), "first must be non-negative")


def test_a_new_encoder_takes_its_own_inference_settings(avi_cli, tmp_path: Path, monkeypatch) -> None:
    """``--set inference.KEY=VALUE`` with ``--family`` builds the new encoder with those settings
    (seen by :func:`build_posterior`, recorded in the result); with the run's own family, for
    another section, or where a setting does not apply to the family, it is one line."""
    config, run = tmp_path / "ppca.toml", tmp_path / "ppca"
    config.write_text(PPCA_JOB)
    assert avi_cli("fit", str(config), "--out", str(run)).returncode == 0
    built = []

    def spy(config, *args, **kwargs):
        built.append(config.inference)
        return build_posterior(config, *args, **kwargs)

    monkeypatch.setattr(gaps_module, "build_posterior", spy)
    result = run_gaps(run, family="planar", encoder_settings={"flow_centred": True, "flow_length": 2}, points=10,
                      steps=2, k=4, encoder_epochs=1)  # fmt: skip
    assert [(i.family, i.flow_centred, i.flow_length) for i in built] == [("planar", True, 2)]
    assert result["encoder_settings"] == {"flow_centred": True, "flow_length": 2}
    assert json.loads((run / "gaps-planar-test.json").read_text())["encoder_settings"] == result["encoder_settings"]
    assert run_gaps(run, family="planar", points=10, steps=2, k=4, encoder_epochs=1)["encoder_settings"] == {}
    assert built[-1].flow_centred is False

    _one_line_error(avi_cli("gaps", str(run), "--set", "inference.flow_centred=true"),
                    "encoder settings apply to a new encoder")  # fmt: skip
    _one_line_error(avi_cli("gaps", str(run), "--family", "planar", "--set", "model.latent_dim=3"),
                    "avi gaps --set takes inference.KEY=VALUE (the new encoder's settings), not model.*")  # fmt: skip
    _one_line_error(avi_cli("gaps", str(run), "--family", "full-rank", "--set", "inference.flow_centred=true"),
                    "inference.flow_centred applies to the planar, radial and sylvester families")  # fmt: skip


def test_a_new_encoder_trains_with_the_runs_schedule(tmp_path: Path, monkeypatch) -> None:
    """The new encoder trains with the run's Adam epsilon and learning-rate schedule, its warm-up
    and cosine decay spanning the encoder's epochs (a run's KL warm-up, longer than those epochs,
    does not apply: the encoder maximises the plain ELBO): the rates its optimiser held, epoch by
    epoch, are those of :func:`learning_rate` over 4 epochs."""
    config = tmp_path / "ppca.toml"
    config.write_text(PPCA_JOB.replace("threads = 1", 'threads = 1\nlr_schedule = "cosine"\nlr_warmup = 2\n'
                                       "adam_eps = 1e-4\n[remedies]\nkl_warmup = 3"))  # fmt: skip
    run = run_fit(load_config(config), tmp_path / "ppca")
    seen: list[tuple[float, float]] = []

    class Rates(Hook):
        def on_epoch_start(self, state: TrainState) -> None:
            group = state.dense_optimizers[0].param_groups[0]
            seen.append((group["lr"], group["eps"]))

    def spy(*args, hooks=(), **kwargs):
        return fit(*args, hooks=[*hooks, Rates()], **kwargs)

    monkeypatch.setattr(gaps_module, "fit", spy)
    run_gaps(run, family="planar", points=10, steps=2, k=4, encoder_epochs=4)
    train = load_config(config).train.model_copy(update={"epochs": 4})
    assert seen == [(pytest.approx(learning_rate(train, epoch)), 1e-4) for epoch in range(1, 5)]
    assert [lr for lr, _ in seen] == pytest.approx([0.005, 0.01, 0.01, 0.005])


def test_a_decomposition_in_pieces_merges_into_the_whole(tmp_path: Path) -> None:
    """``first`` picks the points, and :func:`merge_gaps` weights the pieces by their counts:
    PPCA's exact log p(x) of the 40 test points is that of points 0-24 and 25-39 merged (float32
    sums); the merged standard error combines the pieces' as independent estimates."""
    config = tmp_path / "ppca.toml"
    config.write_text(PPCA_JOB)
    run = run_fit(load_config(config), tmp_path / "ppca")
    whole = run_gaps(run, points=40, steps=0)
    pieces = [run_gaps(run, points=25, first=0, steps=0), run_gaps(run, points=100, first=25, steps=0)]
    assert [(p["first"], p["n"]) for p in pieces] == [(0, 25), (25, 15)]
    assert pieces[0]["log_likelihood"] != pytest.approx(pieces[1]["log_likelihood"], abs=1e-3)
    merged = merge_gaps(pieces)
    assert (merged["first"], merged["n"], merged["log_likelihood_method"]) == (0, 40, "exact")
    assert merged["log_likelihood"] == pytest.approx(whole["log_likelihood"], abs=1e-4)
    se = [p["amortization_gap_stderr"] for p in pieces]
    assert merged["amortization_gap_stderr"] == pytest.approx(math.hypot(25 * se[0], 15 * se[1]) / 40)
    assert merged["seconds"] == pytest.approx(pieces[0]["seconds"] + pieces[1]["seconds"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--strategy", "semi-amortized", "--refine-steps", "2"],
            {"strategy": "semi-amortized", "refine_steps": 2},
        ),
        (["--strategy", "iterative"], {"strategy": "iterative"}),
        (["--family", "iaf"], {"family": "iaf", "strategy": "amortized"}),
    ],
    ids=["semi-amortized", "iterative", "iaf"],
)
def test_refining_and_flow_strategies_fit_and_evaluate(
    avi_cli, small_config, tmp_path: Path, args: list[str], expected: dict[str, object]
) -> None:
    run = tmp_path / "run"
    fitted = avi_cli("fit", str(small_config(2)), *args, "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    inference = json.loads((run / "config.json").read_text())["inference"]
    assert {key: inference[key] for key in expected} == expected
    evaluated = avi_cli("evaluate", str(run), "--k", "10", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["n"] == 60 and math.isfinite(result["elbo"])
    # IWAE with k samples bounds log p(x) more tightly than the ELBO (up to MC error, large here)
    assert result["log_likelihood"] >= result["elbo"] - 0.5
    if "iaf" in args:  # a flow family where log p(x) is not exact: the IWAE estimate from q*
        result = avi_cli("gaps", str(run), "--json", "--steps", "20", "--points", "20", "--k", "50")
        assert result.returncode == 0, result.stderr
        gaps = json.loads(result.stdout)
        assert (gaps["family"], gaps["log_likelihood_method"], gaps["n"]) == ("iaf", "iwae", 20)


def test_bad_gaps_and_refinement_input_is_one_line_with_exit_code_2(avi_cli, small_config, tmp_path: Path) -> None:
    _one_line_error(avi_cli("fit", "--refine-steps", "-1"), "inference.refine_steps")
    run = tmp_path / "local"
    fitted = avi_cli("fit", str(small_config(1)), "--strategy", "per-datapoint", "--out", str(run))
    assert fitted.returncode == 0, fitted.stderr
    _one_line_error(avi_cli("gaps", str(run)), "needs an amortized posterior")


def test_ais_chunks_follow_a_memory_budget(avi_cli, small_config, tmp_path: Path, monkeypatch) -> None:
    """AIS keeps every chain's activations for its gradient: without ``evaluate.memory_budget``
    ``avi gaps`` sizes its chunks by :data:`MEMORY_BUDGET` MiB, not a fixed 100 points of k
    chains (18 GiB for k = 5,000 on the MNIST preset)."""
    run = tmp_path / "run"
    assert avi_cli("fit", str(small_config(1)), "--out", str(run)).returncode == 0
    budgets: list[float | None] = []
    ais = gap_estimates.ais_log_likelihood

    def spy(*args, **kwargs):
        budgets.append(kwargs.get("memory_budget"))
        return ais(*args, **kwargs)

    monkeypatch.setattr(gap_estimates, "ais_log_likelihood", spy)
    result = run_gaps(run, k=8, points=10, steps=5, ais_steps=2)
    assert result["log_likelihood_method"] == "ais" and math.isfinite(result["log_likelihood"])
    assert budgets == [MEMORY_BUDGET]


def test_gaps_shows_its_progress_and_warns_when_q_star_is_short(small_config, tmp_path: Path, monkeypatch) -> None:
    """Outside a terminal: a line per report (AVI_PROGRESS_SECONDS=0) of the refinement's steps
    (2 and the check's 1) and of the points whose log p(x) is done (k = 2000: a point a batch);
    2 steps from the encoder's output leave q* short, and the warning says by how much and
    what to do."""

    run = run_fit(load_config(small_config(1)), tmp_path / "run")
    monkeypatch.setenv("AVI_PROGRESS_SECONDS", "0")
    threads = torch.get_num_threads()
    args = ["gaps", str(run), "--steps", "2", "--points", "20", "--k", "2000", "--threads", "1"]
    result = CliRunner().invoke(app, args)
    torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("refining q*: 3/3 steps (100%)") for line in lines), result.output
    assert any(line.startswith("log p(x): 20/20 points (100%)") for line in lines), result.output
    short = "warning: q* may not have converged: 2 steps rather than 1 raised L[q*] by "
    warning = [line for line in lines if line.startswith(short)]
    assert len(warning) == 1 and warning[0].endswith("nats per point (on the first 20 points); raise --steps")
