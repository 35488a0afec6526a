"""``avi evaluate`` options: two torchrun-style processes against one, memory budget, device and
precision, as a user runs them."""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from rich.console import Console
from typer.testing import CliRunner

from avi.cli import _evaluation_table, app
from avi.errors import ConfigError
from avi.evaluation import importance
from avi.precision import bf16_supported
from avi.runs import evaluate as evaluate_module
from avi.runs.evaluate import run_evaluate
from avi.runs.load import load_trained
from tests.runs.conftest import avi_in_process, small_job
from tests.runs.test_distributed import run_ranks


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small job trained for 1 epoch, once for the module: :func:`fitted` hands out copies."""
    config = tmp_path_factory.mktemp("plain") / "small.toml"
    config.write_text(small_job(1))
    result = avi_in_process("fit", str(config), "--out", str(config.parent / "run"))
    assert result.returncode == 0, result.stderr
    return config.parent / "run"


@pytest.fixture
def fitted(avi_cli, small_config, tmp_path: Path, plain_run: Path):
    """``fitted(*flags)``: a run of the small job for 1 epoch, fit with ``flags``; without any, a
    copy of the module's :func:`plain_run`, which the test may change."""

    def make(*args: str) -> Path:
        run = tmp_path / ("run" + "".join(args).replace("-", "_"))
        if not args:
            return Path(shutil.copytree(plain_run, run))
        result = avi_cli("fit", str(small_config(1)), "--out", str(run), *args)
        assert result.returncode == 0, result.stderr
        return run

    return make


@pytest.mark.parametrize("strategy", ["amortized", "per-datapoint"])
def test_two_processes_give_the_single_process_estimate(avi_cli, fitted, strategy: str) -> None:
    # 60 test points split 30 + 30; each point's noise is seeded by (seed, point), so the
    # gathered per-point estimates, and hence every reported mean, equal one process's. A
    # per-datapoint run infers the points in blocks of 16 with the noise seeded by the block,
    # blocks 0-1 on rank 0 and 2-3 on rank 1, and the gathered table is one process's
    run = fitted("--strategy", strategy)
    if strategy == "per-datapoint":
        config = json.loads((run / "config.json").read_text())
        config["inference"]["infer_block"] = 16
        (run / "config.json").write_text(json.dumps(config))
    single = avi_cli("evaluate", str(run), "--k", "300", "--cubo", "--json")
    assert single.returncode == 0, single.stderr
    expected = json.loads(single.stdout)
    (run / "evaluation-k300.json").unlink()
    ranks = run_ranks(["-m", "avi", "evaluate", str(run), "--k", "300", "--cubo", "--json"])
    for result in ranks:
        assert result.returncode == 0, result.stderr
    assert ranks[1].stdout == ""  # rank 0 alone prints
    got = json.loads(ranks[0].stdout)
    assert got["processes"] == 2 and expected["processes"] == 1
    for key in (
        "log_likelihood", "log_likelihood_stderr", "log_likelihood_debiased", "log_likelihood_debiased_stderr",
        "log_likelihood_interval", "pareto_k", "ess", "cubo", "cubo_stderr", "elbo", "kl",
    ):  # fmt: skip
        assert got[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-6), key
    written = json.loads((run / "evaluation-k300.json").read_text())
    assert written["log_likelihood"] == got["log_likelihood"]


def test_memory_budget_changes_the_chunks_not_the_estimate(avi_cli, fitted) -> None:
    run = fitted()
    plain = json.loads(avi_cli("evaluate", str(run), "--k", "200", "--json").stdout)
    # the small model's row is ~0.2 KiB: 0.01 MiB beyond the 2 MiB reserve holds 50 rows, so 4
    # chunks per point
    budgeted = avi_cli("evaluate", str(run), "--k", "200", "--memory-budget", "2.01", "--json")
    assert budgeted.returncode == 0, budgeted.stderr
    assert json.loads(budgeted.stdout)["log_likelihood"] == pytest.approx(plain["log_likelihood"], abs=1e-5)
    tiny = avi_cli("evaluate", str(run), "--memory-budget", "1.5")
    assert tiny.returncode == 2 and "below one sample" in tiny.stderr and len(tiny.stderr.strip().splitlines()) == 1


def test_a_budget_too_small_for_the_worker_threads_fails_before_inference(fitted, monkeypatch) -> None:
    # 3 MiB covers one thread's 2 MiB scratch and rows, not two threads': the check uses the
    # threads that sampling will, before the (for per-datapoint runs, slow) posterior inference
    run = fitted()

    def never(*args, **kwargs):
        raise AssertionError("the posterior was inferred before the memory budget was checked")

    monkeypatch.setattr(evaluate_module, "infer_posterior", never)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(ConfigError, match=r"per thread \(2\)"):
            run_evaluate(run, k=100, memory_budget=3.0)
    finally:
        torch.set_num_threads(threads)


