"""Hot-row cache policies and their hit rates against capacity, for real Engram address streams.

Policies (`hit_rate_curve(trace_rows, capacities_rows, policy)`):

* ``static-topk``: the rows most often read in the first `train_fraction` of the trace are
  pinned; the hit rate is measured on the rest. This is what a hot-row HBM cache filled offline
  (from a profiling run) achieves, and what `engramsim simulate` uses.
* ``lru``: least recently used, demand-filled. Every capacity at once from LRU stack distances
  (Mattson et al. 1970): an access hits in a cache of C rows iff fewer than C distinct other rows
  were read since the previous access to its row.
* ``lfu``: least frequently used, demand-filled, with "perfect" counts (kept for evicted rows
  too), ties broken by least recent use. Not a stack algorithm in this form, so it is simulated
  directly per capacity (a heap, pure Python: slow, about a million accesses per second).

Hit rates count accesses; the first access to a row is a miss for LRU and LFU (cold start).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from engramsim.errors import UserError
from engramsim.fileio import atomic_output

POLICIES = ("static-topk", "lru", "lfu")
UNSEEN = np.iinfo(np.int64).max  # rank of a row the training part never read: no cache holds it


def hit_rate_curve(trace_rows, capacities_rows, policy: str = "static-topk", train_fraction: float = 0.5) -> np.ndarray:
    """Hit rate (0..1) of `policy` for each capacity in rows, over the accesses of `trace_rows`
    (a 1-D sequence of row ids in access order; for static-topk, over the evaluated part)."""
    trace = np.asarray(trace_rows).ravel()
    caps = np.asarray(capacities_rows, dtype=np.int64)
    if trace.size == 0:
        raise UserError("empty address trace: no accesses to evaluate a cache on")
    if caps.size and caps.min() < 0:
        raise UserError("cache capacities must be >= 0 rows")
    if policy == "static-topk":
        if not 0.0 < train_fraction < 1.0:
            raise UserError("train_fraction must be between 0 and 1")
        split = max(1, min(trace.size - 1, int(round(trace.size * train_fraction))))
        return static_topk_curve(trace[:split], trace[split:], caps)
    if policy == "lru":
        return lru_curve(trace, caps)
    if policy == "lfu":
        return np.array([lfu_hits(trace, int(c)) / trace.size for c in caps])
    raise UserError(f"unknown cache policy '{policy}' (allowed: {', '.join(POLICIES)})")


# --- static top-K --------------------------------------------------------------------------


def unique_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and their counts (one SIMD sort; faster than np.unique here)."""
    s = np.sort(np.asarray(values).ravel())
    if s.size == 0:
        return s, np.zeros(0, dtype=np.int64)
    edges = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1], [True]]))
    return s[edges[:-1]], np.diff(edges)


