"""AddressTrace: one compressed token-id stream and the Engram spec that hashes it into rows."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engramsim import engram
from engramsim.model import EngramSpec


@dataclass
class AddressTrace:
    spec: EngramSpec  # the model's spec, with the tokenizer's compressed vocabulary
    ids: np.ndarray  # compressed token ids, one stream
    seq_starts: np.ndarray  # where each document starts in `ids`
    corpus: str
    tokenizer: str
    _rows: dict = field(default_factory=dict, repr=False)

    @property
    def n_tokens(self) -> int:
        return int(self.ids.size)

    def rows(self, layer_id: int) -> np.ndarray:
        """Row ids within the layer's table, int64 [T, (N-1)*K] (hashed once, then kept)."""
        if layer_id not in self._rows:
            self._rows[layer_id] = engram.row_ids(self.ids, self.seq_starts, self.spec, layer_id)
        return self._rows[layer_id]