def test_device_and_precision_options(avi_cli, fitted) -> None:
    run = fitted()
    fp32 = json.loads(avi_cli("evaluate", str(run), "--k", "100", "--device", "auto", "--json").stdout)
    assert fp32["precision"] == "fp32"
    bf16 = avi_cli("evaluate", str(run), "--k", "100", "--precision", "bf16", "--json")
    assert bf16.returncode == 0, bf16.stderr
    result = json.loads(bf16.stdout)
    if bf16_supported(torch.device("cpu")):
        assert result["precision"] == "bf16" and _other_lines(bf16.stderr) == []
        # a 12-pixel decoder with 16 hidden units: bf16 moves the estimate by far less than 0.05 nats
        assert result["log_likelihood"] == pytest.approx(fp32["log_likelihood"], abs=0.05)
    else:
        assert result["precision"] == "fp32" and "ran fp32" in bf16.stderr
    # the decoder's log-density through torch.compile: the same samples, the same sums to float rounding
    compiled = json.loads(avi_cli("evaluate", str(run), "--k", "100", "--compile", "--json").stdout)
    assert compiled["compiled"] is True and fp32["compiled"] is False
    assert compiled["log_likelihood"] == pytest.approx(fp32["log_likelihood"], abs=1e-4)
    for args, message in (
        (["--precision", "fp16"], "unknown precision"),
        (["--device", "tpu"], "unknown device"),
    ):
        bad = avi_cli("evaluate", str(run), *args)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    if not torch.cuda.is_available():
        bad = avi_cli("evaluate", str(run), "--device", "cuda")
        assert bad.returncode == 2 and "no CUDA GPU" in bad.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_run_trained_on_a_gpu_is_evaluated_on_the_cpu_here(avi_cli, fitted) -> None:
    run = fitted()
    expected = json.loads(avi_cli("evaluate", str(run), "--k", "50", "--json").stdout)["log_likelihood"]
    config = json.loads((run / "config.json").read_text())
    config["train"]["device"] = "cuda"  # as written by `avi fit --device cuda` on a GPU machine
    (run / "config.json").write_text(json.dumps(config))
    assert load_trained(run).device == torch.device("cpu")
    for args in ([], ["--device", "cpu"]):
        result = avi_cli("evaluate", str(run), "--k", "50", "--json", *args)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["log_likelihood"] == pytest.approx(expected, abs=1e-6)
    bad = avi_cli("evaluate", str(run), "--device", "cuda")  # asking for the GPU here is still an error
    assert bad.returncode == 2 and "no CUDA GPU" in bad.stderr


def test_bf16_without_hardware_support_falls_back_to_fp32(fitted, monkeypatch) -> None:
    run = fitted()
    monkeypatch.setattr(evaluate_module, "bf16_supported", lambda device: False)
    result = run_evaluate(run, k=20, precision="bf16")
    assert result["precision"] == "fp32"
    assert result["log_likelihood"] == run_evaluate(run, k=20)["log_likelihood"]


def test_a_compiled_evaluation_compiles_every_chunk(fitted, monkeypatch) -> None:
    # 60 test points on 2 worker threads, k = 100: each worker's part of 30 points is one batch of
    # the compiled shape (30, 100), so no chunk takes the eager path (made to fail here)
    run = fitted()
    eager = run_evaluate(run, k=100)

    def fail(*args):
        raise AssertionError("a chunk took the eager path")

    monkeypatch.setattr(importance, "_fast_log_likelihood", fail)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compiled = run_evaluate(run, k=100, compile=True)
    finally:
        torch.set_num_threads(threads)
    assert compiled["compiled"] is True and compiled["n"] == 60
    assert compiled["log_likelihood"] == pytest.approx(eager["log_likelihood"], abs=1e-4)


def test_models_without_the_fast_path_evaluate_in_fp32_with_a_message(avi_cli, fitted) -> None:
    run = fitted("--model", "ppca")
    result = avi_cli("evaluate", str(run), "--k", "50", "--precision", "bf16")
    assert result.returncode == 0, result.stderr
    assert "ran fp32" in result.stderr and len(_other_lines(result.stderr)) == 1
    compiled = avi_cli("evaluate", str(run), "--k", "50", "--compile", "--json")  # nothing to compile
    assert compiled.returncode == 0 and json.loads(compiled.stdout)["compiled"] is False, compiled.stderr
    assert "ran uncompiled" in compiled.stderr and len(_other_lines(compiled.stderr)) == 1


