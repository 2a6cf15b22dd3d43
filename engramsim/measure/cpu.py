"""CPU benchmarks: dram_gather, memcpy, ssd_read, hash, cpu_matmul, overlap (CPU), cxl.

Each benchmark is a generator over a `Context` that yields records (plan.record) and skips
(plan.skipped); the runner stores them as they come, so an interrupt keeps what was measured.
`run_gather` is device-agnostic: the CUDA benchmarks reuse it with a device table and a CUDA
timer, which is how their sweep logic is exercised on CPU.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engramsim.measure.plan import GiB, MiB, gather_points, indices, memory_budget, record, sizes_within, skipped
from engramsim.measure.system import disk_info, free_memory_bytes, numa_nodes
from engramsim.measure.timing import PerfTimer, measure

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def host_budget(ctx) -> int:
    cfg = ctx.config
    return memory_budget(free_memory_bytes(), cfg.memory_margin_bytes, cfg.memory_fraction)


@contextlib.contextmanager
def torch_threads(torch, n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_point(ctx, fn, timer=None, setup=None):
    cfg = ctx.config
    return measure(fn, timer or PerfTimer(), warmup=1, repeats=cfg.repeats, budget_s=cfg.point_budget_s, setup=setup)


def single_threaded_pool(torch, workers: int) -> ThreadPoolExecutor:
    """Worker threads whose torch ops run on one intra-op thread each (OpenMP's thread count is
    per thread, so a fresh thread would otherwise use every core and oversubscribe)."""
    return ThreadPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,))


def threaded(pool, fn_per_chunk, chunks):
    """One call that runs `fn_per_chunk(*chunk)` for every chunk on the pool (or inline)."""
    if len(chunks) == 1:
        return lambda: fn_per_chunk(*chunks[0])
    return lambda: list(pool.map(lambda c: fn_per_chunk(*c), chunks))


def run_gather(ctx, name: str, table, points, timer=None, extra: dict | None = None):
    """Gather random rows from the flat byte tensor `table` (on any device) for each point.

    A smaller table size is the prefix of `table`: indices are drawn over its rows only, so one
    allocation serves the whole sweep. Threads split the rows of one call (CPU only).
    """
    torch = ctx.torch
    rng = ctx.rng()
    device = table.device
    threads_max = max(p["threads"] for p in points) if points else 1
    with single_threaded_pool(torch, threads_max) as pool, torch_threads(torch, 1):
        for p in points:
            rb, n_rows = p["row_bytes"], p["table_bytes"] // p["row_bytes"]
            rows2d = table[: n_rows * rb].view(n_rows, rb)
            idx = torch.from_numpy(indices(p, ctx.config.zipf_s, rng)).to(device)
            out = torch.empty((p["rows"], rb), dtype=table.dtype, device=device)
            chunks = list(zip(idx.chunk(p["threads"]), out.chunk(p["threads"])))
            fn = threaded(pool, lambda i, o: torch.index_select(rows2d, 0, i, out=o), chunks)
            stats = time_point(ctx, fn, timer)
            yield record(name, {**p, **(extra or {})}, stats, rows=p["rows"], bytes=p["rows"] * rb)


def dram_gather(ctx, name="dram_gather", node: int | None = None):
    """Random rows from a host table, against table size (caches, TLB), row bytes and threads."""
    torch, cfg = ctx.torch, ctx.config
    sizes = yield from sizes_within(name, cfg.table_bytes, host_budget(ctx))
    if not sizes:
        return
    extra = {} if node is None else {"numa_node": node}
    if node is None:
        table = torch.empty(max(sizes), dtype=torch.uint8)
        keep = None
    else:
        keep, table = node_table(torch, max(sizes), node)
    table.fill_(1)  # touch every page: untouched pages all map the one zero page
    yield from run_gather(ctx, name, table, list(gather_points(cfg, sizes)), extra=extra)
    del table, keep


def memcpy(ctx):
    """Streaming copy bandwidth. `bytes`/`GBps` count bytes copied; DRAM moves twice that."""
    torch, cfg = ctx.torch, ctx.config
    size = cfg.memcpy_bytes
    while size > 16 * MiB and 2 * size > host_budget(ctx):
        size //= 2
    if 2 * size > host_budget(ctx):
        yield skipped("memcpy", {"bytes": cfg.memcpy_bytes}, "not enough free memory for two buffers")
        return
    src = torch.ones(size, dtype=torch.uint8)
    dst = torch.zeros(size, dtype=torch.uint8)
    for t in cfg.threads:
        with torch_threads(torch, t):
            stats = time_point(ctx, lambda: dst.copy_(src))
        yield record("memcpy", {"bytes": size, "threads": t}, stats, bytes=size)


def cpu_matmul(ctx):
    """Decoder-layer-sized matmuls (M tokens x K hidden -> N) with torch on all cores."""
    torch, cfg = ctx.torch, ctx.config
    cores = max(cfg.threads)
    with torch_threads(torch, cores):
        for dtype, m, k, n in cfg.matmul_shapes:
            a = torch.randn(m, k).to(getattr(torch, DTYPES[dtype]))
            b = torch.randn(k, n).to(getattr(torch, DTYPES[dtype]))
            stats = time_point(ctx, lambda: torch.matmul(a, b))
            yield record(
                "cpu_matmul", {"dtype": dtype, "m": m, "k": k, "n": n, "threads": cores}, stats, flops=2 * m * k * n
            )


def overlap(ctx):
    """CPU interference: a matmul alone and while one gather thread runs, and the gather alone
    and during the matmuls. `slowdown` = time with the other / time alone."""
    torch, cfg = ctx.torch, ctx.config
    dtype, m, k, n = max((s for s in cfg.matmul_shapes if s[0] == "fp32"), key=lambda s: s[1])
    a, b = torch.randn(m, k), torch.randn(k, n)
    table_bytes = min(max(cfg.table_bytes), host_budget(ctx) // 2)
    rb = cfg.row_bytes[0]
    rows = min(4096, table_bytes // rb // 4)
    if rows < 16:
        yield skipped("overlap", {"path": "cpu"}, "not enough free memory for a gather table")
        return
    table = torch.ones(table_bytes // rb, rb, dtype=torch.uint8)
    gather = cycling_gather(torch, table, ctx.rng(), rows=rows)
    mm_threads = max(1, max(cfg.threads) - 1)
    params = {
        "path": "cpu",
        "dtype": dtype,
        "m": m,
        "k": k,
        "n": n,
        "matmul_threads": mm_threads,
        "gather_threads": 1,
        "gather_rows": rows,
        "row_bytes": rb,
        "table_bytes": table.numel(),
    }
    with torch_threads(torch, mm_threads):
        gather = with_one_thread(torch, gather)
        gather_alone = background_stats(gather, lambda: time.sleep(cfg.point_budget_s))
        mm_alone = time_point(ctx, lambda: torch.matmul(a, b))
        holder = {}
        gather_with = background_stats(gather, lambda: holder.update(s=time_point(ctx, lambda: torch.matmul(a, b))))
        mm_with = holder["s"]
    flops = 2 * m * k * n
    yield record("overlap", {**params, "stage": "matmul", "with": "none"}, mm_alone, flops=flops)
    yield record(
        "overlap",
        {**params, "stage": "matmul", "with": "gather"},
        mm_with,
        flops=flops,
        slowdown=mm_with.median_s / mm_alone.median_s,
    )
    yield record("overlap", {**params, "stage": "gather", "with": "none"}, gather_alone, rows=rows, bytes=rows * rb)
    yield record(
        "overlap",
        {**params, "stage": "gather", "with": "matmul"},
        gather_with,
        rows=rows,
        bytes=rows * rb,
        slowdown=gather_with.median_s / gather_alone.median_s,
    )


def cycling_gather(torch, table, rng, rows: int, sets: int = 128):
    """A gather call that cycles through `sets` index sets, so repeated calls miss the caches."""
    idx = torch.from_numpy(rng.integers(0, table.shape[0], (sets, rows)))
    out = torch.empty(rows, table.shape[1], dtype=table.dtype, device=table.device)
    state = {"i": 0}

    def gather():
        state["i"] = (state["i"] + 1) % sets
        return torch.index_select(table, 0, idx[state["i"]], out=out)

    return gather


def with_one_thread(torch, fn):
    """`fn` that, on its first call in a thread, sets that thread's torch intra-op threads to 1."""
    local = threading.local()

    def call():
        if not getattr(local, "set", False):
            torch.set_num_threads(1)
            local.set = True
        return fn()

    return call


