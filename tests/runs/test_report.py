"""``avi report``: figures, a self-contained HTML page, and its errors; a headless-browser check."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from avi.runs.rundir import run_lock

REPORT_JOB = """
[model]
latent_dim = 2
hidden = [16]
[data]
source = "synthetic"
synthetic_dim = 16
synthetic_points = 400
[train]
epochs = 2
batch_size = 50
threads = 1
"""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from avi.runs.config import load_config
    from avi.runs.train import run_fit

    root = tmp_path_factory.mktemp("report")
    config_path = root / "job.toml"
    config_path.write_text(REPORT_JOB)
    return run_fit(load_config(config_path), root / "run")


def test_report_writes_every_figure_and_an_html_page_with_only_embedded_images(run_avi, finished_run: Path) -> None:
    result = run_avi("report", str(finished_run))
    assert result.returncode == 0, result.stderr
    page = Path(result.stdout.strip())
    assert page == finished_run / "report.html"
    figures = ("curves.png", "reconstructions.png", "samples.png", "latent.png", "kl-per-dimension.png", "collapse.png")
    for name in figures:
        assert (finished_run / name).stat().st_size > 1000, name  # 16 = 4 x 4 image data
    text = page.read_text()
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 6 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "href=" not in text and "<script" not in text  # nothing to fetch, nothing to run
    assert "Metrics by split" in text and "latent_dim" in text
    # what was not computed or drawn, and why: no evaluation, no gaps, no labels
    assert f"log p(x) not computed: run avi evaluate {finished_run}" in _words(text)
    assert f"not drawn: no gaps computed; run avi gaps {finished_run}" in text
    assert "points not coloured by class: the test split has no labels" in text
    assert not (finished_run / "inference-gaps.png").exists()


def test_report_errors_name_the_problem(run_avi, finished_run: Path, tmp_path: Path) -> None:
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    result = run_avi("report", str(not_a_run))
    assert result.returncode == 2 and "is not a run directory" in result.stderr

    no_checkpoint = tmp_path / "no-checkpoint"
    no_checkpoint.mkdir()
    shutil.copy(finished_run / "config.json", no_checkpoint / "config.json")
    result = run_avi("report", str(no_checkpoint))
    assert result.returncode == 2 and "has no checkpoint" in result.stderr

    running = tmp_path / "running"
    shutil.copytree(finished_run, running)
    (running / "summary.json").write_text(json.dumps({"status": "running", "epochs_done": 1, "epochs": 2}))
    with run_lock(running):  # as the avi fit writing it holds it; without, the run was killed (interrupted)
        result = run_avi("report", str(running))
    assert result.returncode == 2 and "still being written" in result.stderr
    for r in (result,):
        assert len(r.stderr.strip().splitlines()) == 1


def test_report_on_an_autoregressive_decoder_draws_samples(run_avi, tmp_path: Path) -> None:
    """A MADE decoder has no closed-form E[x | z]: the image figures show draws instead."""
    from avi.runs.config import load_config
    from avi.runs.train import run_fit

    config = tmp_path / "made.toml"
    config.write_text(
        REPORT_JOB.replace("hidden = [16]", 'hidden = [16]\ndecoder = "made"').replace("epochs = 2", "epochs = 1")
    )
    run = run_fit(load_config(config), tmp_path / "made")
    result = run_avi("report", str(run))
    assert result.returncode == 0, result.stderr
    assert (run / "reconstructions.png").exists() and (run / "samples.png").exists()


def _words(page: str) -> str:
    """The text of an HTML fragment, tags as single spaces: a table row reads "label value"."""
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


KHAT_WARNING = (
    "Pareto k-hat is over 0.7 for 12% of points (median 0.52): the importance weights are too heavy-tailed for a "
    "reliable log p(x); the IWAE value is a lower bound, its debiased value and interval are not to be trusted"
)
#: an evaluation-k50.json as ``avi evaluate --k 50`` writes it: debiased estimate, interval, k-hat and its warning
EVALUATION = {
    "n": 40, "data": "test split", "elbo": -11.4545, "reconstruction": -11.1188, "kl": 0.3357,
    "kl_per_dim": [0.2373, 0.0984], "active_units": 1, "mutual_information": 0.12,
    "checkpoint": "last", "checkpoint_epoch": 2,
    "log_likelihood": -11.1703, "log_likelihood_stderr": 0.0289, "log_likelihood_debiased": -11.1612,
    "log_likelihood_debiased_stderr": 0.0311, "log_likelihood_interval": [-11.2222, -11.1002],
    "stderr_method": "jackknife", "pareto_k": {"median": 0.52, "share_over_0.7": 0.12, "points": 40},
    "pareto_k_warning": KHAT_WARNING, "ess": {"median": 12.5, "min": 1.2}, "sampling_seconds": 0.1,
    "per_point_file": "evaluation-k50-points.csv", "k": 50, "strategy": "amortized", "inference_seconds": 0.01,
    "seconds": 0.1, "precision": "fp32", "processes": 1,
}  # fmt: skip
#: a gaps-*.json as ``avi gaps`` writes it
GAPS = {
    "family": "mean-field", "split": "test", "data": "test split", "n": 40, "log_likelihood": -11.0917,
    "elbo_optimal": -11.1049, "elbo_amortized": -11.4655, "approximation_gap": 0.0132, "amortization_gap": 0.3606,
    "approximation_gap_stderr": 0.0072, "amortization_gap_stderr": 0.0256,
}  # fmt: skip


@pytest.mark.skipif(_chromium() is None, reason="Chromium is not installed (.ci/run installs Debian's chromium)")
def test_report_renders_in_headless_chromium_without_console_errors(
    run_avi, finished_run: Path, tmp_path: Path
) -> None:
    """The page renders offline, opens with the summary of the headline numbers (the
    log-likelihood of the most careful evaluation with k, standard error and k-hat; the ELBO's
    terms; active units with the collapse warning; the gaps), and references nothing outside
    itself."""
    import numpy as np
    from PIL import Image

    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "evaluation-k50.json").write_text(json.dumps(EVALUATION))
    quick = {**EVALUATION, "k": 10, "log_likelihood": -11.3, "log_likelihood_stderr": 0.1}
    (run / "evaluation-k10.json").write_text(json.dumps(quick))  # a quick one: not the headline
    (run / "gaps-mean-field-test.json").write_text(json.dumps(GAPS))
    assert run_avi("report", str(run)).returncode == 0
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]  # fmt: skip
    url = (run / "report.html").resolve().as_uri()
    result = subprocess.run(
        [_chromium(), *flags, f"--screenshot={shot}", "--dump-dom", "--window-size=1200,2400", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert shot.exists(), result.stderr[-2000:]
    console_errors = [line for line in result.stderr.splitlines() if "CONSOLE" in line and "ERROR" in line.upper()]
    assert not console_errors, console_errors
    pixels = np.asarray(Image.open(shot).convert("L"))
    assert len(np.unique(pixels)) > 20  # text, plots and images, not a blank page

    dom = result.stdout  # the page as Chromium parsed it
    summary = _words(dom[dom.index('<div id="summary">') : dom.index("<h2>Training curves</h2>")])
    assert dom.index("<h2>Summary</h2>") < dom.index("<h2>Training curves</h2>")  # the page opens with it
    for headline in (
        "log p(x), IWAE k=50 (test split, 40 points) -11.17 ± 0.029",
        "log p(x), jackknife-debiased -11.16 ± 0.031; 95% interval -11.22 to -11.10 (unreliable: see the k-hat",
        "other evaluations k=10 (test split, 40 points): -11.30 ± 0.1",
        "Pareto k-hat of the importance weights median 0.52; 12.0% of points over 0.7",  # and its warning
        KHAT_WARNING,
        "ELBO (test) -11.45", "reconstruction E_q[log p(x|z)] -11.12", "KL(q(z|x) || p(z)) 0.34",
        "active units (test) 1 of 2", "Partial collapse: 1 of 2 latent dimensions are inactive",
        "approximation 0.013 ± 0.0072, amortization 0.361 ± 0.026",
    ):  # fmt: skip
        assert headline in summary, headline
    for page in (dom, (run / "report.html").read_text()):
        assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.IGNORECASE)
        assert "url(" not in page and "@import" not in page
    assert (run / "inference-gaps.png").is_file()
    # the metrics tables hold numbers: the evaluation's strings are settings, its warning a note
    metrics = dom[dom.index("<h2>Metrics by split</h2>") : dom.index("<h2>Configuration</h2>")]
    table = _words(metrics[: metrics.index("</table>")])
    assert "pareto_k_median 0.52" in table and "log_likelihood_interval_low -11.22" in table
    for setting in ("stderr_method", "pareto_k_warning", "per_point_file", "strategy", "precision"):
        assert setting not in table, setting
    assert "stderr_method jackknife" in _words(metrics) and f"test: {KHAT_WARNING}" in _words(metrics)


def test_a_model_that_cannot_draw_images_gets_notes_instead_of_figures(finished_run: Path, monkeypatch) -> None:
    """Square (4 x 4) data, but the likelihood has no mean and the model no sample_data: the
    page says why the image figures are missing, and the other figures are there."""
    from avi.runs import report as report_module
    from avi.runs.load import load_trained
    from tests.runs.user_posterior import DrawlessModel

    trained = load_trained(finished_run)
    drawless = dataclasses.replace(trained, model=DrawlessModel(trained.model))
    monkeypatch.setattr(report_module, "load_trained", lambda run_dir: drawless)
    for name in ("reconstructions.png", "samples.png"):
        (finished_run / name).unlink(missing_ok=True)
    text = report_module.run_report(finished_run).read_text()
    assert text.count("not drawn: the likelihood has no mean and the model no sample_data") == 2
    assert not (finished_run / "reconstructions.png").exists() and not (finished_run / "samples.png").exists()
    assert (finished_run / "latent.png").is_file() and (finished_run / "curves.png").is_file()


@pytest.fixture(scope="module")
def flat_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run on 12-dimensional data: not an image."""
    from avi.runs.config import load_config
    from avi.runs.train import run_fit
    from tests.runs.conftest import small_job

    root = tmp_path_factory.mktemp("flat")
    (root / "job.toml").write_text(small_job(epochs=1, points=300))
    return run_fit(load_config(root / "job.toml"), root / "run")