def frequency_ranks(train_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the training part sorted hottest first (ties: lower row id first), and counts."""
    rows, counts = unique_counts(train_rows)
    order = np.lexsort((rows, -counts))
    return rows[order], counts[order]


def static_topk_curve(train_rows, eval_rows, capacities_rows) -> np.ndarray:
    """Fraction of `eval_rows` that falls in the `C` hottest rows of `train_rows`, for each C."""
    hot, _ = frequency_ranks(train_rows)
    rows, counts = unique_counts(eval_rows)
    return weighted_hits_below(eval_ranks(hot, rows), counts, capacities_rows) / max(1, counts.sum())


def eval_ranks(hot_rows: np.ndarray, eval_rows: np.ndarray) -> np.ndarray:
    """The training rank of each evaluated row (UNSEEN for rows never seen in training)."""
    by_row = np.argsort(hot_rows)
    sorted_rows = hot_rows[by_row]
    if len(sorted_rows) == 0:
        return np.full(len(eval_rows), UNSEEN, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sorted_rows, eval_rows), len(sorted_rows) - 1)
    return np.where(sorted_rows[pos] == eval_rows, by_row[pos], UNSEEN)


def weighted_hits_below(ranks: np.ndarray, weights: np.ndarray, capacities_rows) -> np.ndarray:
    """For each capacity C, the total weight of entries whose rank is < C."""
    order = np.argsort(ranks, kind="stable")
    cum = np.concatenate([[0], np.cumsum(weights[order])])
    return cum[np.searchsorted(ranks[order], np.asarray(capacities_rows, dtype=np.int64), side="left")]


# --- LRU from stack distances ----------------------------------------------------------------


def previous_access(trace: np.ndarray) -> np.ndarray:
    """Index of the previous access to the same row, -1 for a first access."""
    n = trace.size
    prev = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return prev
    shift = int(n).bit_length()
    if trace.min() >= 0 and int(trace.max()) < (1 << (62 - shift)):
        # One plain sort of (row, time) packed into int64 keys: several times faster than a
        # stable argsort, and the keys are unique so stability comes for free.
        keys = np.sort((trace.astype(np.int64) << shift) | np.arange(n, dtype=np.int64))
        rows, times = keys >> shift, keys & ((1 << shift) - 1)
    else:
        times = np.argsort(trace, kind="stable")
        rows = trace[times]
    same = rows[1:] == rows[:-1]
    prev[times[1:][same]] = times[:-1][same]
    return prev


def stack_distances(trace_rows) -> np.ndarray:
    """LRU stack distance of each access: distinct other rows read since the previous access to
    the same row (-1 for a first access). An access hits in an LRU cache of C rows iff 0 <= d < C.

    With p = prev(t), the distinct rows read in (p, t) are the accesses q in (p, t) whose own
    previous access lies before p (a first access counts as prev = -1). Every q <= p also has
    prev(q) < p, so d(t) = #{q < t : prev(q) < p} - (p + 1). First accesses are earlier-smaller
    for every re-access, so they are counted with a prefix sum and the hard part, a "count
    earlier smaller values", runs over the re-accesses only.
    """
    trace = np.asarray(trace_rows).ravel()
    prev = previous_access(trace)
    d = np.full(trace.size, -1, dtype=np.int64)
    reuse = np.flatnonzero(prev >= 0)
    if reuse.size == 0:
        return d
    firsts_before = np.cumsum(prev < 0)[reuse]  # first accesses at or before each re-access
    p = prev[reuse]
    # Previous-access times are distinct among re-accesses: rank them (a counting sort, O(n))
    # to get a permutation of 0..m-1 with fewer bits.
    taken = np.zeros(trace.size, dtype=bool)
    taken[p] = True
    ranks = (np.cumsum(taken) - 1)[p]
    d[reuse] = count_earlier_smaller(ranks) + firsts_before - p - 1
    return d


def count_earlier_smaller(values: np.ndarray) -> np.ndarray:
    """For each i, #{j < i : values[j] < values[i]}, for `values` a permutation of 0..n-1.

    A wavelet-style pass per bit, most significant first: the sequence is kept stably sorted by
    the bits already processed (groups of equal prefix, in time order). At bit b, an element
    with bit 1 is larger than exactly the earlier elements of its group with bit 0; then each
    group is stably split into its 0s and 1s. O(n log n).

    Because the values are a permutation, the groups need no bookkeeping: the group of prefix
    g holds exactly the values g*2^(b+1) .. (g+1)*2^(b+1)-1, so it starts at position
    g*2^(b+1), every earlier group holds exactly 2^b zeros at bit b, and its zeros end at
    start + 2^b. That leaves about a dozen in-place integer passes and one scatter per bit
    (no cumulative group ids, gathers or reductions). Every buffer is preallocated: fresh large
    temporaries cost more here than the arithmetic.
    """
    n = values.size
    dt = np.int32 if n < 2**30 else np.int64  # int32 halves the memory traffic
    cur, nxt = values.astype(dt), np.empty(n, dtype=dt)
    cnt, cnt_nxt = np.zeros(n, dtype=dt), np.empty(n, dtype=dt)
    pos = np.arange(n, dtype=dt)
    bit, start, zeros, tmp = (np.empty(n, dtype=dt) for _ in range(4))
    newpos = np.empty(n, dtype=np.intp)
    for b in range(int(max(1, n - 1)).bit_length() - 1, -1, -1):
        np.right_shift(cur, b, out=bit)
        np.bitwise_and(bit, 1, out=bit)
        np.bitwise_and(cur, ~((1 << (b + 1)) - 1), out=start)  # my group's first position
        np.cumsum(bit, out=zeros)
        np.subtract(zeros, bit, out=zeros)  # ones before me
        np.subtract(pos, zeros, out=zeros)  # zeros before me
        np.right_shift(start, 1, out=tmp)  # zeros in the earlier groups
        np.subtract(zeros, tmp, out=zeros)  # zeros before me in my group
        np.multiply(zeros, bit, out=tmp)
        cnt += tmp
        # New position: a 0 goes to start + zeros; a 1 after all 2^b zeros of its group, i.e.
        # to start + 2^b + (ones before me in my group) = pos + 2^b - zeros. Blended with the
        # bit as a factor: a masked copy costs several times more than these passes.
        np.subtract(pos, start, out=tmp)
        tmp += 1 << b
        tmp -= zeros
        tmp -= zeros
        tmp *= bit
        tmp += zeros
        np.add(tmp, start, out=newpos)
        nxt[newpos] = cur
        cnt_nxt[newpos] = cnt
        cur, nxt, cnt, cnt_nxt = nxt, cur, cnt_nxt, cnt
    # The final arrangement is sorted by value, so value v sits at position v.
    return cnt[values].astype(np.int64)


def lru_curve(trace_rows, capacities_rows) -> np.ndarray:
    d = stack_distances(trace_rows)
    reuse = np.sort(d[d >= 0])
    return np.searchsorted(reuse, np.asarray(capacities_rows, dtype=np.int64), side="left") / max(1, d.size)


def lru_hits(trace_rows, capacity: int) -> int:
    """Direct LRU simulation (an ordered dict): the check for the stack-distance curve."""
    from collections import OrderedDict

    cache: OrderedDict = OrderedDict()
    hits = 0
    for row in np.asarray(trace_rows).ravel().tolist():
        if row in cache:
            hits += 1
            cache.move_to_end(row)
        elif capacity > 0:
            cache[row] = None
            if len(cache) > capacity:
                cache.popitem(last=False)
    return hits


# --- LFU ------------------------------------------------------------------------------------


def lfu_hits(trace_rows, capacity: int) -> int:
    """Demand-filled LFU with perfect counts; the victim is the cached row with the lowest
    count, the least recently used among equals. A heap with lazy invalidation."""
    if capacity <= 0:
        return 0
    counts: dict[int, int] = {}
    last: dict[int, int] = {}  # row -> time of its latest access while cached
    heap: list[tuple[int, int, int]] = []
    hits = 0
    for t, row in enumerate(np.asarray(trace_rows).ravel().tolist()):
        c = counts.get(row, 0) + 1
        counts[row] = c
        if row in last:
            hits += 1
        elif len(last) >= capacity:
            _evict_lfu(heap, counts, last)
        last[row] = t
        heapq.heappush(heap, (c, t, row))
    return hits


def _evict_lfu(heap, counts, last) -> None:
    while True:
        c, t, row = heapq.heappop(heap)
        if last.get(row) == t and counts[row] == c:  # skip entries made stale by later accesses
            del last[row]
            return


# --- curves for reports ----------------------------------------------------------------------


@dataclass
class CacheCurves:
    """Hit rate against capacity for several policies on one layer's address stream."""

    layer_id: int
    rows_in_table: int
    row_bytes: int
    source: str
    capacities: np.ndarray
    curves: dict[str, np.ndarray]  # policy -> hit rate per capacity
    accesses: dict[str, int]  # policy -> accesses it was evaluated on

    def as_dict(self) -> dict:
        return {
            "layer_id": self.layer_id,
            "rows_in_table": self.rows_in_table,
            "row_bytes": self.row_bytes,
            "source": self.source,
            "capacities_rows": self.capacities.tolist(),
            "hit_rate": {k: v.tolist() for k, v in self.curves.items()},
            "accesses": self.accesses,
        }

    def __rich_console__(self, console, options):
        from rich.table import Table
        from rich.text import Text

        yield Text.assemble(("hot-row cache hit rates  ", "bold"), f"layer {self.layer_id}; {self.source}")
        notes = {
            "static-topk": "first half trains, second half measured",
            "lru": "demand-filled, cold start",
            "lfu": "perfect counts, demand-filled",
        }
        table = Table(
            "cache rows",
            "size",
            "% of table",
            *(f"{p} ({self.accesses[p]:,} acc.)" for p in self.curves),
            title_justify="left",
            caption="; ".join(f"{p}: {notes[p]}" for p in self.curves),
        )
        for i, c in enumerate(self.capacities):
            table.add_row(
                f"{c:,}",
                _fmt_bytes(c * self.row_bytes),
                f"{c / self.rows_in_table:.3%}",
                *(f"{v[i]:.1%}" for v in self.curves.values()),
            )
        yield table

    def plot(self, path) -> None:
        """PNG of the curves (matplotlib, imported only here)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            raise UserError("--plot needs matplotlib: pip install 'engramsim[plot]'") from None
        fig, ax = plt.subplots(figsize=(7, 4.5))
        keep = self.capacities > 0
        for policy, rates in self.curves.items():
            ax.plot(self.capacities[keep], 100 * rates[keep], marker="o", ms=3, label=policy)
        ax.set_xscale("log")
        ax.set_xlabel(f"cache capacity (rows of {self.row_bytes} B; table has {self.rows_in_table:,})")
        ax.set_ylabel("hit rate (% of accesses)")
        ax.set_title(f"Engram layer {self.layer_id} hot-row cache", fontsize=11)
        fig.text(0.01, 0.01, self.source, fontsize=6, color="gray")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        with atomic_output(path) as f:
            fig.savefig(f, dpi=120, format="png")
        plt.close(fig)


def cache_curves(
    trace_rows,
    policies,
    layer_id: int,
    rows_in_table: int,
    row_bytes: int,
    source: str,
    lfu_accesses: int = 500_000,
    progress=None,
) -> CacheCurves:
    """Curves for `policies` on one layer's accesses (LFU on the first `lfu_accesses` only: it is
    simulated per capacity in Python). Capacities: powers of 4 up to the distinct rows read."""
    trace = np.asarray(trace_rows).ravel()
    if trace.size == 0:
        raise UserError("empty address trace: no accesses to evaluate a cache on")
    n_distinct = unique_counts(trace)[0].size
    caps = np.unique(np.concatenate([[0], 4 ** np.arange(int(math.log(max(1, n_distinct), 4)) + 1), [n_distinct]]))
    curves, accesses = {}, {}
    for policy in policies:
        part = trace[:lfu_accesses] if policy == "lfu" else trace
        curves[policy] = hit_rate_curve(part, caps, policy)
        accesses[policy] = int(part.size if policy != "static-topk" else part.size - round(part.size / 2))
        if progress:
            progress(policy)
    return CacheCurves(
        layer_id=layer_id,
        rows_in_table=rows_in_table,
        row_bytes=row_bytes,
        source=source,
        capacities=caps,
        curves=curves,
        accesses=accesses,
    )


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
