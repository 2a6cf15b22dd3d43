"""UniformRows: the fetch volume if every head's index were uniform over its table."""

from __future__ import annotations

import math
from dataclasses import dataclass

from engramsim.model import EngramSpec


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
