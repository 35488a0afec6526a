"""The intra-op threads of an ``avi`` process: by default the cores that other processes leave
free, and one line of warning when the threads given oversubscribe a loaded machine.

torch's default, a thread per core, collapses when other processes keep the cores busy: its
threads meet after every parallel operation, so one thread that the scheduler has set aside
holds up the rest. ``avi fit --subset 5000 --epochs 3`` (MNIST) on 2 cores at a load average of
6.4: 123-415 examples/s with torch's default of 2 threads, 5,900-6,200 with 1.
"""

from __future__ import annotations

import os
import time

__all__ = ["busy_cores", "choose_threads", "default_threads", "oversubscription"]

#: seconds over which the CPU time of the other processes is sampled
SAMPLE_SECONDS = 0.2

#: environment variables by which a user has already chosen the threads
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _cpu_times() -> tuple[int, int, int]:
    """(CPUs, idle jiffies, all jiffies) from /proc/stat: idle counts idle and I/O wait."""
    with open("/proc/stat") as f:
        lines = f.read().splitlines()
    times = [int(v) for v in lines[0].split()[1:]]
    cpus = sum(line.startswith("cpu") and line[3:4].isdigit() for line in lines)
    return cpus, times[3] + times[4], sum(times)


def busy_cores() -> tuple[float, int]:
    """(cores busy, cores) of this machine now: the share of CPU time not idle over
    :data:`SAMPLE_SECONDS`, while this process sleeps, times the CPUs (/proc/stat); elsewhere,
    the 1-minute load average. The sample, not the load average, where it can: the load average
    lags a minute, and still counts an ``avi fit`` that has just ended."""
    try:
        cpus, idle, total = _cpu_times()
        time.sleep(SAMPLE_SECONDS)
        _, idle_after, total_after = _cpu_times()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0], os.cpu_count() or 1
    if total_after <= total:
        return 0.0, cpus
    return cpus * (1 - (idle_after - idle) / (total_after - total)), cpus


def _usable_cores() -> int:
    """The cores this process may run on (its affinity, under SLURM or taskset)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_threads(cap: int, busy: float, cores: int) -> int:
    """min(``cap``, the usable cores, the ``cores`` not ``busy`` rounded), at least 1: torch's
    default ``cap`` on an idle machine, 1 on a loaded one."""
    return max(1, min(cap, _usable_cores(), int(cores - busy + 0.5)))


def oversubscription(threads: int, busy: float, cores: int) -> str | None:
    """A one-line warning when ``threads`` > 1 and threads + busy cores exceed the ``cores``
    (beyond the half core that rounding allows), else None."""
    if threads <= 1 or threads + busy <= cores + 0.5:
        return None
    free = max(1, int(cores - busy + 0.5))
    return (
        f"warning: {threads} threads on {cores} cores, {busy:.1f} of them busy with other processes: "
        f"threads will wait on each other; --threads {free} is likely faster"
    )


def choose_threads(threads: int | None, torch_default: int) -> tuple[int, str | None]:
    """The threads of this process and a warning, if any: ``threads`` when given (warned about
    when they oversubscribe); torch's default where OMP_NUM_THREADS or MKL_NUM_THREADS chose it
    (as torchrun does); else :func:`default_threads`. One thread needs no look at the machine."""
    if threads is None and any(os.environ.get(variable) for variable in THREAD_VARIABLES):
        return torch_default, None
    if threads == 1 or (threads is None and torch_default == 1):
        return 1, None
    busy, cores = busy_cores()
    if threads is None:
        return default_threads(torch_default, busy, cores), None
    return threads, oversubscription(threads, busy, cores)