def test_report_of_a_user_posterior_on_non_image_data(flat_run: Path, monkeypatch) -> None:
    """A Posterior subclass of the user's own: its q gives the latent view; 12-dimensional data
    has no image figures; the page names the model, strategy and family."""
    from avi.runs import report as report_module
    from avi.runs.load import load_trained
    from tests.runs.user_posterior import UserPosterior

    trained = load_trained(flat_run)
    posterior = UserPosterior(12, 2)
    user_run = dataclasses.replace(trained, posterior=posterior)
    monkeypatch.setattr(report_module, "load_trained", lambda run_dir: user_run)
    text = report_module.run_report(flat_run).read_text()
    assert posterior.calls > 0
    assert "model vae, amortized inference, mean-field family" in text
    assert "Reconstructions" not in text and "Samples from the prior" not in text
    assert "not drawn: reconstructions and samples need square images; the data are 12-dimensional" in text
    assert not (flat_run / "reconstructions.png").exists() and (flat_run / "latent.png").is_file()
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 4  # curves, latent space, KL per dim, collapse


def test_metrics_are_grouped_by_split_with_the_headline_rows_first() -> None:
    from avi.runs.report_tables import metrics_by_split, metrics_table

    last = {"epoch": 3, "train_objective": -9.0, "train_elbo": -9.1, "train_kl": 1.0, "val_elbo": -9.2,
            "val_kl": 1.1, "wall_seconds": 2.5, "kl_dim_0": 0.7, "kl_dim_1": 0.3, "active_units": 2,
            "mutual_information": 0.4}  # fmt: skip
    evaluation = {"n": 40, "k": 50, "elbo": -9.3, "log_likelihood": -9.0, "kl_per_dim": [0.6, 0.4], "khat_median": 0.3}
    groups = metrics_by_split(last, evaluation)
    assert groups["train"] == {"objective": -9.0, "elbo": -9.1, "kl": 1.0}
    assert groups["validation"] == {"elbo": -9.2, "kl": 1.1, "active_units": 2, "mutual_information": 0.4}
    assert groups["test"] == {"elbo": -9.3, "log_likelihood": -9.0, "khat_median": 0.3}
    assert groups["run"] == {"epoch": 3, "wall_seconds": 2.5}
    assert groups["evaluation"] == {"n": 40, "k": 50} and groups["notes"] == {}
    header, rows = metrics_table(groups)
    assert header == ["metric", "train", "validation", "test"]
    assert [name for name, _ in rows] == [
        "elbo", "kl", "objective", "log_likelihood", "active_units", "mutual_information", "khat_median",
    ]  # fmt: skip
    assert rows[3] == ("log_likelihood", ["", "", "-9"])
    assert metrics_table(metrics_by_split(last, {}))[0] == ["metric", "train", "validation"]  # no empty test column

    real = metrics_by_split(last, EVALUATION)  # as avi evaluate writes it: strings, a dict, an interval
    assert real["notes"] == {"pareto_k_warning": KHAT_WARNING}
    assert all(isinstance(v, (int, float)) for v in real["test"].values()), real["test"]
    assert {"stderr_method": "jackknife", "per_point_file": "evaluation-k50-points.csv"}.items() <= real[
        "evaluation"
    ].items()
    assert {"log_likelihood_interval_low": -11.2222, "log_likelihood_interval_high": -11.1002, "pareto_k_median": 0.52,
            "pareto_k_share_over_0.7": 0.12, "ess_min": 1.2}.items() <= real["test"].items()  # fmt: skip
    assert "checkpoint_epoch" in real["evaluation"] and not any(k.startswith("kl_per_dim") for k in real["test"])
    quiet = metrics_by_split(last, {**EVALUATION, "pareto_k_warning": None})
    assert quiet["notes"] == {} and "pareto_k_warning" not in quiet["evaluation"]


