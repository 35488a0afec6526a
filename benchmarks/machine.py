"""What the benchmarks record about the machine and the run (the CPU's name, its matrix-product
peak on the benchmark's threads, how busy other processes kept it, versions, times), and how they
write their reports."""

from __future__ import annotations

import fcntl
import json
import os
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import torch

from avi.atomic import atomic_write_bytes

__all__ = [
    "CpuSnapshot",
    "brief_run_facts",
    "cpu_name",
    "cpu_snapshot",
    "folder_lock",
    "machine_facts",
    "matmul_gflops",
    "other_processes_cpus",
    "run_facts",
    "write_report",
]


class CpuSnapshot(NamedTuple):
    """CPU seconds the whole machine spent busy (None without /proc/stat), CPU seconds of this
    process, and the wall clock, at one moment."""

    machine_busy: float | None
    own: float
    wall: float


def _busy_cpu_seconds() -> float | None:
    """CPU time spent busy by the whole machine so far (Linux /proc/stat; steal included)."""
    stat = Path("/proc/stat")
    if not stat.exists():
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> CpuSnapshot:
    return CpuSnapshot(_busy_cpu_seconds(), sum(os.times()[:2]), time.perf_counter())


def other_processes_cpus(since: CpuSnapshot) -> float | None:
    """CPUs kept busy by everything but this process, on average since ``since`` (None where
    the machine's busy time cannot be read). Slowdowns from outside the machine (its host) do
    not show here."""
    now = cpu_snapshot()
    if since.machine_busy is None or now.machine_busy is None:
        return None
    return max(0.0, (now.machine_busy - since.machine_busy) - (now.own - since.own)) / (now.wall - since.wall)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_facts(threads: int) -> dict[str, Any]:
    """The ``machine`` of the long reproductions' reports: torch's version, the threads a run
    was given, the platform, the processor's name and the CPU count."""
    return {"torch": torch.__version__, "threads": threads, "platform": platform.platform(), "cpu": cpu_name(),
            "cpus": os.cpu_count()}  # fmt: skip


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, reps: int = 10) -> float:
    """GFLOP/s of an n x n matrix product on torch's current threads, the best of ``reps``: the
    machine's peak for the day (the host of a shared virtual machine varies by up to 3x), against
    which a benchmark's own products can be judged."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def _utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_facts(started: float) -> dict[str, Any]:
    """The facts that end a report: torch's threads, the torch and Python versions, the processor
    type, the seconds since ``started`` (a ``time.perf_counter()`` reading) and the UTC time."""
    return {
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "seconds": time.perf_counter() - started,
        "timestamp": _utc_now(),
    }


def brief_run_facts() -> dict[str, Any]:
    """The facts that end the reports keeping them as ``machine`` (the Python and torch versions,
    torch's threads) and ``date`` (the UTC time)."""
    return {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "date": _utc_now(),
    }


def write_report(path: Path, report: dict[str, Any], markdown_table: str | None = None) -> None:
    """Write ``report`` to ``path`` as indented JSON, making its folder, and ``markdown_table``
    (when given) beside it with the suffix ``.md``, each atomically (``avi.atomic``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (json.dumps(report, indent=2) + "\n").encode())
    if markdown_table is not None:
        atomic_write_bytes(path.with_suffix(".md"), markdown_table.encode())


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (made if missing) for the block: benchmarks whose
    processes (``--only``) each merge their entries into one shared report read, merge and write
    it under this lock, as they may finish together."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
