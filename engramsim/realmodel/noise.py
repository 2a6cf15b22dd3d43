"""Noise guards: how much of the machine belonged to someone else while a run was timed.

Three readings, all from the kernel, none from our own timers:
  steal         CPU time the hypervisor gave other guests (/proc/stat, `steal`), as a share of
                the machine's CPU time over the run;
  outside load  busy CPU time of the whole machine less our process's own, in cores: other
                processes that compete for the cores, caches and memory bandwidth we use;
  run delay     time the measuring thread was runnable but waited on a run queue
                (/proc/thread-self/schedstat): the direct cost of being descheduled.
A run whose readings pass `NoiseLimits` is noisy; the validation drops its round, and a step
whose own run delay passes the limit is left out of the per-step comparison.

Also here: pinning threads to cores, where the machine has enough of them. Torch-free.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

PROC_STAT = Path("/proc/stat")
THREAD_SCHEDSTAT = Path("/proc/thread-self/schedstat")


@dataclass(frozen=True)
class NoiseLimits:
    """Above any of these a run is noisy. Not fitted: a shared machine's other work shows in
    all three, and a quiet one stays far below them (steal 0%, outside load < 0.1 cores)."""

    max_steal_pct: float = 5.0
    max_outside_cores: float = 0.5
    max_run_delay_pct: float = 5.0  # of the run's (or the step's) wall time


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate `cpu` line of /proc/stat, in seconds."""

    busy_s: float  # user + nice + system + irq + softirq (guest time is inside user)
    idle_s: float  # idle + iowait
    steal_s: float

    @property
    def total_s(self) -> float:
        return self.busy_s + self.idle_s + self.steal_s


def parse_cpu_times(text: str, ticks_per_s: float = 100.0) -> CpuTimes | None:
    """The first `cpu ` line of /proc/stat text, or None when there is none."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            v = [float(x) / ticks_per_s for x in line.split()[1:]] + [0.0] * 8
            user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
            return CpuTimes(busy_s=user + nice + system + irq + softirq, idle_s=idle + iowait, steal_s=steal)
    return None


def read_cpu_times() -> CpuTimes | None:
    try:
        return parse_cpu_times(PROC_STAT.read_text(), os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return None


def thread_run_delay_s() -> float | None:
    """Seconds the calling thread has waited on a run queue since it started, or None where
    the kernel does not say (no schedstat)."""
    try:
        return int(THREAD_SCHEDSTAT.read_text().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class RunNoise:
    wall_s: float
    steal_pct: float | None  # of the machine's CPU time
    outside_cores: float | None  # other processes' busy CPU, mean cores over the run
    run_delay_pct: float | None  # measuring thread's run-queue wait, % of wall
    load_avg_1m: float

    def reasons(self, limits: NoiseLimits) -> list[str]:
        """Why this run is noisy under `limits` (empty when it is quiet)."""
        out = []
        if self.steal_pct is not None and self.steal_pct > limits.max_steal_pct:
            out.append(f"steal {self.steal_pct:.1f}%")
        if self.outside_cores is not None and self.outside_cores > limits.max_outside_cores:
            out.append(f"outside load {self.outside_cores:.2f} cores")
        if self.run_delay_pct is not None and self.run_delay_pct > limits.max_run_delay_pct:
            out.append(f"run-queue wait {self.run_delay_pct:.1f}%")
        return out


def noise_between(
    before: CpuTimes | None,
    after: CpuTimes | None,
    own_cpu_s: float,
    wall_s: float,
    run_delay_s: float | None,
    load_avg_1m: float = 0.0,
) -> RunNoise:
    """The readings of one run from the machine's CPU times at its start and end, our process's
    CPU seconds over the run, and the measuring thread's run-queue wait."""
    steal = outside = None
    if before is not None and after is not None and wall_s > 0:
        total = after.total_s - before.total_s
        steal = 100 * (after.steal_s - before.steal_s) / total if total > 0 else 0.0
        outside = max(after.busy_s - before.busy_s - own_cpu_s, 0.0) / wall_s
    delay = 100 * run_delay_s / wall_s if run_delay_s is not None and wall_s > 0 else None
    return RunNoise(wall_s=wall_s, steal_pct=steal, outside_cores=outside, run_delay_pct=delay, load_avg_1m=load_avg_1m)


class NoiseMeter:
    """`start()` before a run and `stop()` after it, on the measuring thread."""

    def start(self) -> None:
        self._cpu, self._own = read_cpu_times(), time.process_time()
        self._delay, self._wall = thread_run_delay_s(), time.perf_counter()
        self._load = os.getloadavg()[0]

    def stop(self) -> RunNoise:
        wall, own = time.perf_counter() - self._wall, time.process_time() - self._own
        delay_now = thread_run_delay_s()
        delay = delay_now - self._delay if delay_now is not None and self._delay is not None else None
        return noise_between(self._cpu, read_cpu_times(), own, wall, delay, self._load)


def pinning_plan(available: set[int], compute_threads: int) -> tuple[set[int], set[int]] | None:
    """(cores of the compute threads, cores of the prefetch thread), or None when the machine
    has too few cores to give the prefetch thread one of its own."""
    cores = sorted(available)
    if compute_threads < 1 or len(cores) < compute_threads + 1:
        return None
    return set(cores[:compute_threads]), set(cores[compute_threads:])


def pin_this_thread(cores: set[int] | None) -> bool:
    """Pin the calling thread (Linux: pid 0 is the calling thread) to `cores`; False where the
    machine does not allow it."""
    if not cores or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        os.sched_setaffinity(0, cores)
    except OSError:
        return False
    return True


def available_cores() -> set[int]:
    return set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
