"""Where the Engram table lives, and how a step's rows reach the Engram layer.

A row source gets the step's global row ids at step start (`begin_step`: they depend only on
token ids) and hands the Engram layer its rows (`rows`). Three paths:
  InlineRows    an embedding lookup inside the layer (table in RAM: the CPU's "device memory");
  SyncRows      the same gather into a staging buffer, done at the layer (prefetch off);
  PrefetchRows  a background thread gathers into the staging buffer while the layers before the
                Engram layer compute; the layer waits for it, and the wait is the stall.
`TableStore` owns the table's bytes: in RAM, as a separate host buffer, or as a file read
through a memory map, cold or warm in the page cache.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import os
import queue
import shutil
import tempfile
import threading
import time
import warnings
from pathlib import Path

import numpy as np

from engramsim.errors import UserError
from engramsim.realmodel._torch import torch
from engramsim.realmodel.config import TablePlacement
from engramsim.realmodel.noise import pin_this_thread
from engramsim.units import GiB, MiB

F = torch.nn.functional


class InlineRows:
    def __init__(self, table):
        self.table = table
        self.stall_s = self.busy_s = 0.0
        self._ids = {}

    def begin_step(self, ids: dict[int, np.ndarray]) -> None:
        self._ids = ids

    def rows(self, layer: int):
        return F.embedding(torch.from_numpy(self._ids[layer]), self.table).flatten(1)

    def close(self) -> None:
        pass


class _Staging:
    """One reusable buffer per Engram layer; a step's rows are gathered into its first rows."""

    def __init__(self, table):
        self.table = table
        self.buffers = {}

    def gather(self, layer: int, ids: np.ndarray):
        n, heads = ids.shape
        buf = self.buffers.get(layer)
        if buf is None or buf.shape[0] < n * heads:
            buf = self.buffers[layer] = torch.empty(n * heads, self.table.shape[1], dtype=self.table.dtype)
        out = buf[: n * heads]
        torch.index_select(self.table, 0, torch.from_numpy(ids.reshape(-1)), out=out)
        return out.view(n, -1)


class SyncRows:
    def __init__(self, table):
        self.staging = _Staging(table)
        self.stall_s = self.busy_s = 0.0
        self._ids = {}

    def begin_step(self, ids: dict[int, np.ndarray]) -> None:
        self._ids = ids

    def rows(self, layer: int):
        return self.staging.gather(layer, self._ids[layer])

    def close(self) -> None:
        pass


class PrefetchRows:
    """A worker thread gathers each layer's rows in layer order as soon as the step starts.
    torch releases the GIL inside index_select, so the gather overlaps the main thread's layers
    (and competes with them for cores, as it would on a real host). `fetch(layer, ids)` does
    one layer's work (the GPU copy path passes a gather plus its H2D copy)."""

    def __init__(self, fetch, cores: set[int] | None = None):
        self.fetch, self.cores = fetch, cores
        self.stall_s = self.busy_s = 0.0
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._ready: dict[int, threading.Event] = {}
        self._out: dict[int, object] = {}
        self._thread = threading.Thread(target=self._work, name="engram-prefetch", daemon=True)
        self._thread.start()

    def begin_step(self, ids: dict[int, np.ndarray]) -> None:
        for layer in sorted(ids):
            self._ready.setdefault(layer, threading.Event()).clear()
            self._jobs.put((layer, ids[layer]))

    def _work(self) -> None:
        pin_this_thread(self.cores)  # else it inherits the compute thread's cores
        while (job := self._jobs.get()) is not None:
            layer, ids = job
            start = time.perf_counter()
            try:
                self._out[layer] = self.fetch(layer, ids)
            except BaseException as e:  # surfaced to the main thread at the layer
                self._out[layer] = e
            self.busy_s += time.perf_counter() - start
            self._ready[layer].set()

    def rows(self, layer: int):
        start = time.perf_counter()
        self._ready[layer].wait()
        self.stall_s += time.perf_counter() - start
        out = self._out[layer]
        if isinstance(out, BaseException):
            raise out
        return out

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def make_source(p: TablePlacement, table, prefetch_cores: set[int] | None = None):
    """The row source of a CPU placement; a prefetch thread runs on `prefetch_cores` if given."""
    if p.tier == "ram":
        return InlineRows(table)
    return PrefetchRows(_Staging(table).gather, prefetch_cores) if p.prefetch else SyncRows(table)


