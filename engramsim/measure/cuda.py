"""GPU benchmarks: hbm_gather, h2d / d2h (pinned, pageable, both at once), uva_gather,
copy_pipeline and overlap on the GPU.

Device tensors and CUDA timers are the only CUDA-specific parts. The sweeps reuse the CPU
code (`cpu.run_gather`), and `link_copies` / `pipeline_points` take any tensors, timers and
sync, so tests drive them with CPU tensors and `PerfTimer`. torch arrives through the context;
this module imports no torch itself.
"""

from __future__ import annotations

from engramsim.measure.cpu import host_budget, run_gather, single_threaded_pool, threaded, time_point
from engramsim.measure.plan import MiB, gather_points, memory_budget, record, sizes_within, skipped
from engramsim.measure.timing import CudaTimer, PerfTimer, summarize

CUDA_HOST_REGISTER_PORTABLE, CUDA_HOST_REGISTER_MAPPED = 1, 2


def device_budget(ctx) -> int:
    free, _total = ctx.torch.cuda.mem_get_info()
    return memory_budget(free, ctx.config.memory_margin_bytes, ctx.config.memory_fraction)


def hbm_gather(ctx):
    """Random rows (uniform and Zipf) from a device table, against table size, row bytes and
    rows per call, timed with CUDA events."""
    torch, cfg = ctx.torch, ctx.config
    sizes = yield from sizes_within("hbm_gather", cfg.table_bytes, device_budget(ctx), "HBM")
    if not sizes:
        return
    table = torch.ones(max(sizes), dtype=torch.uint8, device="cuda")
    yield from run_gather(
        ctx, "hbm_gather", table, list(gather_points(cfg, sizes, threads=(1,))), timer=CudaTimer(torch)
    )


def link_copies(ctx, name: str, memory: str, host, dev, sizes, timer):
    """Copies of each size between the prefixes of `host` and `dev` (direction from `name`)."""
    for size in sizes:
        h, d = host[:size], dev[:size]
        fn = (lambda: d.copy_(h, non_blocking=True)) if name == "h2d" else (lambda: h.copy_(d, non_blocking=True))
        yield record(name, {"memory": memory, "bytes": size}, time_point(ctx, fn, timer), bytes=size)


def _link_sizes(ctx, name: str, buffers: int = 1):
    budget = min(host_budget(ctx), device_budget(ctx)) // buffers
    return (yield from sizes_within(name, ctx.config.link_bytes, budget, "host and device memory", key="bytes"))


def _copies(ctx, name: str):
    torch = ctx.torch
    sizes = yield from _link_sizes(ctx, name)
    if not sizes:
        return
    dev = torch.ones(max(sizes), dtype=torch.uint8, device="cuda")
    for memory in ("pinned", "pageable"):
        host = torch.ones(max(sizes), dtype=torch.uint8, pin_memory=memory == "pinned")
        # Pinned copies are asynchronous: CUDA events time the DMA. Pageable copies stage through
        # a driver buffer on the host: time them end to end on the host clock.
        timer = CudaTimer(torch) if memory == "pinned" else PerfTimer(sync=torch.cuda.synchronize)
        yield from link_copies(ctx, name, memory, host, dev, sizes, timer)
        del host


def h2d(ctx):
    """Host-to-device copies, pinned and pageable, 4 KiB up to 1 GiB."""
    yield from _copies(ctx, "h2d")


