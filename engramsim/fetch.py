"""How many rows one engine step fetches: the seam between address streams and the simulator.

A `RowModel` answers two questions per Engram layer: how many *distinct* rows a step of
`tokens` tokens touches, and what fraction of those a hot-row HBM cache of `cache_rows` rows
serves. `UniformRows` is the expectation under uniform hashing; engramsim.traces provides
models measured from real text (trace files) and fitted Zipf models.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from engramsim.model import EngramSpec


class RowModel(Protocol):
    source: str  # one line for reports: what fed the fetch volume

    def unique_rows(self, tokens: int, layer_id: int) -> float:
        """Distinct rows among the tokens x heads_per_layer lookups of one step at one layer."""

    def hit_rate(self, cache_rows: int, layer_id: int) -> float:
        """Fraction of those distinct rows that a hot-row cache of `cache_rows` rows holds."""


@dataclass(frozen=True)
class UniformRows:
    """Every head's index is uniform over its table: duplicates only by birthday collisions,
    and a cache of C rows out of R holds a random C/R of them."""
    spec: EngramSpec
    source: str = "uniform hashing (expectation)"

    def unique_rows(self, tokens: int, layer_id: int) -> float:
        total = 0.0
        for vocab in self.spec.engram_vocab_size:
            # E[distinct] of n draws over P buckets = P (1 - (1 - 1/P)^n), for each head.
            total += self.spec.n_head_per_ngram * vocab * -math.expm1(tokens * math.log1p(-1.0 / vocab))
        return total

    def hit_rate(self, cache_rows: int, layer_id: int) -> float:
        return min(1.0, cache_rows / self.spec.rows_per_layer)
