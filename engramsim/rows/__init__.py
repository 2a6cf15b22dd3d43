"""Row models: how many rows one engine step fetches, the seam between address streams and the
simulator.

A `RowModel` answers two questions per Engram layer: how many *distinct* rows a step of
`tokens` tokens touches, and what fraction of those a hot-row cache of `cache_rows` rows
serves.

  uniform.py    UniformRows: the expectation under uniform hashing (the simulator's default)
  trace.py      TraceRows: measured on a real address trace (engramsim.addresses)
  zipf.py       ZipfRows: Zipf parameters per n-gram order, for tables and batches beyond a trace
  zipf_fit.py   fitting ZipfRows to a trace
  load.py       load_row_model: the model `simulate --trace` names
"""

from __future__ import annotations

from typing import Protocol


class RowModel(Protocol):
    source: str  # one line for reports: what fed the fetch volume

    def unique_rows(self, tokens: int, layer_id: int) -> float:
        """Distinct rows among the tokens x heads_per_layer lookups of one step at one layer."""

    def hit_rate(self, cache_rows: int, layer_id: int) -> float:
        """Fraction of those distinct rows that a hot-row cache of `cache_rows` rows holds."""