def d2h(ctx):
    """Device-to-host copies, pinned and pageable; then both directions at once (pinned), as
    `h2d_d2h` whose bytes count both directions."""
    yield from _copies(ctx, "d2h")
    torch = ctx.torch
    sizes = yield from _link_sizes(ctx, "h2d_d2h", buffers=2)
    if not sizes:
        return
    n = max(sizes)
    host_in, host_out = (torch.ones(n, dtype=torch.uint8, pin_memory=True) for _ in range(2))
    dev_in, dev_out = (torch.ones(n, dtype=torch.uint8, device="cuda") for _ in range(2))
    up, down = torch.cuda.Stream(), torch.cuda.Stream()
    torch.cuda.synchronize()
    for size in sizes:

        def both():
            with torch.cuda.stream(up):
                dev_in[:size].copy_(host_in[:size], non_blocking=True)
            with torch.cuda.stream(down):
                host_out[:size].copy_(dev_out[:size], non_blocking=True)

        stats = time_point(ctx, both, PerfTimer(sync=torch.cuda.synchronize))
        yield record("h2d_d2h", {"memory": "pinned", "bytes": size}, stats, bytes=2 * size)


class _CudaArray:
    """A bare `__cuda_array_interface__` over a device-visible pointer, for torch.as_tensor."""

    def __init__(self, ptr: int, nbytes: int):
        self.__cuda_array_interface__ = {
            "shape": (nbytes,),
            "typestr": "|u1",
            "data": (ptr, False),
            "version": 3,
            "strides": None,
        }


def mapped_view(torch, host):
    """Register `host` (a CPU byte tensor) with cudaHostRegister(mapped) through
    torch.cuda.cudart(), and return a CUDA tensor over the same memory (zero-copy). With
    unified addressing the device pointer of registered memory is the host pointer."""
    cudart = torch.cuda.cudart()
    torch.cuda.check_error(
        cudart.cudaHostRegister(host.data_ptr(), host.numel(), CUDA_HOST_REGISTER_PORTABLE | CUDA_HOST_REGISTER_MAPPED)
    )
    try:
        return torch.as_tensor(_CudaArray(host.data_ptr(), host.numel()), device="cuda")
    except Exception:
        cudart.cudaHostUnregister(host.data_ptr())
        raise


def uva_gather(ctx):
    """A GPU kernel (index_select) gathering rows in place from registered host memory, against
    table size, row bytes and rows per call, timed with CUDA events."""
    torch, cfg = ctx.torch, ctx.config
    sizes = yield from sizes_within("uva_gather", cfg.table_bytes, host_budget(ctx), "host memory")
    if not sizes:
        return
    host = torch.ones(max(sizes), dtype=torch.uint8)
    try:
        view = mapped_view(torch, host)
    except Exception as e:
        yield skipped("uva_gather", {}, f"cannot map host memory for zero-copy reads: {e}")
        return
    try:
        yield from run_gather(
            ctx, "uva_gather", view, list(gather_points(cfg, sizes, threads=(1,))), timer=CudaTimer(torch)
        )
    finally:
        torch.cuda.synchronize()
        del view
        torch.cuda.cudart().cudaHostUnregister(host.data_ptr())


def pipeline_points(ctx, rows2d, staging, dest, idx, threads: int, pool, copy_timer, sync):
    """The dram-copy path for one batch: `threads` CPU threads gather rows of `rows2d` into
    `staging`, then one copy to `dest`. Records the gather, the copy, and both end to end."""
    torch = ctx.torch
    rows, rb = staging.shape
    chunks = list(zip(idx.chunk(threads), staging.chunk(threads)))
    gather = threaded(pool, lambda i, o: torch.index_select(rows2d, 0, i, out=o), chunks)

    def copy():
        dest.copy_(staging, non_blocking=True)

    def both():
        gather()
        copy()

    params = {"rows": rows, "row_bytes": rb, "threads": threads, "table_bytes": rows2d.numel()}
    for stage, fn, timer in (
        ("gather", gather, PerfTimer()),
        ("copy", copy, copy_timer),
        ("end_to_end", both, PerfTimer(sync=sync)),
    ):
        yield record(
            "copy_pipeline", {**params, "stage": stage}, time_point(ctx, fn, timer), rows=rows, bytes=rows * rb
        )


