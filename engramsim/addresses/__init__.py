"""Real Engram address streams: from text to row ids, their statistics, and trace files.

A trace is the compressed token-id stream of real text plus the model's Engram spec; the row
ids per token and layer follow exactly from `engramsim.engram` (a trace file stores ids, not
rows, so it stays small and anyone can re-derive the rows).

  trace.py   AddressTrace: the id stream, hashed into rows on demand
  build.py   build_trace from text or token-id files; trace_for, what the CLI asks for
  stats.py   analyze: distinct rows per step, hit-rate curves, reuse, working set, Zipf slope
  store.py   trace files (.npz) and the cache of the default-corpus trace

Row models built on these measurements live in `engramsim.rows`.
"""
