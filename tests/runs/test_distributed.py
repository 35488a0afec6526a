"""Data-parallel training on two gloo processes on loopback, started the way torchrun starts them
(its environment variables, one interpreter per rank), against a single process."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from avi.evaluation.bounds import elbo_per_point
from avi.inference import LocalPosterior
from avi.runs import distributed
from avi.runs.train import load_trained
from tests.runs.ddp_worker import KL_DIMS, SIGNAL

WORKER = Path(__file__).with_name("ddp_worker.py")
TIMEOUT = 240  # seconds for a whole multi-process run: a hang fails the test instead of the suite


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The variables torchrun sets for one process of a standalone run."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "AVI_DIST_TIMEOUT": "120",
    }


def run_ranks(args: list[str], world_size: int = 2) -> list[subprocess.CompletedProcess[str]]:
    """Run ``python ARGS`` as ranks 0..world_size-1 of one process group; all must finish in time."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, *args], env=rank_env(r, world_size, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for r in range(world_size)
    ]
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=TIMEOUT)
            results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def run_single(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)


@pytest.mark.parametrize("strategy", ["amortized", "per-datapoint", "free-bits", "compiled"])
def test_two_ranks_match_one_process(tmp_path: Path, strategy: str) -> None:
    """Two epochs of 53 points in global batches of 8 (the last, of 5, split 3 + 2): the
    parameters and per-epoch objectives of the 2-rank run equal the single-process run's. With
    free bits (amortized) the clamped dimensions follow the KL of the global batch; compiled
    (``torch.compile`` of the DDP-wrapped step, as ``avi fit --compile`` under torchrun), DDP
    still averages the gradients of the compiled graph."""
    single = run_single([str(WORKER), strategy, str(tmp_path / "single.pt")])
    assert single.returncode == 0, single.stderr
    ranks = run_ranks([str(WORKER), strategy, str(tmp_path / "rank{rank}.pt")])
    for result in ranks:
        assert result.returncode == 0, result.stderr
    reference = torch.load(tmp_path / "single.pt")
    for r in range(2):
        state = torch.load(tmp_path / f"rank{r}.pt")
        assert state["objective"] == pytest.approx(reference["objective"], rel=1e-5)
        for part in ("model", "posterior"):
            assert state[part].keys() == reference[part].keys()
            for name, value in reference[part].items():
                torch.testing.assert_close(state[part][name], value, rtol=1e-4, atol=1e-5, msg=f"{part}.{name}")


def test_two_ranks_keep_one_control_variate(tmp_path: Path) -> None:
    """NVIL on two ranks that start from different weights: DDP averages the gradients of the
    baseline network b(x) and its moving average follows the global batch, so both ranks end
    with the same baseline (each fits its own shards without the sync), through a last batch
    of one point (padded to one per rank). A moving average fed each rank's part of a signal
    (3 + 4 columns) holds the mean of the whole signal; so do batch means of KL rows split
    3 + 4 and 7 + 0."""
    for result in run_ranks([str(WORKER), "nvil", str(tmp_path / "rank{rank}.pt")]):
        assert result.returncode == 0, result.stderr
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert first["baseline"].keys() == second["baseline"].keys()
    for name, value in first["baseline"].items():
        torch.testing.assert_close(second["baseline"][name], value, rtol=0, atol=0, msg=name)
    assert first["average"].item() == second["average"].item() == SIGNAL.mean().item()
    for state in (first, second):
        torch.testing.assert_close(state["kl_mean"], KL_DIMS.mean(0), rtol=0, atol=0)
        torch.testing.assert_close(state["kl_mean_one_rank"], KL_DIMS.mean(0), rtol=0, atol=0)


def test_shutdown_frees_dropped_ddp_wrappers_before_the_group_ends(monkeypatch) -> None:
    """A DistributedDataParallel wrapper can live in a reference cycle (in a fresh process it
    does), its reducer holding the process group: dropped, it outlives its last reference until
    the cyclic collector runs, which at exit may be in interpreter finalization (a rank aborted
    there once, after training). ``shutdown`` collects it before ``destroy_process_group``: here
    a wrapper put in a cycle of its own, so the test does not hang on DDP's internals, with the
    collector off, as between two of its passes, in a one-rank gloo group made in this process."""
    import gc
    import weakref

    import torch.distributed as dist

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    dist.init_process_group("gloo", rank=0, world_size=1)
    enabled = gc.isenabled()
    gc.disable()
    try:
        ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2))
        ddp(torch.randn(4, 3)).sum().backward()
        ddp.cycle = [ddp]  # type: ignore[assignment]
        dropped = weakref.ref(ddp)
        del ddp
        assert dropped() is not None  # the cycle keeps it: only the collector frees it
        distributed.shutdown()
        assert dropped() is None and not dist.is_initialized()
    finally:
        if enabled:
            gc.enable()
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize(("n", "block", "size"), [(60, 1, 2), (60, 16, 2), (61, 7, 3), (5, 4, 3), (1000, 1000, 4)])
def test_shards_are_whole_blocks_covering_every_item(monkeypatch, n: int, block: int, size: int) -> None:
    monkeypatch.setattr(distributed, "world_size", lambda: size)
    shards = []
    for r in range(size):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        shards.append(distributed.shard(n, block))
    assert [i for rows in shards for i in rows] == list(range(n))  # contiguous, disjoint, in order
    assert all(rows.start % block == 0 for rows in shards if len(rows))
    if block == 1:  # items split as evenly as they can be
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def fit_args(config: Path, *args: str) -> list[str]:
    return ["-m", "avi", "fit", str(config), *args]


