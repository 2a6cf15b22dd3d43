"""One-box read policies measured on this machine: how long a decode step's Engram row reads
take with serial vs N-thread pread (O_DIRECT, so every read goes to the device), and what one
mmap page fault reads with the machine's page size, with and without MADV_RANDOM.

Device figures are measured apart from the decode-step reads: random 4 KiB O_DIRECT reads at
a few queue depths (the SSD part's IOPS-by-depth points) and a cached pread (the CPU cost of
one read). `engramsim.onebox.harness` feeds those into the simulator's read model and
compares its prediction with the decode-step times measured here. No torch: plain os calls.
"""

from __future__ import annotations

import mmap
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from engramsim.measure.cpu import drop_cache, open_direct, page_span, write_scratch_file
from engramsim.measure.system import read_ahead_bytes

PAGE = mmap.PAGESIZE


def _direct_reader(fd: int, row_bytes: int):
    buf = mmap.mmap(-1, page_span(PAGE - 1, row_bytes)[1])

    def read(offset: int):
        start, length = page_span(int(offset), row_bytes)
        os.preadv(fd, [memoryview(buf)[:length]], start)

    return read


def iops_at_depths(fd: int, size: int, depths=(1, 2, 4, 8), reads: int = 400, repeats: int = 5, seed: int = 0) -> dict:
    """Random 4 KiB O_DIRECT reads per second with `depth` threads each reading in turn (the
    median of `repeats` rounds: a shared virtual disk is noisy)."""
    rng = np.random.default_rng(seed)
    warm = _direct_reader(fd, PAGE)
    for o in rng.integers(0, size // PAGE, size=50) * PAGE:  # wake the device and the path up
        warm(o)
    out = {}
    for depth in depths:
        readers = [_direct_reader(fd, PAGE) for _ in range(depth)]
        rates = []
        with ThreadPoolExecutor(depth) as pool:
            for _ in range(repeats):
                offsets = rng.integers(0, size // PAGE, size=reads) * PAGE
                t0 = time.perf_counter()
                list(pool.map(lambda i: [readers[i](o) for o in offsets[i::depth]], range(depth)))
                rates.append(reads / (time.perf_counter() - t0))
        out[depth] = float(np.median(rates))
    return out


def pread_cpu_s(fd_cached: int, row_bytes: int, reads: int = 2000) -> float:
    """CPU time of one pread of a row already in the page cache: the system call and the copy."""
    os.pread(fd_cached, row_bytes, 0)
    t0 = time.perf_counter()
    for _ in range(reads):
        os.pread(fd_cached, row_bytes, 0)
    return (time.perf_counter() - t0) / reads


def decode_step_reads_s(
    fd: int, size: int, row_bytes: int, rows_per_layer: int, layers: int, readers: int, steps: int = 30, seed: int = 1
) -> float:
    """Median time of one decode step's reads: `layers` rounds of `rows_per_layer` random rows,
    each round split over `readers` threads and joined before the next (reads at the layer)."""
    rng = np.random.default_rng(seed)
    slots = size // row_bytes
    per_thread = [_direct_reader(fd, row_bytes) for _ in range(readers)]
    times = []
    with ThreadPoolExecutor(readers) as pool:
        for _ in range(steps):
            t0 = time.perf_counter()
            for _ in range(layers):
                offsets = rng.integers(0, slots, size=rows_per_layer) * row_bytes
                if readers == 1:
                    for o in offsets:
                        per_thread[0](o)
                else:
                    list(pool.map(lambda i: [per_thread[i](o) for o in offsets[i::readers]], range(readers)))
            times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _read_bytes() -> int:
    """Bytes this process caused to be read from storage (/proc/self/io), 0 where unknown."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def mmap_fault_bytes(path: Path, size: int, faults: int = 200, madvise_random: bool = False, seed: int = 2) -> dict:
    """Touch `faults` random pages of a freshly dropped mapping: the storage bytes each fault
    read (/proc/self/io) and its time."""
    fd = os.open(path, os.O_RDONLY)
    try:
        drop_cache(fd, size)
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        if madvise_random:
            mm.madvise(mmap.MADV_RANDOM)
        pages = np.random.default_rng(seed).choice(size // PAGE, size=faults, replace=False) * PAGE
        before, t0 = _read_bytes(), time.perf_counter()
        for p in pages:
            mm[int(p)]
        elapsed, moved = time.perf_counter() - t0, _read_bytes() - before
        mm.close()
    finally:
        os.close(fd)
    return {"bytes_per_fault": moved / faults, "s_per_fault": elapsed / faults, "faults": faults}


def measure(
    scratch: Path,
    file_bytes: int = 1 << 30,
    row_bytes: int = 264,
    rows_per_layer: int = 24,
    layers: int = 2,
    readers: tuple[int, ...] = (1, 8),
) -> dict:
    """Every one-box figure of this machine, from one scratch file that is removed after."""
    path = Path(scratch) / f"engramsim-onebox-{os.getpid()}.bin"
    write_scratch_file(path, file_bytes)
    fd = open_direct(path)
    cached = os.open(path, os.O_RDONLY)
    try:
        if fd is None:
            raise OSError(f"{scratch}: O_DIRECT reads are not supported here")
        # The device settles after the scratch file's writeback: measure the decode steps and the
        # device's depths alternately, twice, and keep the second pass.
        for _ in range(2):
            steps = {n: decode_step_reads_s(fd, file_bytes, row_bytes, rows_per_layer, layers, n) for n in readers}
            iops = iops_at_depths(fd, file_bytes)
        return {
            "page_bytes": PAGE,
            "read_ahead_bytes": read_ahead_bytes(path),
            "file_bytes": file_bytes,
            "row_bytes": row_bytes,
            "rows_per_layer": rows_per_layer,
            "layers": layers,
            "iops_at_depth": iops,
            "pread_cpu_s": pread_cpu_s(cached, row_bytes),
            "decode_step_s": steps,
            "mmap_default": mmap_fault_bytes(path, file_bytes),
            "mmap_random": mmap_fault_bytes(path, file_bytes, madvise_random=True),
        }
    finally:
        os.close(cached)
        if fd is not None:
            os.close(fd)
        path.unlink(missing_ok=True)
