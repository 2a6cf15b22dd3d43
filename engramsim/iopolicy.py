"""How an engine reads table rows from SSD: its I/O policy (an engine preset's [io] table, or
`simulate --readers/--read-at/--io`).

One-box engines differ less in their SSD than in how they read it: how many reads they keep in
flight (reader threads, io_uring depth), whether the reads sit inside the forward pass or
ahead of it, and whether they go through mmap page faults, buffered pread, O_DIRECT or
io_uring. The cost of each choice is in costs.ssd_read_plan; this module only holds the data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from engramsim.errors import UserError
from engramsim.presets import build, spec

READ_AT = ("forward", "prefetch", "prestage")
IO_KINDS = ("pread", "mmap", "odirect", "io_uring")
READERS_MAX = 4096  # threads issuing reads: far beyond any machine's cores


@dataclass(frozen=True)
class IOPolicy:
    # Threads that issue reads; each keeps `io_depth` reads in flight (1 for a blocking call).
    # 0: as many reads in flight as the SSDs' queues take (a batched asynchronous reader).
    readers: int = spec("readers", lo=0, lo_open=False, hi=READERS_MAX, kind=int, default=0)
    io_depth: int = spec("io_depth", hi=4096, kind=int, default=1)
    # A read of fewer rows than this runs on one thread, in series: engines that fan reads out
    # only for prefill batches (antirez/ds4 `ds4_engram_read_batch` above 256 rows) read decode
    # rows serially. 0: every read uses all readers.
    parallel_min_rows: int = spec("parallel_min_rows", lo=0, lo_open=False, hi=1e9, kind=int, default=0)
    # forward: the read blocks at the Engram layer; prefetch: it starts at forward entry, beside
    # the layers before it; prestage: it is issued as soon as the step's tokens are known,
    # before the host's per-step work, so that work hides it too.
    read_at: str = spec("read_at", kind=str, default="prefetch")
    io: str = spec("io", kind=str, default="pread")
    # mmap only: the engine asks for random access (madvise MADV_RANDOM), so a fault reads one
    # page instead of the OS's read-around window.
    madvise_random: bool = spec("madvise_random", kind=bool, default=False)

    def __post_init__(self):
        if self.read_at not in READ_AT:
            raise UserError(f"unknown read-at '{self.read_at}' (known: {', '.join(READ_AT)})")
        if self.io not in IO_KINDS:
            raise UserError(f"unknown io '{self.io}' (known: {', '.join(IO_KINDS)})")

    @property
    def prefetch(self) -> bool:
        return self.read_at != "forward"

    @property
    def prestage(self) -> bool:
        return self.read_at == "prestage"

    def readers_for(self, rows: float) -> int:
        """Readers a read of `rows` rows uses (0: unbounded)."""
        if self.readers and rows < self.parallel_min_rows:
            return 1
        return self.readers

    def with_flags(self, readers: int | None = None, read_at: str | None = None, io: str | None = None) -> IOPolicy:
        """Command-line overrides (None keeps the preset's value)."""
        if readers is not None and readers < 1:
            raise UserError(f"--readers must be at least 1, got {readers}")
        changes = {k: v for k, v in (("readers", readers), ("read_at", read_at), ("io", io)) if v is not None}
        return replace(self, **changes)


def io_policy_from_table(table: dict, where: str) -> IOPolicy:
    return build(IOPolicy, table, f"{where} [io]")


def io_policy(base: IOPolicy, workload, no_prefetch: bool, readers, read_at, io_kind) -> IOPolicy:
    """The engine's I/O policy with `simulate`'s (or a sweep config's) overrides; --no-prefetch (or a workload
    whose engine does not prefetch) means reads at the Engram layer."""
    if no_prefetch and read_at not in (None, "forward"):
        raise UserError(f"--no-prefetch contradicts --read-at {read_at}")
    if read_at is None and (no_prefetch or not workload.engine.prefetch):
        read_at = "forward"
    return base.with_flags(readers=readers, read_at=read_at, io=io_kind)