def test_config_is_shown_as_a_table_per_section_marking_what_differs_from_the_defaults() -> None:
    from avi.runs.config import Config
    from avi.runs.report_tables import config_sections, table_html

    config = Config.model_validate({"model": {"latent_dim": 2, "hidden": [16]}, "train": {"lr": 0.01}})
    sections = dict(config_sections(config.model_dump(), Config().model_dump()))
    assert list(sections) == list(Config.model_fields)  # model, data, inference, ...
    model = {key: (value, changed) for key, value, changed in sections["model"]}
    assert model["latent_dim"] == ("2", True) and model["hidden"] == ("[16]", True)
    assert model["activation"] == ("relu", False) and model["preset"] == ("unset", False)
    assert ("lr", "0.01", True) in sections["train"] and ("compile", "false", False) in sections["train"]
    page = table_html(None, [("latent_dim", ["2"]), ("activation", ["relu"])], caption="model", bold={"latent_dim"})
    assert '<caption>model</caption><tr class="changed"><th>latent_dim</th><td class="num">2</td>' in page
    assert "<tr><th>activation</th><td>relu</td></tr>" in page


@pytest.mark.parametrize(
    ("entries", "shown", "warned"),
    [
        ({}, "not computed", False),
        ({"khat_median": 0.4, "khat_share_over": 0.01}, "median 0.40; 1.0% of points over 0.7", False),
        ({"pareto_k": {"median": 0.9, "fraction_over": 0.6, "points": 40}}, "median 0.90; 60.0% of points over", True),
        ({"pareto_k_max": 1.2}, "pareto_k_max 1.2", False),  # a summary it cannot read: shown as it is
        ({"khat": [0.1, 0.9, None, 0.3, 0.2]}, "median 0.25; 25.0% of points over 0.7", True),  # per point
        (  # k < 21: no point has a tail to fit
            {"pareto_k": {"median": None, "share_over_0.7": 0.0, "points": 0}, "pareto_k_warning": None},
            "not computed: no point had weights enough to fit a tail (k < 21)",
            False,
        ),
    ],
)
def test_summary_reads_whatever_khat_entries_the_evaluation_has(entries: dict, shown: str, warned: bool) -> None:
    from avi.runs.report_tables import summary

    rows = [{"epoch": 2, "wall_seconds": 1.0, "val_elbo": -9.0, "val_reconstruction": -8.0, "val_kl": 1.0}]
    evaluation = {"elbo": -9.2, "log_likelihood": -9.0, **entries}  # no standard error: an older evaluation
    head = summary(rows, [evaluation], [], run="runs/x", status="finished", latent_dim=2)
    cells = dict(head.rows)
    assert cells["Pareto k-hat of the importance weights"].startswith(shown)
    assert any("too heavy-tailed" in w for w in head.warnings) == warned
    assert cells["log p(x), IWAE k=? (test split)"] == "-9.00 (standard error not computed)"
    assert cells["inference gaps"] == "not computed: run avi gaps runs/x"
    assert cells["active units"] == "not computed: the run recorded no collapse diagnostics"