def copy_pipeline(ctx):
    """CPU threads gather rows from a large host table into pinned staging, then an async H2D
    copy; both stages and end to end, against rows per call and gather threads."""
    torch, cfg = ctx.torch, ctx.config
    rb = cfg.row_bytes[0]
    table_bytes = min(max(cfg.table_bytes), host_budget(ctx) // 2)
    if table_bytes < 16 * MiB:
        yield skipped("copy_pipeline", {}, "not enough free host memory for a gather table")
        return
    rows2d = torch.ones(table_bytes // rb, rb, dtype=torch.uint8)
    rng = ctx.rng()
    with single_threaded_pool(torch, max(cfg.threads)) as pool:
        for rows in [r for r in cfg.rows_per_call if r >= 256]:
            staging = torch.empty(rows, rb, dtype=torch.uint8, pin_memory=True)
            dest = torch.empty(rows, rb, dtype=torch.uint8, device="cuda")
            idx = torch.from_numpy(rng.integers(0, rows2d.shape[0], rows))
            for threads in cfg.threads:
                yield from pipeline_points(
                    ctx, rows2d, staging, dest, idx, threads, pool, CudaTimer(torch), torch.cuda.synchronize
                )


GPU_MATMUL = ("bf16", 4096, 4096, 14336)  # a decoder layer's MLP up-projection over a prefill chunk


def overlap(ctx):
    """A bf16 matmul loop on the main stream alone, an H2D copy on a side stream alone, then
    both at once; `slowdown` = time together / time alone, for each side."""
    torch, cfg = ctx.torch, ctx.config
    _, m, k, n = GPU_MATMUL
    copy_bytes = 256 * MiB
    if min(host_budget(ctx), device_budget(ctx)) < 2 * copy_bytes:
        yield skipped("overlap", {"path": "gpu"}, "not enough free memory for the copy buffers")
        return
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    host = torch.ones(copy_bytes, dtype=torch.uint8, pin_memory=True)
    dev = torch.empty(copy_bytes, dtype=torch.uint8, device="cuda")
    main, side = torch.cuda.current_stream(), torch.cuda.Stream()

    def copy():
        with torch.cuda.stream(side):
            dev.copy_(host, non_blocking=True)

    one_mm = time_point(ctx, lambda: torch.matmul(a, b), CudaTimer(torch))
    copy_alone = time_point(ctx, copy, CudaTimer(torch, side))
    count = max(1, round(copy_alone.median_s / one_mm.median_s))  # matmuls spanning one copy

    def matmuls():
        for _ in range(count):
            torch.matmul(a, b)

    mm_alone = time_point(ctx, matmuls, CudaTimer(torch))
    mm_times, copy_times = [], []
    for _ in range(cfg.repeats + 1):  # the first is a warm-up
        start, mm_end, side_start, copy_end = (torch.cuda.Event(enable_timing=True) for _ in range(4))
        start.record(main)
        side.wait_event(start)
        side_start.record(side)
        copy()
        matmuls()
        mm_end.record(main)
        copy_end.record(side)
        torch.cuda.synchronize()
        mm_times.append(start.elapsed_time(mm_end) / 1e3)
        copy_times.append(side_start.elapsed_time(copy_end) / 1e3)
    mm_with, copy_with = summarize(mm_times[1:]), summarize(copy_times[1:])
    params = {"path": "gpu", "dtype": "bf16", "m": m, "k": k, "n": n, "matmuls": count, "copy_bytes": copy_bytes}
    flops = 2 * m * k * n * count
    yield record("overlap", {**params, "stage": "matmul", "with": "none"}, mm_alone, flops=flops)
    yield record(
        "overlap",
        {**params, "stage": "matmul", "with": "h2d"},
        mm_with,
        flops=flops,
        slowdown=mm_with.median_s / mm_alone.median_s,
    )
    yield record("overlap", {**params, "stage": "h2d", "with": "none"}, copy_alone, bytes=copy_bytes)
    yield record(
        "overlap",
        {**params, "stage": "h2d", "with": "matmul"},
        copy_with,
        bytes=copy_bytes,
        slowdown=copy_with.median_s / copy_alone.median_s,
    )