def background_stats(fn, foreground):
    """Run `fn` in a loop on a background thread while `foreground()` runs; the per-call time
    statistics of the background loop (the first call is a warm-up)."""
    from engramsim.measure.timing import summarize

    times, stop = [], threading.Event()

    def loop():
        fn()
        while not stop.is_set():
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        foreground()
        deadline = time.perf_counter() + 5.0
        while not times and worker.is_alive() and time.perf_counter() < deadline:
            time.sleep(1e-4)  # a foreground shorter than one background call: wait for one sample
    finally:
        stop.set()
        worker.join()
    return summarize(times or [float("nan")])


def hash_bench(ctx):
    """ns per token of the Engram n-gram hash (engramsim.engram.hash_ngrams), all heads of one
    layer, on the Engram-27B spec, at several batch sizes."""
    try:
        from engramsim.engram import hash_ngrams
        from engramsim.model import load_model

        spec = load_model("engram-27b").engram
    except Exception as e:  # the hash module is optional until it exists
        yield skipped("hash", {}, f"engramsim.engram.hash_ngrams unavailable ({type(e).__name__}: {e})")
        return
    rng = ctx.rng()
    layer = spec.layer_ids[0]
    for tokens in ctx.config.hash_tokens:
        ids = rng.integers(0, spec.compressed_vocab_size, size=(1, tokens), dtype=np.int64)
        stats = time_point(ctx, lambda: hash_ngrams(ids, spec, layer))
        yield record(
            "hash",
            {"tokens": tokens, "model": "engram-27b", "layer_id": layer, "heads": spec.heads_per_layer},
            stats,
            tokens=tokens,
        )


