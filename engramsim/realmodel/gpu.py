"""The GPU half of the placements: where the table lives on a CUDA machine and how a step's rows
reach the Engram layer, plus a step timer on the GPU's own clock.

Row sources keep the CPU ones' interface (`begin_step(ids)`, `rows(layer)`, `stall_s`,
`busy_s`, `close()`):
  HbmRows   the table in device memory, gathered inline by an embedding kernel;
  CopyRows  the table in pinned host memory; CPU threads gather a layer's rows into pinned
            staging, an async H2D copy on a side stream moves them, the layer's stream waits
            on the copy's event. Prefetch: a worker thread does this at step start; sync: at
            the layer;
  UvaRows   the table in pinned, mapped host memory; a GPU gather kernel reads it in place
            over the host link, on a side stream at step start (prefetch) or inline (sync).
A stall is what the layer's stream waits for the prefetch: the GPU time between an event
recorded before the wait and one after it. Events are read only after the step has
synchronized (its sampled tokens come back to the host), so timing adds no host stalls.
"""

from __future__ import annotations

import numpy as np

from engramsim.errors import UserError
from engramsim.measure.cuda import mapped_view
from engramsim.realmodel._torch import TORCH_DTYPES, torch
from engramsim.realmodel.config import TablePlacement
from engramsim.realmodel.model import BUCKETS
from engramsim.realmodel.placements import PrefetchRows
from engramsim.units import GiB

F = torch.nn.functional


def _event():
    e = torch.cuda.Event(enable_timing=True)
    e.record()  # on the current stream
    return e


class CudaStepTimer:
    """StepTimer on the GPU timeline: each mark records an event on the current stream; a
    bucket gets the time between consecutive events. Where the GPU idles waiting for the host
    (hashing, a CPU gather), that idle time lands in the bucket too, as it does in wall time."""

    def __init__(self):
        self._marks = [(None, _event())]

    def mark(self, bucket: str) -> None:
        self._marks.append((bucket, _event()))

    @property
    def buckets(self) -> dict[str, float]:
        self._marks[-1][1].synchronize()
        out = dict.fromkeys(BUCKETS, 0.0)
        for (_, start), (bucket, end) in zip(self._marks, self._marks[1:]):
            out[bucket] += start.elapsed_time(end) / 1e3
        return out


class _EventSeconds:
    """Seconds between pairs of events, added up once they have completed: reading them at
    once would make the host wait for the GPU."""

    def __init__(self):
        self.total_s = 0.0
        self._pairs = []

    def add(self, start, end) -> None:
        self._pairs.append((start, end))

    def seconds(self) -> float:
        for start, end in self._pairs:
            end.synchronize()
            self.total_s += start.elapsed_time(end) / 1e3
        self._pairs.clear()
        return self.total_s


def _to_device(ids: np.ndarray, device):
    return torch.from_numpy(np.ascontiguousarray(ids).reshape(-1)).to(device, non_blocking=True)


class _DeviceBuffers:
    """One device buffer per Engram layer, sized once for the largest step: a step's rows go
    to its first rows. Allocated up front, never freed mid-run, so side-stream writes need no
    allocator bookkeeping."""

    def __init__(self, layers, capacity_rows: int, row_dim: int, dtype, device, pinned_host: bool = False):
        opts = {"pin_memory": True} if pinned_host else {"device": device}
        self.buffers = {layer: torch.empty(capacity_rows, row_dim, dtype=dtype, **opts) for layer in layers}

    def slot(self, layer: int, ids: np.ndarray):
        n, heads = ids.shape
        buf = self.buffers[layer]
        if n * heads > buf.shape[0]:
            raise UserError(f"real model: a step needs {n * heads} rows, the staging holds {buf.shape[0]}")
        return buf[: n * heads]


class HbmRows:
    """Table in HBM: the row ids go up at step start, the gather runs inline at the layer."""

    def __init__(self, table):
        self.table = table
        self.stall_s = self.busy_s = 0.0
        self._ids = {}

    def begin_step(self, ids: dict[int, np.ndarray]) -> None:
        self._ids = {layer: (_to_device(a, self.table.device), a.shape[0]) for layer, a in ids.items()}

    def rows(self, layer: int):
        idx, n = self._ids[layer]
        return F.embedding(idx, self.table).view(n, -1)

    def close(self) -> None:
        pass


class _SideStreamSource:
    """What the copy and UVA paths share: a side stream, the device buffers, the stall events."""

    def __init__(self, layers, capacity_rows: int, row_dim: int, dtype, device):
        self.side = torch.cuda.Stream()
        self.dev = _DeviceBuffers(layers, capacity_rows, row_dim, dtype, device)
        self._stalls = _EventSeconds()
        self._busy = _EventSeconds()
        self._ids = {}

    @property
    def stall_s(self) -> float:
        return self._stalls.seconds()

    def _wait(self, done) -> None:
        """The layer's stream waits for a fetch; the wait is timed on the GPU."""
        before = _event()
        torch.cuda.current_stream().wait_event(done)
        self._stalls.add(before, _event())

    def _side_start(self) -> None:
        # The side stream must not overwrite buffers that earlier work on the main stream reads.
        self.side.wait_stream(torch.cuda.current_stream())