def test_summary_shows_the_debiased_estimate_with_its_interval_marked_unreliable_where_khat_warns() -> None:
    from avi.runs.report_tables import summary

    rows = [{"epoch": 2, "wall_seconds": 1.0, "val_elbo": -9.0, "val_reconstruction": -8.0, "val_kl": 1.0}]
    head = summary(rows, [EVALUATION], [], run="runs/x", status="finished", latent_dim=2)
    cells = dict(head.rows)
    assert cells["log p(x), IWAE k=50 (test split, 40 points)"] == "-11.17 ± 0.029"
    debiased = "-11.16 ± 0.031; 95% interval -11.22 to -11.10"
    assert cells["log p(x), jackknife-debiased"] == debiased + " (unreliable: see the k-hat warning)"
    assert cells["Pareto k-hat of the importance weights"] == "median 0.52; 12.0% of points over 0.7"
    assert KHAT_WARNING in head.warnings
    reliable = {**EVALUATION, "pareto_k": {"median": 0.3, "share_over_0.7": 0.02, "points": 40}}
    reliable["pareto_k_warning"] = None
    head = summary(rows, [reliable], [], run="runs/x", status="finished", latent_dim=2)
    assert dict(head.rows)["log p(x), jackknife-debiased"] == debiased and head.warnings == [
        "Partial collapse: 1 of 2 latent dimensions are inactive (Cov_x E_q[z_k|x] <= 0.01): they carry no "
        "information about x."
    ]
    tiny = {**reliable, "log_likelihood_debiased_stderr": None, "log_likelihood_interval": [None, None]}  # k < 3
    assert (
        dict(summary(rows, [tiny], [], run="x", status="finished", latent_dim=2).rows)["log p(x), jackknife-debiased"]
        == "-11.16 (standard error not computed)"
    )
    best = {**reliable, "checkpoint": "best", "checkpoint_epoch": 7}  # avi evaluate --checkpoint best
    cells = dict(summary(rows, [best], [], run="x", status="finished", latent_dim=2).rows)
    assert cells["log p(x), IWAE k=50 (test split, 40 points, best checkpoint, epoch 7)"] == "-11.17 ± 0.029"