# --- SSD reads --------------------------------------------------------------------------------

PAGE = 4096
MEMORY_FILESYSTEMS = {"tmpfs", "ramfs"}


def ssd_read(ctx):
    """Random row reads from a scratch file through pread and mmap, cold and warm, against
    queue depth (threads) and row bytes. Cold pread uses O_DIRECT where the filesystem allows
    it (page-aligned reads of the pages holding the row), else posix_fadvise(DONTNEED) before
    every repeat; cold mmap drops the mapping's pages and the page cache before every repeat."""
    cfg = ctx.config
    scratch = Path(ctx.scratch)
    disk = disk_info(scratch)
    if disk["fstype"] in MEMORY_FILESYSTEMS:
        yield skipped(
            "ssd_read",
            {"fstype": disk["fstype"]},
            f"scratch {scratch} is in memory ({disk['fstype']}): pass --scratch on a disk",
        )
        return
    size = plan_file_bytes(cfg.ssd_file_bytes, disk["free_bytes"])
    if size is None:
        yield skipped("ssd_read", {"file_bytes": cfg.ssd_file_bytes}, f"not enough free disk under {scratch}")
        return
    path = scratch / f"engramsim-ssd-{os.getpid()}.bin"
    try:
        write_scratch_file(path, size)
        yield from _ssd_points(ctx, path, size)
    finally:
        path.unlink(missing_ok=True)