def test_two_rank_checkpoint_resumes_in_one_process_and_back(tmp_path: Path, small_config) -> None:
    """``avi fit`` on two ranks writes the run directory of a single-process run (rank 0 only);
    either kind of run resumes the other's checkpoint."""
    config = small_config(epochs=2)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    ranks = run_ranks(fit_args(config, "--out", str(parallel)))
    for result in ranks:
        assert result.returncode == 0, result.stderr
    assert ranks[0].stdout.strip() == str(parallel) and ranks[1].stdout == ""  # rank 0 alone reports
    assert run_single(fit_args(config, "--out", str(single))).returncode == 0
    assert sorted(p.name for p in parallel.iterdir()) == sorted(p.name for p in single.iterdir())
    ours, theirs = torch.load(parallel / "checkpoint.pt", weights_only=False), torch.load(single / "checkpoint.pt", weights_only=False)
    assert ours.keys() == theirs.keys() and ours["epoch"] == 2
    assert {k: v.shape for k, v in ours["model"].items()} == {k: v.shape for k, v in theirs["model"].items()}
    assert [row["epoch"] for row in ours["metrics"]] == [1, 2]

    resumed = run_single(["-m", "avi", "fit", "--resume", str(parallel), "--epochs", "3"])
    assert resumed.returncode == 0, resumed.stderr
    assert torch.load(parallel / "checkpoint.pt", weights_only=False)["epoch"] == 3
    for result in run_ranks(["-m", "avi", "fit", "--resume", str(single), "--epochs", "3"]):
        assert result.returncode == 0, result.stderr
    state = torch.load(single / "checkpoint.pt", weights_only=False)
    assert state["epoch"] == 3 and len(state["metrics"]) == 3
    assert all(torch.isfinite(v).all() for v in state["model"].values())


@pytest.mark.parametrize("strategy", ["amortized", "per-datapoint"])
def test_two_ranks_split_the_validation(tmp_path: Path, small_config, strategy: str) -> None:
    """Each rank scores its half of the validation points and the sums are all-reduced: the
    2-rank run's validation ELBO and one process's 20-draw estimate on all points, with the
    checkpoint's weights, estimate the same mean, so they differ by under 5 standard errors
    (per-point noise variances from the 20 draws). A per-datapoint run's checkpoint holds the
    whole validation table, both halves refined."""
    run = tmp_path / "run"
    for result in run_ranks(fit_args(small_config(epochs=1), "--strategy", strategy, "--out", str(run))):
        assert result.returncode == 0, result.stderr
    trained = load_trained(run)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    validation, posterior = trained.splits.validation, trained.posterior
    n, half = len(validation), len(validation) // 2
    if strategy == "per-datapoint":
        family = posterior.family
        table, initial = state["validation_params"], family.initial_params(n)
        assert table.shape == initial.shape
        assert (table[:half] != initial[:half]).any(dim=1).all() and (table[half:] != initial[half:]).any(dim=1).all()
        posterior = LocalPosterior(n, family, initial=table)
    torch.manual_seed(0)
    draws = torch.stack([elbo_per_point(trained.model, posterior, validation)[0] for _ in range(20)]).double()
    noise = draws.var(dim=0).sum().item() / n**2  # the variance of one estimate of the mean
    stderr = math.sqrt(noise * (1 + 1 / 20))
    assert stderr > 0
    assert abs(state["metrics"][-1]["val_elbo"] - draws.mean().item()) < 5 * stderr


def test_world_size_must_divide_the_batch(tmp_path: Path, small_config) -> None:
    """Checked before any rendezvous: one process alone fails at once, with one line."""
    env = rank_env(0, 2, free_port())
    result = subprocess.run(
        [sys.executable, *fit_args(small_config(), "--batch-size", "51", "--out", str(tmp_path / "run"))],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "error: batch size 51 is not divisible by the world size 2"


def test_missing_rendezvous_variable(tmp_path: Path, small_config) -> None:
    env = rank_env(0, 2, free_port())
    del env["MASTER_PORT"]
    result = subprocess.run(
        [sys.executable, *fit_args(small_config(), "--out", str(tmp_path / "run"))],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "MASTER_PORT missing" in result.stderr


def test_resuming_an_incompatible_checkpoint_is_one_line(tmp_path: Path, small_config) -> None:
    """A run whose config no longer matches its checkpoint (here: another hidden layer size)."""
    run = tmp_path / "run"
    assert run_single(fit_args(small_config(epochs=1), "--out", str(run))).returncode == 0
    config = json.loads((run / "config.json").read_text())
    config["model"]["hidden"] = [8]
    (run / "config.json").write_text(json.dumps(config))
    result = run_single(["-m", "avi", "fit", "--resume", str(run), "--epochs", "2"])
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "does not match its config" in result.stderr
