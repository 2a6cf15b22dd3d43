"""TraceRows: a RowModel measured from a real address trace, and the default-corpus one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engramsim.addresses.build import build_trace
from engramsim.addresses.stats import LayerStats, TraceStats, analyze
from engramsim.addresses.store import check_geometry, default_trace_path, load_stats, save_trace
from engramsim.errors import UserError
from engramsim.model import ModelSpec


@dataclass(frozen=True)
class TraceRows:
    """RowModel measured from a real trace.

    unique_rows(n): piecewise linear in (log n, log rows) between measured decode batch sizes;
    below 1 token, proportional to n; above the largest measured batch, the last segment's
    log-log slope continues (duplicates keep growing at the rate last seen), never more than
    n x heads_per_layer lookups nor the table's rows.

    hit_rate(C): piecewise linear in log C between measured capacities. Static top-K can rank
    only rows seen in training; capacity beyond them holds rows chosen uniformly from the rest
    of the table, so the curve rises linearly from that plateau to 1 at the full table.
    """

    stats: TraceStats
    heads_per_layer: int
    source: str

    def unique_rows(self, tokens: int, layer_id: int) -> float:
        ls = self._layer(layer_id)
        if tokens <= 0:
            return 0.0
        x, y = np.log(ls.batch_tokens.astype(float)), np.log(ls.unique_decode)
        if tokens < 1:
            return float(tokens * ls.unique_decode[0])
        lx = math.log(tokens)
        if lx <= x[-1] or len(x) < 2:
            v = math.exp(np.interp(lx, x, y))
        else:
            slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
            v = math.exp(y[-1] + slope * (lx - x[-1]))
        return float(min(v, tokens * self.heads_per_layer, ls.rows_in_table))

    def hit_rate(self, cache_rows: int, layer_id: int) -> float:
        ls = self._layer(layer_id)
        if cache_rows <= 0:
            return 0.0
        if cache_rows >= ls.rows_in_table:
            return 1.0
        caps, hits = ls.capacities.astype(float), ls.hit_step
        top = caps[-1]
        if cache_rows <= top:
            x = np.log(np.maximum(caps, 0.5))  # capacity 0 sits at log(0.5), below one row
            return float(np.interp(math.log(cache_rows), x, hits))
        plateau = hits[-1]
        extra = (cache_rows - top) / max(1.0, ls.rows_in_table - top)
        return float(plateau + (1 - plateau) * extra)

    def _layer(self, layer_id: int) -> LayerStats:
        if layer_id not in self.stats.layers:
            raise UserError(f"the trace has no Engram layer {layer_id} (layers: {sorted(self.stats.layers)})")
        return self.stats.layers[layer_id]


def trace_row_model(path: str | Path, model: ModelSpec) -> TraceRows:
    """TraceRows from a trace file saved by `engramsim trace --save`; it must match the model."""
    stats = load_stats(path)
    check_geometry(stats, model.engram, path)
    return TraceRows(
        stats=stats,
        heads_per_layer=model.engram.heads_per_layer,
        source=stats.source.replace("trace:", f"trace {Path(path).name}:", 1),
    )


def default_row_model(model: ModelSpec, progress=None) -> TraceRows:
    """RowModel from the offline default corpus (engramsim.corpus), built once and then read
    from the cache under ~/.cache/engramsim (or $ENGRAMSIM_CACHE_DIR)."""
    if model.engram is None:
        raise UserError(f"model {model.name} has no Engram layers to trace")
    path = default_trace_path(model.engram)
    if not path.is_file():
        trace = build_trace(model.engram)
        save_trace(path, trace, analyze(trace, progress=progress))
    return trace_row_model(path, model)