def plan_file_bytes(requested: int, free_bytes: int, margin: int = 1 * GiB, floor: int = 16 * MiB) -> int | None:
    """The scratch file size: as requested, or what fits under free disk minus a margin."""
    size = min(requested, (free_bytes - margin) // PAGE * PAGE)
    return size if size >= min(floor, requested) and size > 0 else None


def write_scratch_file(path: Path, size: int, chunk: int = 16 * MiB):
    block = np.random.default_rng(1).integers(0, 256, size=chunk, dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        for off in range(0, size, chunk):
            f.write(block[: min(chunk, size - off)])
        f.flush()
        os.fsync(f.fileno())


def drop_cache(fd: int, size: int):
    os.posix_fadvise(fd, 0, size, os.POSIX_FADV_DONTNEED)


def open_direct(path: Path) -> int | None:
    """An O_DIRECT descriptor if the filesystem supports it (a test read succeeds), else None."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError:
        return None
    buf = mmap.mmap(-1, PAGE)
    try:
        os.preadv(fd, [buf], 0)
        return fd
    except OSError:
        os.close(fd)
        return None
    finally:
        buf.close()


def page_span(offset: int, length: int) -> tuple[int, int]:
    """The page-aligned (offset, length) covering bytes [offset, offset + length)."""
    start = offset // PAGE * PAGE
    end = -(-(offset + length) // PAGE) * PAGE
    return start, end - start


def _ssd_points(ctx, path: Path, size: int):
    cfg = ctx.config
    rng = ctx.rng()
    reads = cfg.ssd_reads_per_call
    direct_fd = open_direct(path)
    fd = os.open(path, os.O_RDONLY)
    mm = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)  # private and writable, so torch can wrap it
    mm.madvise(mmap.MADV_RANDOM)
    pool = single_threaded_pool(ctx.torch, max(cfg.ssd_queue_depths))
    try:
        for cache in ("cold", "warm"):
            if cache == "warm":
                with open(path, "rb") as f:  # read the whole file once into the page cache
                    while f.read(16 * MiB):
                        pass
            for method in ("pread", "mmap"):
                for rb in cfg.ssd_row_bytes:
                    for qd in cfg.ssd_queue_depths:
                        offsets = {}

                        def new_offsets():
                            offsets["v"] = rng.integers(0, size // rb, size=reads) * rb
                            if cache == "cold":
                                if method == "mmap":
                                    mm.madvise(mmap.MADV_DONTNEED)
                                drop_cache(fd, size)

                        use_direct = cache == "cold" and method == "pread" and direct_fd is not None
                        fn = (
                            _pread_reader(direct_fd if use_direct else fd, rb, qd, offsets, pool, use_direct)
                            if method == "pread"
                            else _mmap_reader(ctx.torch, mm, size, rb, qd, offsets, pool)
                        )
                        stats = time_point(ctx, fn, setup=new_offsets)
                        params = {
                            "method": method,
                            "cache": cache,
                            "row_bytes": rb,
                            "queue_depth": qd,
                            "file_bytes": size,
                        }
                        if cache == "cold":
                            params["cold_by"] = "O_DIRECT" if use_direct else "fadvise(DONTNEED)"
                        yield record(
                            "ssd_read",
                            params,
                            stats,
                            ops=reads,
                            bytes=reads * rb,
                            latency_us=stats.median_s * qd / reads * 1e6,
                        )
    finally:
        pool.shutdown()
        with contextlib.suppress(BufferError):  # a tensor view still alive: unmapped when collected
            mm.close()
        os.close(fd)
        if direct_fd is not None:
            os.close(direct_fd)


def _pread_reader(fd, rb, qd, offsets, pool, direct):
    bufs = [mmap.mmap(-1, page_span(PAGE - 1, rb)[1]) for _ in range(qd)]  # page-aligned, big enough

    def one_thread(i):
        buf = bufs[i]
        for off in offsets["v"][i::qd]:
            if direct:
                start, length = page_span(int(off), rb)
                os.preadv(fd, [memoryview(buf)[:length]], start)
            else:
                os.pread(fd, rb, int(off))

    return threaded(pool, one_thread, [(i,) for i in range(qd)])


def _mmap_reader(torch, mm, size, rb, qd, offsets, pool):
    rows = torch.frombuffer(mm, dtype=torch.uint8, count=size // rb * rb).view(-1, rb)

    def one_thread(i):
        idx = torch.from_numpy(offsets["v"][i::qd] // rb)
        torch.index_select(rows, 0, idx)

    return threaded(pool, one_thread, [(i,) for i in range(qd)])


# --- CXL: host memory on a CPU-less NUMA node -------------------------------------------------

MBIND_SYSCALL = {"x86_64": 237, "aarch64": 235}
MPOL_BIND, MPOL_MF_STRICT = 2, 1


def cpu_less_nodes(nodes: list[dict]) -> list[int]:
    return [n["node"] for n in nodes if n["cpu_less"] and n["total_bytes"] > 0]


def cxl(ctx):
    """If a CPU-less NUMA node exists (how CXL memory appears), repeat dram_gather with the
    table bound there; otherwise record that there is none."""
    nodes = cpu_less_nodes(numa_nodes())
    if not nodes:
        yield skipped("cxl", {}, "no CPU-less NUMA node: no CXL memory is exposed to this OS")
        return
    if platform.machine() not in MBIND_SYSCALL:
        yield skipped("cxl", {"nodes": nodes}, f"mbind syscall number unknown on {platform.machine()}")
        return
    for node in nodes:
        yield from dram_gather(ctx, name="cxl", node=node)


def node_table(torch, nbytes: int, node: int):
    """A byte tensor over anonymous memory bound (mbind, MPOL_BIND) to NUMA node `node`, before
    first touch. Returns (the mapping to keep alive, the tensor)."""
    mm = mmap.mmap(-1, nbytes)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    mask = ctypes.c_ulong(1 << node)
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.syscall(
        MBIND_SYSCALL[platform.machine()],
        ctypes.c_void_p(addr),
        ctypes.c_ulong(nbytes),
        MPOL_BIND,
        ctypes.byref(mask),
        ctypes.c_ulong(node + 2),
        MPOL_MF_STRICT,
    )
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"mbind to NUMA node {node} failed")
    return mm, torch.frombuffer(mm, dtype=torch.uint8)