class UvaRows(_SideStreamSource):
    """Table in mapped pinned host memory, gathered in place by a GPU kernel (zero copy)."""

    def __init__(self, view, layers, capacity_rows: int, prefetch: bool):
        super().__init__(layers, capacity_rows, view.shape[1], view.dtype, view.device)
        self.view, self.prefetch = view, prefetch
        self._done = {}

    @property
    def busy_s(self) -> float:
        return self._busy.seconds()

    def _gather(self, layer: int, ids: np.ndarray):
        out = self.dev.slot(layer, ids)
        torch.index_select(self.view, 0, _to_device(ids, self.view.device), out=out)
        return out.view(ids.shape[0], -1)

    def begin_step(self, ids: dict[int, np.ndarray]) -> None:
        self._ids = ids
        if not self.prefetch:
            return
        self._side_start()
        with torch.cuda.stream(self.side):
            for layer in sorted(ids):
                start = _event()
                out = self._gather(layer, ids[layer])
                done = _event()
                self._busy.add(start, done)
                self._done[layer] = (out, done)

    def rows(self, layer: int):
        if not self.prefetch:
            return self._gather(layer, self._ids[layer])
        out, done = self._done.pop(layer)
        self._wait(done)
        return out

    def close(self) -> None:
        torch.cuda.synchronize()


class CopyRows(_SideStreamSource):
    """Table in pinned host memory: CPU gather into pinned staging, then an async H2D copy."""

    def __init__(self, table, layers, capacity_rows: int, prefetch: bool, device):
        super().__init__(layers, capacity_rows, table.shape[1], table.dtype, device)
        self.table = table
        self.staging = _DeviceBuffers(layers, capacity_rows, table.shape[1], table.dtype, None, pinned_host=True)
        self._copied = {}  # layer -> the event of its last copy out of staging
        self._worker = PrefetchRows(self._fetch) if prefetch else None

    @property
    def busy_s(self) -> float:
        return self._worker.busy_s if self._worker else 0.0

    def _fetch(self, layer: int, ids: np.ndarray):
        """Gather on the CPU into staging, copy it up on the side stream; (rows, copy event)."""
        if layer in self._copied:
            self._copied[layer].synchronize()  # staging is free only once its last copy is done
        staging = self.staging.slot(layer, ids)
        torch.index_select(self.table, 0, torch.from_numpy(ids.reshape(-1)), out=staging)
        out = self.dev.slot(layer, ids)
        with torch.cuda.stream(self.side):
            out.copy_(staging, non_blocking=True)
            done = self._copied[layer] = _event()
        return out.view(ids.shape[0], -1), done

    def begin_step(self, ids: dict[int, np.ndarray]) -> None:
        self._ids = ids
        self._side_start()
        if self._worker:
            self._worker.begin_step(ids)

    def rows(self, layer: int):
        if self._worker is None:
            out, done = self._fetch(layer, self._ids[layer])
            torch.cuda.current_stream().wait_event(done)  # prefetch off: the wait is gather time
            return out
        before = _event()  # before the host waits for the worker: an idle GPU counts as stall
        out, done = self._worker.rows(layer)
        torch.cuda.current_stream().wait_event(done)
        self._stalls.add(before, _event())
        return out

    def close(self) -> None:
        if self._worker:
            self._worker.close()
        torch.cuda.synchronize()


def make_gpu_source(p: TablePlacement, table, layers, capacity_rows: int):
    if p.tier == "hbm":
        return HbmRows(table)
    if p.tier == "pinned-uva":
        return UvaRows(table, layers, capacity_rows, p.prefetch)
    return CopyRows(table, layers, capacity_rows, p.prefetch, torch.device("cuda"))


def check_device_room(table_bytes: int, margin_GiB: float) -> None:
    free, _ = torch.cuda.mem_get_info()
    need = table_bytes + int(margin_GiB * GiB)
    if need > free:
        raise UserError(
            f"real model: the HBM table needs {need / GiB:.1f} GiB with its margin, "
            f"the GPU has {free / GiB:.1f} GiB free; lower table_MiB"
        )


class GpuTables:
    """The table on a CUDA machine: generated on the GPU (seconds for GiBs, where a CPU
    generator takes minutes), kept there for gpu-hbm, and copied to host memory that is
    registered with CUDA (pinned and mapped) for the pinned-copy and pinned-uva paths. Every
    placement reads the very same values."""

    def __init__(self, rows: int, row_dim: int, seed: int, dtype: str):
        gen = torch.Generator("cuda").manual_seed(seed)
        self.hbm = torch.randn(rows, row_dim, generator=gen, device="cuda", dtype=TORCH_DTYPES[dtype])
        self.host = self.hbm.cpu()
        self._uva = None

    @property
    def nbytes(self) -> int:
        return self.host.numel() * self.host.element_size()

    def _mapped(self):
        if self._uva is None:  # registration pins the pages too: the copy path reads them pinned
            flat = self.host.view(-1).view(torch.uint8)
            self._uva = mapped_view(torch, flat).view(self.host.dtype).view(self.host.shape)
        return self._uva

    def open(self, p: TablePlacement):
        """(table for the placement's source, resident fraction, note), like _Tables.open."""
        if p.tier == "none":
            return None, None, ""
        if p.tier == "hbm":
            return self.hbm, None, ""
        view = self._mapped()
        return (view if p.tier == "pinned-uva" else self.host), None, "pinned + mapped with cudaHostRegister"

    def close(self) -> None:
        torch.cuda.synchronize()
        if self._uva is not None:
            self._uva = None
            torch.cuda.cudart().cudaHostUnregister(self.host.data_ptr())
        self.hbm = None
