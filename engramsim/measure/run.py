"""The benchmark registry and the run loop: progress, partial results on Ctrl-C, the profile.

A benchmark is a generator `fn(ctx)` yielding measured records and skips. `run_profile`
consumes them in order, reports each to `progress`, and returns a Profile; a KeyboardInterrupt
stops the run and returns what was measured, marked partial.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from engramsim.errors import UserError
from engramsim.measure import cpu, import_torch
from engramsim.measure.plan import Context, make_config, skipped
from engramsim.measure.system import gpu_info, host_info


@dataclass(frozen=True)
class Benchmark:
    name: str
    needs_gpu: bool
    run: Callable
    about: str


def _cuda(name):
    def run(ctx):
        from engramsim.measure import cuda

        return getattr(cuda, name)(ctx)

    return run


BENCHMARKS = {
    b.name: b
    for b in [
        Benchmark("dram_gather", False, cpu.dram_gather, "random rows from a host table"),
        Benchmark("memcpy", False, cpu.memcpy, "streaming host copy bandwidth"),
        Benchmark("cpu_matmul", False, cpu.cpu_matmul, "decoder-layer matmuls on all cores"),
        Benchmark("hash", False, cpu.hash_bench, "Engram n-gram hash, ns per token"),
        Benchmark("overlap", False, cpu.overlap, "matmul vs gather interference (CPU; GPU too when present)"),
        Benchmark("ssd_read", False, cpu.ssd_read, "random reads from a scratch file: pread/mmap, cold/warm"),
        Benchmark("cxl", False, cpu.cxl, "dram_gather on a CPU-less NUMA node"),
        Benchmark("hbm_gather", True, _cuda("hbm_gather"), "random rows from a device table"),
        Benchmark("h2d", True, _cuda("h2d"), "host-to-device copies, pinned and pageable"),
        Benchmark("d2h", True, _cuda("d2h"), "device-to-host copies, and both directions at once"),
        Benchmark("uva_gather", True, _cuda("uva_gather"), "GPU kernel gathering rows from mapped host memory"),
        Benchmark("copy_pipeline", True, _cuda("copy_pipeline"), "CPU gather into pinned staging, then H2D"),
        Benchmark("overlap_gpu", True, _cuda("overlap"), "matmul on the main stream vs side-stream copies"),
    ]
}


def select(only: tuple[str, ...] | list[str] | None) -> list[Benchmark]:
    if not only:
        return list(BENCHMARKS.values())
    unknown = [n for n in only if n not in BENCHMARKS]
    if unknown:
        raise UserError(f"unknown benchmark '{unknown[0]}' (known: {', '.join(BENCHMARKS)})")
    return [BENCHMARKS[n] for n in BENCHMARKS if n in only]


def run_profile(
    only=None,
    quick: bool = False,
    scratch: Path | str = ".",
    seed: int = 0,
    progress: Callable[[str, dict | None], None] | None = None,
    config=None,
):
    """Measure the selected benchmarks and return a Profile (partial if interrupted).

    `progress(benchmark_name, record_or_None)` is called when a benchmark starts (None) and for
    each record it yields. Without CUDA the GPU benchmarks are recorded as skipped.
    """
    from engramsim.profile_io import Profile

    benchmarks = select(only)
    torch = import_torch()
    gpu = gpu_info()
    host = host_info(Path(scratch))
    ctx = Context(config or make_config(quick, host["cpu_cores_usable"] or 1), torch, Path(scratch), seed)
    profile = Profile.new(host=host, gpu=gpu, quick=ctx.config.quick)
    started = time.perf_counter()
    try:
        for bench in benchmarks:
            if progress:
                progress(bench.name, None)
            if bench.needs_gpu and gpu is None:
                rec = skipped(bench.name, {}, "no CUDA device: CPU subset only")
                profile.add(rec)
                if progress:
                    progress(bench.name, rec)
                continue
            with contextlib.closing(bench.run(ctx)) as records:  # closing runs its cleanup on Ctrl-C
                for rec in records:
                    profile.add(rec)
                    if progress:
                        progress(bench.name, rec)
    except KeyboardInterrupt:
        profile.partial = True
    profile.host["profile_wall_s"] = round(time.perf_counter() - started, 3)
    return profile