def test_summary_counts_the_flow_layers_in_use_and_warns_of_those_that_only_shift_q() -> None:
    from avi.runs.report_tables import summary

    rows = [{"epoch": 2, "wall_seconds": 1.0, "val_elbo": -9.0, "val_reconstruction": -8.0, "val_kl": 1.0}]
    flow = {**EVALUATION, "pareto_k": {"median": 0.3, "share_over_0.7": 0.02, "points": 40}, "pareto_k_warning": None,
            "kl_per_dim": [0.2, 0.3], "active_units": 2, "flow_layer_reshaping": [0.4, 3e-5, 0.02, 0.0]}  # fmt: skip
    head = summary(rows, [flow], [], run="runs/x", status="finished", latent_dim=2)
    assert dict(head.rows)["flow layers in use (test)"] == "2 of 4 (reshaping q by more than 0.0001)"
    assert head.warnings == [
        "2 of 4 flow layers (number 2, 4) reshape q by at most 0.0001 (E tr Cov of their displacement over E tr "
        "Cov of their input): each only shifts q's mean. Centred layers (inference.flow_centred = true) keep "
        "them inside q's mass."
    ]
    alive = summary(rows, [{**flow, "flow_layer_reshaping": [0.5, 0.2]}], [], run="x", status="finished", latent_dim=2)
    assert dict(alive.rows)["flow layers in use (test)"].startswith("2 of 2") and alive.warnings == []
    other = summary(rows, [{**flow, "flow_layer_reshaping": None}], [], run="x", status="finished", latent_dim=2)
    assert "flow layers in use (test)" not in dict(other.rows) and other.warnings == []