def test_a_user_posterior_is_evaluated_through_the_interface(fitted, monkeypatch) -> None:
    """A Posterior subclass of the user's own: its q is the one scored, and whether it can give
    consistency metrics is its ``amortized`` flag, not its class (refused before any sampling)."""
    import dataclasses

    from tests.runs.user_posterior import UserPosterior

    run = fitted()
    trained_elbo = run_evaluate(run, k=20)["elbo"]
    trained = load_trained(run)
    posterior = UserPosterior(12, 2)
    monkeypatch.setattr(evaluate_module, "load_trained", lambda *_: dataclasses.replace(trained, posterior=posterior))
    result = run_evaluate(run, k=20)
    assert posterior.calls > 0 and result["n"] == 60
    # the untrained user encoder's q, not the run's, is scored: a different ELBO; IWAE-20 still
    # sits above it up to Monte Carlo error
    assert result["elbo"] != pytest.approx(trained_elbo, abs=1e-3)
    assert result["log_likelihood"] >= result["elbo"] - 0.5

    local = dataclasses.replace(trained, posterior=UserPosterior(12, 2, amortized=False))
    monkeypatch.setattr(evaluate_module, "load_trained", lambda *_: local)
    monkeypatch.setattr(evaluate_module, "infer_posterior", lambda *args: pytest.fail("inferred before refusing"))
    with pytest.raises(ConfigError, match="not amortized"):
        run_evaluate(run, k=20, consistency=True)


def _other_lines(stderr: str) -> list[str]:
    """The lines of standard error other than the Pareto k-hat warning (which a briefly trained
    run's importance weights may well earn)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("warning: Pareto k-hat")]


def test_the_evaluation_holds_jackknife_errors_khat_and_every_point(fitted) -> None:
    """The evaluation file's summary is the per-point file's columns summarised: the IWAE mean and
    its standard error sqrt(sum se_i^2) / N, the debiased estimate (above the IWAE bound at every
    point: by Jensen the bound's groups-deleted means average below it), its 95% interval, k-hat's
    median and share over 0.7, the effective sample sizes; the command prints them and the warning
    where there is one. At k = 2 the undefined parts are null."""
    run = fitted()
    result = run_evaluate(run, k=300)
    written = json.loads((run / "evaluation-k300.json").read_text())
    assert written["per_point_file"] == "evaluation-k300-points.csv" and written["stderr_method"] == "jackknife"
    with (run / written["per_point_file"]).open() as file:
        rows = list(csv.DictReader(file))
    assert [int(row["point"]) for row in rows] == list(range(60))

    def column(name: str) -> torch.Tensor:
        return torch.tensor([float(row[name]) for row in rows], dtype=torch.float64)

    assert written["log_likelihood"] == pytest.approx(column("log_likelihood").mean().item(), rel=1e-6)
    stderr = column("log_likelihood_stderr").pow(2).sum().sqrt().item() / 60
    assert written["log_likelihood_stderr"] == pytest.approx(stderr, rel=1e-6)
    assert (column("log_likelihood_debiased") >= column("log_likelihood") - 1e-6).all()
    centre, se = written["log_likelihood_debiased"], written["log_likelihood_debiased_stderr"]
    assert centre == pytest.approx(column("log_likelihood_debiased").mean().item(), rel=1e-6)
    assert written["log_likelihood_interval"] == pytest.approx([centre - 1.96 * se, centre + 1.96 * se], rel=1e-4)
    khat = column("pareto_k")
    share = (khat > 0.7).double().mean().item()
    assert written["pareto_k"] == {
        "median": pytest.approx(khat.quantile(0.5).item(), rel=1e-6),
        "share_over_0.7": pytest.approx(share),
        "points": 60,
    }
    assert (written["pareto_k_warning"] is None) == (share <= 0.1)
    assert written["ess"] == {
        "median": pytest.approx(column("ess").median().item(), rel=1e-6),
        "min": pytest.approx(column("ess").min().item(), rel=1e-6),
    }
    assert 1 <= written["ess"]["min"] <= 300
    assert written["log_likelihood"] == result["log_likelihood"] and written["k"] == result["k"] == 300

    threads = torch.get_num_threads()  # the command sets the process's threads
    try:
        shown = CliRunner().invoke(app, ["evaluate", str(run), "--k", "300"])
    finally:
        torch.set_num_threads(threads)
    assert shown.exit_code == 0, shown.output
    for text in ("log p(x) ≥ (IWAE k=300)", f"{written['log_likelihood']:.2f} ± ", "jackknife-debiased", "(95%: "):
        assert text in shown.stdout, text
    assert f"{written['pareto_k']['median']:.2f}; {100 * share:.1f}% > 0.7" in shown.stdout
    assert ("warning: Pareto k-hat is over 0.7" in shown.stderr) == (written["pareto_k_warning"] is not None)

    few = run_evaluate(run, k=2)
    assert math.isnan(few["log_likelihood_debiased_stderr"]) and math.isfinite(few["log_likelihood_stderr"])
    written = json.loads((run / "evaluation-k2.json").read_text())
    assert written["log_likelihood_debiased_stderr"] is None and written["log_likelihood_interval"] == [None, None]
    assert written["pareto_k"] == {"median": None, "share_over_0.7": None, "points": 0}
    assert written["pareto_k_warning"] is None
    table = Console(width=200, record=True, file=io.StringIO())
    table.print(_evaluation_table(run, few))
    assert "not computed (k < 21)" in table.export_text() and "95%" not in table.export_text()
