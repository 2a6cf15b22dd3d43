"""Statistics of an address trace, per Engram layer (`analyze`):

* distinct rows per engine step: decode steps take B tokens at random positions of the corpus
  (B concurrent sequences, one token each); prefill chunks take B consecutive tokens;
* hot-row hit rates: static top-K learned on the first half of the documents, evaluated on the
  second half, counting the distinct rows of decode steps of `batch_ref` tokens (what a step
  actually fetches), and also per access;
* reuse distances in tokens, the working set as tokens accumulate, and the Zipf exponent of
  row frequency against rank per n-gram order.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from engramsim import engram
from engramsim.addresses.trace import AddressTrace
from engramsim.cache import eval_ranks, frequency_ranks, previous_access, unique_counts, weighted_hits_below
from engramsim.fileio import jsonable
from engramsim.model import EngramSpec

BATCH_REF = 256  # decode batch at which the hit-rate curve counts distinct rows per step
MAX_BATCH = 1 << 16  # largest measured step
SAMPLE_TOKENS = 1 << 16  # tokens sampled per measured batch size (repeats x batch)
# The EngramSpec fields that decide the row ids: a trace's statistics hold for these only.
GEOMETRY = ("layer_ids", "max_ngram_size", "n_head_per_ngram", "engram_vocab_size", "seed")
# LayerStats fields that are arrays (stored as arrays in a trace file, lists in JSON).
ARRAY_FIELDS = (
    "batch_tokens",
    "unique_decode",
    "unique_prefill",
    "capacities",
    "hit_step",
    "hit_access",
    "zipf_alpha",
    "zipf_support",
    "ws_tokens",
    "ws_rows",
)


@dataclass
class LayerStats:
    layer_id: int
    rows_in_table: int
    n_accesses: int
    n_distinct: int
    batch_tokens: np.ndarray  # measured step sizes (tokens)
    unique_decode: np.ndarray  # mean distinct rows per decode step of that many tokens
    unique_prefill: np.ndarray  # mean distinct rows per prefill chunk of that many tokens
    capacities: np.ndarray  # cache sizes (rows) of the hit-rate curve
    hit_step: np.ndarray  # static top-K hit rate of a decode step's distinct rows
    hit_access: np.ndarray  # static top-K hit rate per access
    n_train_distinct: int  # rows seen in the training half: the most top-K can rank
    zipf_alpha: np.ndarray  # fitted exponent per n-gram order
    zipf_support: np.ndarray  # distinct rows per head table, per order
    reuse_fraction: float  # accesses whose row was read before
    reuse_p50_tokens: float
    reuse_p90_tokens: float
    ws_tokens: np.ndarray  # working set: tokens seen ...
    ws_rows: np.ndarray  # ... and distinct rows among them


@dataclass
class TraceStats:
    geometry: dict
    compressed_vocab_size: int
    corpus: str
    tokenizer: str
    n_tokens: int
    n_sequences: int
    batch_ref: int
    layers: dict[int, LayerStats]

    @property
    def source(self) -> str:
        return (
            f"trace: {self.corpus}; {self.n_tokens:,} tokens; static top-K trained on the first "
            f"half, hit rate of decode-step rows at batch {self.batch_ref}"
        )

    def header(self) -> dict:
        """The scalars, as plain JSON types (a trace file's header)."""
        layers = {
            str(layer): {k: jsonable(v) for k, v in dataclasses.asdict(ls).items() if k not in ARRAY_FIELDS}
            for layer, ls in self.layers.items()
        }
        return {
            "geometry": self.geometry,
            "compressed_vocab_size": self.compressed_vocab_size,
            "corpus": self.corpus,
            "tokenizer": self.tokenizer,
            "n_tokens": self.n_tokens,
            "n_sequences": self.n_sequences,
            "batch_ref": self.batch_ref,
            "layers": layers,
        }

    def to_dict(self) -> dict:
        """Everything, as plain JSON types (for --json)."""
        out = self.header()
        for layer, ls in self.layers.items():
            out["layers"][str(layer)].update(
                {name: jsonable(np.asarray(getattr(ls, name)).tolist()) for name in ARRAY_FIELDS}
            )
        out["source"] = self.source
        return out

    def __rich_console__(self, console, options):
        from engramsim.report.traces import render_trace_stats

        yield from render_trace_stats(self)


def analyze(trace: AddressTrace, batch_ref: int = BATCH_REF, seed: int = 0, progress=None) -> TraceStats:
    """Measure every Engram layer of `trace` (see the module docstring)."""
    layers = {}
    for layer in trace.spec.layer_ids:
        layers[layer] = analyze_layer(trace, layer, batch_ref, np.random.default_rng(seed + layer))
        if progress:
            progress(layer)
    return TraceStats(
        geometry=geometry(trace.spec),
        compressed_vocab_size=trace.spec.compressed_vocab_size,
        corpus=trace.corpus,
        tokenizer=trace.tokenizer,
        n_tokens=trace.n_tokens,
        n_sequences=len(trace.seq_starts),
        batch_ref=batch_ref,
        layers=layers,
    )


def analyze_layer(trace: AddressTrace, layer_id: int, batch_ref: int, rng) -> LayerStats:
    rows = trace.rows(layer_id)
    T, H = rows.shape
    grid = batch_grid(T)
    caps, hit_step, hit_access, n_train = _hit_curves(rows, _train_split(trace), batch_ref, rng)
    alpha, support = zipf_fit(rows, trace.spec)
    prev = previous_access(rows.ravel())
    reuse = _reuse_summary(prev, H)
    ws_t, ws_r = working_set(prev, H)
    return LayerStats(
        layer_id=layer_id,
        rows_in_table=engram.layer_rows(trace.spec, layer_id),
        n_accesses=rows.size,
        n_distinct=int(ws_r[-1]),
        batch_tokens=grid,
        unique_decode=np.array([_mean_unique(rows, _decode_steps(T, b, rng)) for b in grid]),
        unique_prefill=np.array([_mean_unique(rows, _prefill_steps(T, b, rng)) for b in grid]),
        capacities=caps,
        hit_step=hit_step,
        hit_access=hit_access,
        n_train_distinct=n_train,
        zipf_alpha=alpha,
        zipf_support=support,
        reuse_fraction=reuse[0],
        reuse_p50_tokens=reuse[1],
        reuse_p90_tokens=reuse[2],
        ws_tokens=ws_t,
        ws_rows=ws_r,
    )


def batch_grid(n_tokens: int) -> np.ndarray:
    """Powers of two from 1 up to half the trace (at most MAX_BATCH), so a step never needs
    more tokens than the trace has."""
    top = max(1, min(MAX_BATCH, n_tokens // 2))
    return 2 ** np.arange(int(math.log2(top)) + 1)


def _decode_steps(T: int, batch: int, rng) -> np.ndarray:
    """[repeats, batch] token positions, distinct within and across steps: B sequences at
    unrelated places of the corpus, one token each."""
    reps = max(1, min(64, SAMPLE_TOKENS // batch, T // batch))
    return rng.permutation(T)[: reps * batch].reshape(reps, batch)


def _prefill_steps(T: int, batch: int, rng) -> np.ndarray:
    """[repeats, batch] positions of contiguous chunks at random starts."""
    reps = max(1, min(64, SAMPLE_TOKENS // batch))
    starts = rng.integers(0, T - batch + 1, size=reps)
    return starts[:, None] + np.arange(batch)


def _mean_unique(rows: np.ndarray, steps: np.ndarray) -> float:
    r = np.sort(rows[steps].reshape(steps.shape[0], -1), axis=1)
    return float(np.mean(1 + np.count_nonzero(np.diff(r, axis=1), axis=1)))


def _train_split(trace: AddressTrace) -> int:
    """Token index where the second half of the documents begins (at least one token each side)."""
    starts = trace.seq_starts
    i = int(np.searchsorted(starts, trace.n_tokens // 2))
    cut = int(starts[i]) if 0 < i < len(starts) else trace.n_tokens // 2
    return min(max(cut, 1), trace.n_tokens - 1)


def _hit_curves(rows, split, batch_ref, rng):
    """Static top-K: ranks from the training part; evaluated per access and per decode step's
    distinct rows (eval positions shuffled into steps of `batch_ref` tokens)."""
    hot, _ = frequency_ranks(rows[:split])
    ev = rows[split:]
    caps = np.unique(np.concatenate([[0], 2 ** np.arange(int(math.log2(max(1, len(hot)))) + 1), [len(hot)]]))
    u, c = unique_counts(ev)
    hit_access = weighted_hits_below(eval_ranks(hot, u), c, caps) / c.sum()
    # Distinct rows of each step: unique (step, row) keys; then how often each row is in a step.
    span = int(rows.max()) + 1
    step = np.repeat(np.arange(len(ev), dtype=np.int64) // max(1, batch_ref), ev.shape[1])
    keys, _ = unique_counts(step * span + ev[rng.permutation(len(ev))].ravel())
    u, c = unique_counts(keys % span)
    hit_step = weighted_hits_below(eval_ranks(hot, u), c, caps) / c.sum()
    return caps, hit_step, hit_access, len(hot)


def zipf_fit(rows: np.ndarray, spec: EngramSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per n-gram order: the Zipf exponent s of row frequency against rank (log-log least squares
    over ~30 log-spaced ranks from 1 to the last rank read at least 3 times, so every decade
    weighs the same), and the mean distinct rows per head table."""
    K = spec.n_head_per_ngram
    alphas, supports = [], []
    for o in range(spec.max_ngram_size - 1):
        block = rows[:, o * K : (o + 1) * K]
        _, counts = unique_counts(block)
        counts = np.sort(counts)[::-1]
        supports.append(counts.size / K)
        last = int(np.searchsorted(-counts, -3, side="right"))  # ranks with count >= 3
        if last < 10:
            alphas.append(float("nan"))
            continue
        ranks = np.unique(np.geomspace(1, last, 30).astype(np.int64))
        slope = np.polyfit(np.log(ranks), np.log(counts[ranks - 1]), 1)[0]
        alphas.append(float(-slope))
    return np.array(alphas), np.array(supports)


def _reuse_summary(prev: np.ndarray, H: int) -> tuple[float, float, float]:
    """Fraction of accesses that re-read a row, and the median / 90th percentile of the tokens
    since that row's previous read. `prev` is previous_access of the flattened [T, H] rows."""
    reused = prev >= 0
    if not reused.any():
        return 0.0, float("nan"), float("nan")
    dist = np.flatnonzero(reused) // H - prev[reused] // H
    return float(reused.mean()), float(np.percentile(dist, 50)), float(np.percentile(dist, 90))


def working_set(prev: np.ndarray, H: int, points: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Distinct rows among the first t tokens, for log-spaced t up to the whole trace."""
    T = prev.size // H
    cum = np.cumsum(np.count_nonzero((prev < 0).reshape(T, H), axis=1))
    t = np.unique(np.geomspace(1, T, points).astype(np.int64))
    return t, cum[t - 1]


def geometry(spec: EngramSpec) -> dict:
    """The spec's GEOMETRY fields as JSON types: what a trace must match to be reused."""
    return {k: jsonable(getattr(spec, k)) for k in GEOMETRY}