# --- table bytes ---------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def resident_fraction(arr: np.ndarray) -> float | None:
    """Fraction of a memory map's pages in the page cache (mincore), or None if unknown."""
    page = mmap.PAGESIZE
    pages = (arr.nbytes + page - 1) // page
    vec = (ctypes.c_ubyte * pages)()
    rc = _libc.mincore(ctypes.c_void_p(arr.ctypes.data), ctypes.c_size_t(arr.nbytes), vec)
    if rc != 0:
        return None
    return float((np.frombuffer(vec, dtype=np.uint8) & 1).mean())


def _mem_available_bytes() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise UserError("cannot read MemAvailable from /proc/meminfo")


def check_room(table_bytes: int, copies: int, needs_file: bool, table_dir: Path, margin_GiB: float) -> None:
    """Fail before allocating: `copies` tables in RAM and, for mmap, one on disk, plus a margin."""
    margin = int(margin_GiB * GiB)
    need, free = copies * table_bytes + margin, _mem_available_bytes()
    if need > free:
        raise UserError(
            f"real model: {copies} x {table_bytes / GiB:.2f} GiB table + {margin_GiB} GiB margin "
            f"needs {need / GiB:.1f} GiB of RAM, {free / GiB:.1f} GiB available; lower table_MiB"
        )
    if needs_file:
        disk = shutil.disk_usage(table_dir).free
        if table_bytes + margin > disk:
            raise UserError(
                f"real model: the table file needs {(table_bytes + margin) / GiB:.1f} GiB in "
                f"{table_dir}, {disk / GiB:.1f} GiB free; lower table_MiB or set table_dir"
            )


class TableStore:
    """The table's values (seeded, so every placement reads identical rows) and its copies."""

    def __init__(self, rows: int, row_dim: int, seed: int, table_dir: str = "", dtype=None):
        gen = torch.Generator().manual_seed(seed)
        # nn.Embedding's N(0, 1) init, as the reference MultiHeadEmbedding uses; drawn in fp32
        # and then rounded, so an fp32 table is the same whatever `dtype` (the model's) says.
        self.table = torch.randn(rows, row_dim, generator=gen).to(dtype or torch.float32)
        self.table_dir = Path(table_dir or tempfile.gettempdir())
        self.path: Path | None = None

    @property
    def nbytes(self) -> int:
        return self.table.numel() * self.table.element_size()

    def host_copy(self):
        """A separate host buffer holding the same rows (on CPU, the same kind of DRAM)."""
        return self.table.clone()

    def _write_file(self) -> Path:
        if self.path is None:
            fd, name = tempfile.mkstemp(prefix="engram-table-", suffix=".f32", dir=self.table_dir)
            with os.fdopen(fd, "wb") as f:
                self.table.numpy().tofile(f)
                f.flush()
                os.fsync(f.fileno())  # dirty pages cannot be dropped; cold needs them on disk
            self.path = Path(name)
        return self.path

    def open_mmap(self, cache_state: str):
        """(table tensor over a memory map, resident fraction at start, note). Call only after
        every earlier map of the file is gone: mapped pages survive the drop."""
        path = self._write_file()
        gc.collect()
        note = ""
        if cache_state == "cold":
            note = _drop_page_cache(path)
        arr = np.memmap(path, dtype=np.float32, mode="r", shape=tuple(self.table.shape))
        # Rows are hashed uniformly: read-around would fetch 31 useless neighbour pages per miss.
        arr._mmap.madvise(mmap.MADV_RANDOM)
        if cache_state == "warm":
            _read_through(path)  # sequential reads fill the page cache fast; MADV_RANDOM would not
            arr[:: max(1, mmap.PAGESIZE // arr.strides[0])].sum()  # map every page: no faults in the run
            note = "warm: file read into the page cache and every page touched through the map"
        resident = resident_fraction(arr)
        if cache_state == "cold" and resident is not None and resident > 0.01:
            note += f"; {resident:.0%} of pages stayed resident"
        with warnings.catch_warnings():  # read-only map: torch warns that it cannot write it
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arr), resident, note + "; MADV_RANDOM"

    def close(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _read_through(path: Path, chunk_bytes: int = 64 * MiB) -> None:
    with open(path, "rb", buffering=0) as f:
        while f.read(chunk_bytes):
            pass


def _drop_page_cache(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    except (OSError, AttributeError) as e:
        return f"cold: could not drop the page cache ({e})"
    return "cold: page cache dropped with posix_fadvise(DONTNEED)"
