"""Time a call repeatedly: warm up, repeat within a time budget, keep median and p10/p90.

The repeat logic is the same on every device; only the `Timer` differs. `PerfTimer` wraps a
call in `time.perf_counter`; `CudaTimer` records CUDA events around it on the current stream
and synchronizes, so GPU work is timed on the device, not by the host's launch latency.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Stats:
    median_s: float
    p10_s: float
    p90_s: float
    n: int


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of an already sorted list."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(times: list[float]) -> Stats:
    values = sorted(times)
    return Stats(percentile(values, 50), percentile(values, 10), percentile(values, 90), len(values))


class PerfTimer:
    """Wall time of a host call (CPU work, or device work the call itself waits for)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, sync: Callable[[], object] | None = None):
        self.clock = clock
        self.sync = sync  # e.g. torch.cuda.synchronize: wait for the device work fn enqueued

    def __call__(self, fn: Callable[[], object]) -> float:
        start = self.clock()
        fn()
        if self.sync:
            self.sync()
        return self.clock() - start


class CudaTimer:
    """Device time of the work `fn` enqueues on the current CUDA stream (events + sync)."""

    def __init__(self, torch, stream=None):
        self.torch = torch
        self.stream = stream  # None: the current stream

    def __call__(self, fn: Callable[[], object]) -> float:
        cuda = self.torch.cuda
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record(self.stream)
        fn()
        end.record(self.stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def measure(
    fn: Callable[[], object],
    timer: Callable,
    *,
    warmup: int = 1,
    repeats: int = 5,
    budget_s: float = 1.0,
    setup: Callable[[], object] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Stats:
    """Run `fn` `warmup` times untimed, then up to `repeats` timed runs, stopping early once
    `budget_s` of wall time has passed (at least one timed run always happens). `setup`, if
    given, runs untimed before every call (e.g. dropping the page cache for a cold read)."""
    deadline = clock() + budget_s
    for _ in range(warmup):
        if setup:
            setup()
        fn()
        if clock() > deadline:
            break
    times = []
    while len(times) < max(1, repeats):
        if setup:
            setup()
        times.append(timer(fn))
        if clock() > deadline:
            break
    return summarize(times)
