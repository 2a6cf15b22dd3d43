"""A hot-row cache that starts cold: its hit rate over time, from LRU run from empty.

A static hit rate (RowModel.hit_rate) is the cache's steady state. A cache that starts empty
hits only rows read since it started, so a run's first steps miss more. `Warmup` gives how far
the cache has warmed after `n` lookups at one layer, as a share of its steady state: from a
real trace, each access hits iff its LRU stack distance is below the capacity
(cache.stack_distances), averaged over windows of the stream and divided by the rate the last
quarter of the stream settles at; without a trace, uniform hashing gives it in closed form. The
simulator multiplies it by the row model's steady-state hit rate, so a cold cache never beats a
warm one and the two bases (per access here, per distinct row of a step there) do not mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engramsim.cache import stack_distances

POINTS = 64
MAX_ACCESSES = 4_000_000  # a cache warms up early: the stream's head is enough, and fast


@dataclass(frozen=True)
class Warmup:
    """Share of its steady-state hit rate that a cache reaches around lookup number
    `lookups[i]` (flat beyond the last)."""

    lookups: np.ndarray
    warmed: np.ndarray

    def at(self, lookups_so_far: float) -> float:
        return float(np.interp(lookups_so_far, self.lookups, self.warmed))


def lru_warmup(distances: np.ndarray, capacity_rows: int, points: int = POINTS) -> Warmup:
    """LRU from empty over an access stream given by its stack distances (-1: first access)."""
    hits = ((distances >= 0) & (distances < capacity_rows)).astype(float)
    edges = np.linspace(0, hits.size, min(points, hits.size) + 1).astype(int)
    rates = np.add.reduceat(hits, edges[:-1]) / np.diff(edges)
    steady = rates[-max(1, len(rates) // 4) :].mean()
    warmed = np.minimum(rates / steady, 1.0) if steady > 0 else np.ones_like(rates)
    return Warmup((edges[:-1] + edges[1:]) / 2.0, warmed)


def uniform_warmup(rows_in_table: int, capacity_rows: int, points: int = POINTS) -> Warmup:
    """Uniform lookups over R rows: after n of them, E[distinct rows seen] = R (1 - e^(-n/R)), an
    LRU of C rows holds min(that, C) of them, and the next lookup hits with that share of R."""
    r, c = float(rows_in_table), float(min(capacity_rows, rows_in_table))
    full = -r * math.log1p(-c / r) if c < r else 10.0 * r  # lookups until the cache is full
    n = np.linspace(0.0, 2.0 * full, points)
    return Warmup(n, np.minimum(r * -np.expm1(-n / r), c) / c if c else np.ones(points))


@dataclass
class ColdStart:
    """Builds each layer's warm-up curve for a cache size: from a trace's access stream (its
    stack distances computed once per layer), or from uniform hashing when there is none."""

    rows_per_layer: int
    trace: object | None = None  # an AddressTrace
    source: str = "uniform hashing (LRU from empty, closed form)"
    _distances: dict = field(default_factory=dict, repr=False)

    def curve(self, capacity_rows: int, layer_id: int) -> Warmup:
        if self.trace is None:
            return uniform_warmup(self.rows_per_layer, capacity_rows)
        if layer_id not in self._distances:
            self._distances[layer_id] = stack_distances(self.trace.rows(layer_id).ravel()[:MAX_ACCESSES])
        return lru_warmup(self._distances[layer_id], capacity_rows)


def cold_start(model, trace_path: str | Path | None) -> ColdStart:
    """The cold-start model `simulate --cache-start cold` uses: the trace's own access stream
    when a trace is given (`default`: the offline corpus's), else uniform hashing."""
    spec = model.engram
    if not trace_path or str(trace_path) == "zipf":
        return ColdStart(spec.rows_per_layer)
    from engramsim.addresses.store import default_trace_path, load_trace
    from engramsim.rows.trace import default_row_model

    if str(trace_path) == "default":
        default_row_model(model)  # builds the default trace once
        trace_path = default_trace_path(spec)
    trace = load_trace(trace_path, spec)
    return ColdStart(spec.rows_per_layer, trace, f"trace {Path(trace_path).name}: LRU from empty")