def test_summary_without_an_evaluation_uses_validation_and_warns_of_collapse() -> None:
    from avi.runs.report_tables import summary

    rows = [{"epoch": 4, "wall_seconds": 12.0, "val_elbo": -90.0, "val_reconstruction": -89.9, "val_kl": 0.1,
             "kl_dim_0": 0.05, "kl_dim_1": 0.05, "kl_dim_2": 0.0, "active_units": 0}]  # fmt: skip
    head = summary(rows, [], [], run="runs/x", status="interrupted", latent_dim=3)
    cells = dict(head.rows)
    assert cells["training"] == "interrupted after 4 epochs, 12 s"
    assert cells["log p(x)"] == "not computed: run avi evaluate runs/x"
    assert cells["Pareto k-hat of the importance weights"] == "not computed"
    assert cells["ELBO (validation, epoch 4)"] == "-90.00" and cells["KL(q(z|x) || p(z))"] == "0.10"
    assert cells["active units (validation, epoch 4)"] == "0 of 3"
    assert len(head.warnings) == 1 and head.warnings[0].startswith("Posterior collapse: none of the 3 latent")


def test_summary_warns_where_the_training_objective_got_worse() -> None:
    """A training objective that peaks at epoch 10 and sinks by 0.1 nats an epoch after it draws
    the warning avi fit prints; the same epochs still climbing, or sinking by less than the
    tolerance of a run that sets it wide, do not."""
    from avi.runs.config import TrainConfig
    from avi.runs.report_tables import summary
    from avi.runs.train import WORSENED

    def rows(objectives: list[float]) -> list[dict]:
        return [{"epoch": e, "wall_seconds": 1.0, "val_elbo": -9.0, "val_reconstruction": -8.0, "val_kl": 1.0,
                 "train_objective": v, "kl_weight": 1.0} for e, v in enumerate(objectives, 1)]  # fmt: skip

    peaked = [-100.0 + e for e in range(10)] + [-91.0 - 0.1 * e for e in range(1, 21)]
    head = summary(rows(peaked), [], [], run="runs/x", status="finished", latent_dim=2)
    assert WORSENED in head.warnings
    climbing = [-100.0 + 0.1 * e for e in range(30)]
    assert WORSENED not in summary(rows(climbing), [], [], run="x", status="finished", latent_dim=2).warnings
    wide = TrainConfig(lr_tolerance=0.05)  # 0.05 x 91.3 = 4.6 nats: the windows' 1.5-nat fall is within it
    assert WORSENED not in summary(rows(peaked), [], [], run="x", status="finished", latent_dim=2, train=wide).warnings


def test_latent_plot_has_a_legend_per_class_outside_the_axes_and_labelled_axes() -> None:
    import torch

    from avi.runs.report_figures import latent_figure

    means = torch.randn(300, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([3.0, 2.0, 1, 1, 1])
    fig, method = latent_figure(means, torch.arange(300) % 10)
    assert method == "PCA of posterior means" and len(fig.axes) == 1  # no colour bar
    ax = fig.axes[0]
    shares = [
        float(re.search(r"\((\d+\.\d)% of variance\)", label).group(1)) for label in (ax.get_xlabel(), ax.get_ylabel())
    ]
    assert shares[0] >= shares[1] > 0 and sum(shares) < 100
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [str(c) for c in range(10)]
    assert len({tuple(c.get_facecolor()[0]) for c in ax.collections}) == 10  # a colour per class
    fig.canvas.draw()
    inside = ax.get_window_extent()
    assert legend.get_window_extent().x0 >= inside.x1  # right of the axes: it covers no point

    fig, _ = latent_figure(means[:, :2], torch.linspace(0, 1, 300))  # 300 values: continuous
    assert (fig.axes[0].get_xlabel(), fig.axes[0].get_ylabel()) == ("E_q[z_1]", "E_q[z_2]") and len(fig.axes) == 2


def test_gaps_figure_draws_95_percent_intervals() -> None:
    from matplotlib.container import BarContainer

    from avi.runs.report_figures import gaps_figure

    old = {**GAPS, "family": "full-rank"}
    del old["approximation_gap_stderr"], old["amortization_gap_stderr"]  # saved before gaps had standard errors
    ax = gaps_figure([GAPS, old]).axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    approximation, amortization = (c.errorbar.lines[2][0].get_segments() for c in bars)
    assert [s[1, 1] - s[0, 1] for s in approximation] == pytest.approx([2 * 1.96 * 0.0072, 0])
    assert [s[1, 1] - s[0, 1] for s in amortization] == pytest.approx([2 * 1.96 * 0.0256, 0])
