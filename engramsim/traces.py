"""Real Engram address streams: from text to rows, their statistics, and RowModels for `simulate`.

A trace is the compressed token-id stream of real text plus the model's Engram spec; the row
ids per token and layer follow exactly from `engramsim.engram` (the file stores ids, not rows,
so it stays small and anyone can re-derive the rows). `analyze` measures, per Engram layer:

* distinct rows per engine step: decode steps take B tokens at random positions of the corpus
  (B concurrent sequences, one token each); prefill chunks take B consecutive tokens;
* hot-row hit rates: static top-K learned on the first half of the documents, evaluated on the
  second half, counting the distinct rows of decode steps of `batch_ref` tokens (what a step
  actually fetches), and also per access;
* reuse distances in tokens, the working set as tokens accumulate, and a Zipf fit of row
  frequencies per n-gram order.

`TraceRows` turns those measurements into a `RowModel` (interpolation documented on its
methods); `ZipfRows` extrapolates fitted Zipf parameters to other table and batch sizes.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engramsim import engram
from engramsim.cache import eval_ranks, frequency_ranks, previous_access, unique_counts, weighted_hits_below
from engramsim.corpus import DEFAULT_MAX_BYTES, Corpus, read_token_ids, stdlib_corpus
from engramsim.errors import UserError
from engramsim.model import EngramSpec, ModelSpec
from engramsim.tokenize import load_tokenizer

TRACE_FORMAT = 1
BATCH_REF = 256          # decode batch at which the hit-rate curve counts distinct rows per step
MAX_BATCH = 1 << 16      # largest measured step
SAMPLE_TOKENS = 1 << 16  # tokens sampled per measured batch size (repeats x batch)
GEOMETRY = ("layer_ids", "max_ngram_size", "n_head_per_ngram", "engram_vocab_size", "seed")


# --- the trace -------------------------------------------------------------------------------

@dataclass
class AddressTrace:
    spec: EngramSpec          # the model's spec, with the tokenizer's compressed vocabulary
    ids: np.ndarray           # compressed token ids, one stream
    seq_starts: np.ndarray    # where each document starts in `ids`
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


def build_trace(spec: EngramSpec, corpus: Corpus | None = None, tokenizer_path=None,
                token_id_files=None) -> AddressTrace:
    """Tokenize, compress and stream real text (or token-id files) for `spec`.

    With a tokenizer (the built-in one or `tokenizer_path`), the hash uses that tokenizer's
    compressed vocabulary size, as the reference derives it from its tokenizer. Token-id files
    without a tokenizer are taken as compressed ids of the model's own tokenizer.
    """
    if token_id_files:
        seqs = [s for f in token_id_files for s in read_token_ids(f)]
        source = f"{len(token_id_files)} token-id file(s)"
        if tokenizer_path is None:
            engram.check_ids(np.concatenate(seqs), spec)
            return _stream(spec, seqs, source, "compressed ids as given")
        tok = load_tokenizer(tokenizer_path)
    else:
        corpus = corpus or stdlib_corpus()
        tok = load_tokenizer(tokenizer_path, list(corpus.documents))
        seqs = [s for s in tok.encode(list(corpus.documents)) if s.size]
        source = corpus.description
    comp = tok.compression()
    seqs = [comp(s) for s in seqs]
    if comp.size > np.iinfo(np.int64).max // 4 or spec.compressed_pad_id >= comp.size:
        raise UserError(f"compressed pad id {spec.compressed_pad_id} is outside the tokenizer's "
                        f"{comp.size} compressed ids")
    spec = dataclasses.replace(spec, compressed_vocab_size=comp.size)
    return _stream(spec, seqs, source, f"{tok.description}, compressed to {comp.size:,} ids")


def _stream(spec, seqs, source, tokenizer) -> AddressTrace:
    seqs = [s for s in seqs if len(s)]
    if not seqs or sum(len(s) for s in seqs) < 2:
        raise UserError("the text gives no tokens to trace")
    ids = np.concatenate(seqs).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum([len(s) for s in seqs[:-1]])]).astype(np.int64)
    return AddressTrace(spec=spec, ids=ids, seq_starts=starts, corpus=source, tokenizer=tokenizer)


# --- statistics ------------------------------------------------------------------------------

@dataclass
class LayerStats:
    layer_id: int
    rows_in_table: int
    n_accesses: int
    n_distinct: int
    batch_tokens: np.ndarray        # measured step sizes (tokens)
    unique_decode: np.ndarray       # mean distinct rows per decode step of that many tokens
    unique_prefill: np.ndarray      # mean distinct rows per prefill chunk of that many tokens
    capacities: np.ndarray          # cache sizes (rows) of the hit-rate curve
    hit_step: np.ndarray            # static top-K hit rate of a decode step's distinct rows
    hit_access: np.ndarray          # static top-K hit rate per access
    n_train_distinct: int           # rows seen in the training half: the most top-K can rank
    zipf_alpha: np.ndarray          # fitted exponent per n-gram order
    zipf_support: np.ndarray        # distinct rows per head table, per order
    reuse_fraction: float           # accesses whose row was read before
    reuse_p50_tokens: float
    reuse_p90_tokens: float
    ws_tokens: np.ndarray           # working set: tokens seen ...
    ws_rows: np.ndarray             # ... and distinct rows among them


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
        return (f"trace: {self.corpus}; {self.n_tokens:,} tokens; static top-K trained on the first "
                f"half, hit rate of decode-step rows at batch {self.batch_ref}")

    def __rich_console__(self, console, options):
        yield from _render_stats(self)


def analyze(trace: AddressTrace, batch_ref: int = BATCH_REF, seed: int = 0, progress=None) -> TraceStats:
    """Measure every Engram layer of `trace` (see the module docstring)."""
    layers = {}
    for layer in trace.spec.layer_ids:
        layers[layer] = analyze_layer(trace, layer, batch_ref, np.random.default_rng(seed + layer))
        if progress:
            progress(layer)
    return TraceStats(geometry={k: _jsonable(getattr(trace.spec, k)) for k in GEOMETRY},
                      compressed_vocab_size=trace.spec.compressed_vocab_size, corpus=trace.corpus,
                      tokenizer=trace.tokenizer, n_tokens=trace.n_tokens, n_sequences=len(trace.seq_starts),
                      batch_ref=batch_ref, layers=layers)


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
        layer_id=layer_id, rows_in_table=engram.layer_rows(trace.spec, layer_id), n_accesses=rows.size,
        n_distinct=int(ws_r[-1]), batch_tokens=grid,
        unique_decode=np.array([_mean_unique(rows, _decode_steps(T, b, rng)) for b in grid]),
        unique_prefill=np.array([_mean_unique(rows, _prefill_steps(T, b, rng)) for b in grid]),
        capacities=caps, hit_step=hit_step, hit_access=hit_access, n_train_distinct=n_train,
        zipf_alpha=alpha, zipf_support=support, reuse_fraction=reuse[0], reuse_p50_tokens=reuse[1],
        reuse_p90_tokens=reuse[2], ws_tokens=ws_t, ws_rows=ws_r)


def batch_grid(n_tokens: int) -> np.ndarray:
    """Powers of two from 1 up to half the trace (at most MAX_BATCH), so a step never needs
    more tokens than the trace has."""
    top = max(1, min(MAX_BATCH, n_tokens // 2))
    return 2 ** np.arange(int(math.log2(top)) + 1)


def _decode_steps(T: int, batch: int, rng) -> np.ndarray:
    """[repeats, batch] token positions, distinct within and across steps: B sequences at
    unrelated places of the corpus, one token each."""
    reps = max(1, min(64, SAMPLE_TOKENS // batch, T // batch))
    return rng.permutation(T)[:reps * batch].reshape(reps, batch)


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
        block = rows[:, o * K:(o + 1) * K]
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


# --- persistence -----------------------------------------------------------------------------

_ARRAYS = ("batch_tokens", "unique_decode", "unique_prefill", "capacities", "hit_step", "hit_access",
           "zipf_alpha", "zipf_support", "ws_tokens", "ws_rows")


def save_trace(path: str | Path, trace: AddressTrace, stats: TraceStats) -> Path:
    """One .npz: the compressed id stream and document starts, plus the statistics and a JSON
    header (format, geometry, sources). Written atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_suffix(".npz")
    meta = _stats_meta(stats)
    arrays = {"ids": trace.ids, "seq_starts": trace.seq_starts, "meta": np.array(json.dumps(meta))}
    for layer, ls in stats.layers.items():
        for name in _ARRAYS:
            arrays[f"L{layer}_{name}"] = np.asarray(getattr(ls, name))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


def _stats_meta(stats: TraceStats) -> dict:
    scalars = {layer: {k: _jsonable(v) for k, v in dataclasses.asdict(ls).items() if k not in _ARRAYS}
               for layer, ls in stats.layers.items()}
    return {"format": TRACE_FORMAT, "geometry": stats.geometry, "compressed_vocab_size": stats.compressed_vocab_size,
            "corpus": stats.corpus, "tokenizer": stats.tokenizer, "n_tokens": stats.n_tokens,
            "n_sequences": stats.n_sequences, "batch_ref": stats.batch_ref,
            "layers": {str(k): v for k, v in scalars.items()}}


def load_stats(path: str | Path) -> TraceStats:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"trace file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != TRACE_FORMAT:
                raise UserError(f"{path}: trace format {meta.get('format')} (this engramsim reads {TRACE_FORMAT})")
            layers = {}
            for key, scalars in meta["layers"].items():
                layer = int(key)
                arrays = {name: z[f"L{layer}_{name}"] for name in _ARRAYS}
                layers[layer] = LayerStats(**scalars, **arrays)
    except UserError:
        raise
    except Exception as e:  # not a zip, not our keys, bad JSON: one line, no traceback
        raise UserError(f"{path}: not an engramsim trace file ({type(e).__name__}: {str(e)[:100]})") from None
    return TraceStats(geometry=meta["geometry"], compressed_vocab_size=meta["compressed_vocab_size"],
                      corpus=meta["corpus"], tokenizer=meta["tokenizer"], n_tokens=meta["n_tokens"],
                      n_sequences=meta["n_sequences"], batch_ref=meta["batch_ref"], layers=layers)


def load_trace(path: str | Path, spec: EngramSpec) -> AddressTrace:
    """The id stream of a saved trace, re-hashable for `spec` (its geometry must match)."""
    stats = load_stats(path)
    check_geometry(stats, spec, path)
    with np.load(path, allow_pickle=False) as z:
        ids, starts = z["ids"], z["seq_starts"]
    spec = dataclasses.replace(spec, compressed_vocab_size=stats.compressed_vocab_size)
    return AddressTrace(spec=spec, ids=ids, seq_starts=starts, corpus=stats.corpus, tokenizer=stats.tokenizer)


def check_geometry(stats: TraceStats, spec: EngramSpec, where) -> None:
    for k in GEOMETRY:
        want = _jsonable(getattr(spec, k))
        if stats.geometry.get(k) != want:
            raise UserError(f"{where}: trace was built for {k}={stats.geometry.get(k)}, the model has {want}")


def _jsonable(v):
    if isinstance(v, (tuple, list, np.ndarray)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


# --- RowModels -------------------------------------------------------------------------------

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


def load_row_model(path: str | Path, model: ModelSpec) -> TraceRows | ZipfRows:
    """RowModel from a trace file saved by `engramsim trace --save`; it must match the model.

    The special value "zipf" (`simulate --trace zipf`) gives instead the Zipf model fitted to
    the default-corpus trace (zipf_row_model): it reproduces that trace inside the range it
    measured and extrapolates to other table and batch sizes; its source names the parameters.
    """
    if model.engram is None:
        raise UserError(f"model {model.name} has no Engram layers to trace")
    if str(path) == "zipf":
        return zipf_row_model(model)
    stats = load_stats(path)
    check_geometry(stats, model.engram, path)
    return TraceRows(stats=stats, heads_per_layer=model.engram.heads_per_layer,
                     source=stats.source.replace("trace:", f"trace {Path(path).name}:", 1))


def default_cache_dir() -> Path:
    return Path(os.environ.get("ENGRAMSIM_CACHE_DIR") or Path.home() / ".cache" / "engramsim")


def default_trace_path(spec: EngramSpec) -> Path:
    """Cache file of the default-corpus trace for this geometry, this Python (its stdlib is the
    corpus) and this trace format."""
    key = json.dumps({"geometry": {k: _jsonable(getattr(spec, k)) for k in GEOMETRY},
                      "pad": spec.compressed_pad_id, "python": sys.version, "max_bytes": DEFAULT_MAX_BYTES,
                      "format": TRACE_FORMAT, "batch_ref": BATCH_REF}, sort_keys=True)
    return default_cache_dir() / "traces" / f"stdlib-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def default_row_model(model: ModelSpec, progress=None) -> TraceRows:
    """RowModel from the offline default corpus (engramsim.corpus), built once and then read
    from the cache under ~/.cache/engramsim (or $ENGRAMSIM_CACHE_DIR)."""
    if model.engram is None:
        raise UserError(f"model {model.name} has no Engram layers to trace")
    path = default_trace_path(model.engram)
    if not path.is_file():
        trace = build_trace(model.engram)
        save_trace(path, trace, analyze(trace, progress=progress))
    return load_row_model(path, model)


# --- Zipf extrapolation ----------------------------------------------------------------------

ZIPF_BINS = 240          # log-spaced rank bins per head table
POISSON_EXACT = 64       # training counts below this are ranked with their Poisson noise


def zipf_bins(s: float, support: float, table_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probability of one row, rows) per log-spaced rank bin of Zipf(s) over ranks 1..support.

    Bin masses integrate r^-s over the bin, so a bin of a million ranks weighs what its ranks
    weigh. With a table of fewer rows than the support, hashing folds the n-grams beyond the
    table onto its rows: their mass spreads evenly over the table's rows (ranks up to the table
    keep their own rows)."""
    S = max(1, int(round(support)))
    cap = S if table_rows is None else min(S, int(table_rows))
    edges = np.unique(np.concatenate([np.geomspace(1, S + 1, ZIPF_BINS).astype(np.int64), [cap + 1, S + 1]]))
    lo, hi = edges[:-1].astype(float), edges[1:].astype(float)
    a, b = lo - 0.5, hi - 0.5
    mass = np.log(b / a) if abs(s - 1) < 1e-9 else (b ** (1 - s) - a ** (1 - s)) / (1 - s)
    mass /= mass.sum()
    own = lo <= cap
    p = mass[own] / (hi - lo)[own] + mass[~own].sum() / cap
    return p, (hi - lo)[own]


def zipf_distinct(draws, s: float, support: float, table_rows: int | None = None) -> np.ndarray:
    """Expected distinct rows among `draws` independent draws from one Zipf head table."""
    p, m = zipf_bins(s, support, table_rows)
    n = np.atleast_1d(np.asarray(draws, dtype=float))
    return np.sum(m * -np.expm1(n[:, None] * np.log1p(-p)), axis=1)


def zipf_support_for(s: float, seen: float, draws: float, table_rows: int) -> float:
    """The support R at which `draws` accesses of Zipf(s) see `seen` distinct rows on average
    (bisection on log R; more rows in the population, more of them seen). A trace that saw
    about as many rows as it read gives no bound: then the table's size."""
    lo, hi = math.log(max(1.0, seen)), math.log(max(seen, table_rows))
    if zipf_distinct(draws, s, math.exp(hi))[0] <= seen:
        return float(math.exp(hi))
    for _ in range(36):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if zipf_distinct(draws, s, math.exp(mid))[0] < seen else (lo, mid)
    return float(math.exp(0.5 * (lo + hi)))


@dataclass(frozen=True)
class ZipfRows:
    """RowModel from Zipf parameters, for tables and batches beyond any trace.

    Each head table of order n reads rank r with probability ~ r^-alpha_n over a population of
    `support[n]` rows (folded onto the table when the table is smaller, see zipf_bins). Every
    token reads one row per head, independently.

    unique_rows(n) = sum over heads and ranks of 1 - (1 - p_r)^n.
    hit_rate(C): share of a decode step's distinct rows (`batch_ref` tokens, like TraceRows)
    that a static top-K cache of C rows holds. With `train_tokens` None the cache holds the
    truly hottest rows. Otherwise it is ranked by counts from a profile of that many accesses
    per head (Poisson counts: rows never seen in the profile cannot be ranked, rows seen equally
    often are taken at random), and capacity beyond the profiled rows holds random table rows,
    as in TraceRows.
    """
    spec: EngramSpec
    alpha: tuple[float, ...]
    support: tuple[int, ...]
    batch_ref: int = BATCH_REF
    source: str = "Zipf fit"
    train_tokens: float | None = None

    @functools.cached_property
    def _bins(self):
        """(probability, rows) per bin over all head tables of a layer."""
        probs, counts = [], []
        sizes = engram.table_sizes(self.spec)[self.spec.layer_ids[0]]
        for a, s, heads in zip(self.alpha, self.support, sizes):
            p, m = zipf_bins(a, s, min(heads))
            probs.append(np.tile(p, len(heads)))
            counts.append(np.tile(m, len(heads)))
        return np.concatenate(probs), np.concatenate(counts).astype(float)

    def unique_rows(self, tokens: int, layer_id: int) -> float:
        p, m = self._bins
        return float(np.sum(m * -np.expm1(tokens * np.log1p(-p))))

    def hit_rate(self, cache_rows: int, layer_id: int) -> float:
        rows, hits = self._hit_curve
        return float(np.interp(cache_rows, rows, hits))

    @functools.cached_property
    def _hit_curve(self):
        """(cache rows, hit rate) breakpoints; linear between them (ties are taken at random)."""
        p, m = self._bins
        w = m * -np.expm1(self.batch_ref * np.log1p(-p))  # distinct rows per step, per bin
        if self.train_tokens is None:
            order = np.argsort(-p)
            rows, hits = np.cumsum(m[order]), np.cumsum(w[order])
        else:
            rows, hits = _profiled_ranking(p * self.train_tokens, m, w)
        table = engram.layer_rows(self.spec, self.spec.layer_ids[0])
        rows = np.concatenate([[0.0], rows, [max(table, rows[-1])]])
        hits = np.concatenate([[0.0], hits, [w.sum()]])
        return rows, hits / w.sum()


def _profiled_ranking(lam: np.ndarray, m: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative (rows, weight) of a cache filled in order of profile counts ~ Poisson(lam).

    Counts of POISSON_EXACT or more rank rows as their true rate does (relative noise under
    1/8), so those come first by rate; below that, each count class k = 63..1 is one segment
    whose rows are taken at random, hence linear."""
    k = np.arange(POISSON_EXACT)
    log_fact = np.array([math.lgamma(i + 1) for i in k])
    pmf = np.exp(k * np.log(np.maximum(lam, 1e-300))[:, None] - lam[:, None] - log_fact)
    many = np.clip(1 - pmf.sum(axis=1), 0, 1)
    order = np.argsort(-lam)
    rows = np.concatenate([np.cumsum((m * many)[order]), (m * many).sum() + np.cumsum(m @ pmf[:, :0:-1])])
    hits = np.concatenate([np.cumsum((w * many)[order]), (w * many).sum() + np.cumsum(w @ pmf[:, :0:-1])])
    return rows, hits


def _zipf_fit_objective(ls: LayerStats, spec: EngramSpec, n_tokens: int):
    """Squared log error of a ZipfRows against a trace layer's measured decode distinct rows and
    static top-K curve (capacities where it is at least 0.5%), as a function of
    (alpha per order..., log10 profile accesses). The support per order follows from alpha: the
    trace's n_tokens accesses must see the distinct rows per head it saw (zipf_support)."""
    heads = [min(h) for h in engram.table_sizes(spec)[spec.layer_ids[0]]]
    keep = (ls.hit_step >= 0.005) & (ls.capacities > 0)

    def model(x):
        alpha = tuple(float(a) for a in x[:-1])
        support = tuple(int(round(zipf_support_for(a, seen, n_tokens, h)))
                        for a, seen, h in zip(alpha, ls.zipf_support, heads))
        return ZipfRows(spec=spec, alpha=alpha, support=support, train_tokens=10 ** float(x[-1]))

    def error(x):
        if np.any(x[:-1] < 0.05) or np.any(x[:-1] > 4) or not 0 <= x[-1] <= 12:
            return math.inf
        z = model(x)
        u = np.array([z.unique_rows(int(b), ls.layer_id) for b in ls.batch_tokens])
        h = np.array([z.hit_rate(int(c), ls.layer_id) for c in ls.capacities[keep]])
        return float(np.mean(np.log(u / ls.unique_decode) ** 2) + np.mean(np.log(h / ls.hit_step[keep]) ** 2))

    return model, error


def fit_zipf(ls: LayerStats, spec: EngramSpec, n_tokens: int) -> ZipfRows:
    """ZipfRows fitted to one trace layer: alpha per order and the profile size by Nelder-Mead
    on _zipf_fit_objective, supports from the distinct rows the trace saw. Starts from the
    rank-frequency exponents (ls.zipf_alpha) and the trace's training half."""
    model, error = _zipf_fit_objective(ls, spec, n_tokens)
    start = [a if 0.1 < a < 3 else 0.8 for a in np.nan_to_num(ls.zipf_alpha)] + [math.log10(max(2, n_tokens / 2))]
    return model(nelder_mead(error, np.array(start, dtype=float), step=0.15))


def nelder_mead(f, x0: np.ndarray, step: float, iters: int = 200, tol: float = 1e-5) -> np.ndarray:
    """Minimise f from x0 (the textbook simplex method; numpy has no optimiser and the fit has
    few parameters and a non-smooth objective)."""
    simplex = np.vstack([x0] + [x0 + step * e for e in np.eye(x0.size)])
    values = np.array([f(x) for x in simplex])
    for _ in range(iters):
        order = np.argsort(values)
        simplex, values = simplex[order], values[order]
        if values[-1] - values[0] < tol:
            break
        centre = simplex[:-1].mean(axis=0)
        reflected = centre + (centre - simplex[-1])
        fr = f(reflected)
        if fr < values[0]:
            expanded = centre + 2 * (centre - simplex[-1])
            fe = f(expanded)
            simplex[-1], values[-1] = (expanded, fe) if fe < fr else (reflected, fr)
        elif fr < values[-2]:
            simplex[-1], values[-1] = reflected, fr
        else:
            contracted = centre + 0.5 * (simplex[-1] - centre)
            fc = f(contracted)
            if fc < values[-1]:
                simplex[-1], values[-1] = contracted, fc
            else:  # shrink towards the best point
                simplex[1:] = simplex[0] + 0.5 * (simplex[1:] - simplex[0])
                values[1:] = [f(x) for x in simplex[1:]]
    return simplex[np.argmin(values)]


def zipf_row_model(model: ModelSpec, alpha=None, support=None, stats: TraceStats | None = None,
                   batch_ref: int = BATCH_REF, train_tokens: float | None = None) -> ZipfRows:
    """ZipfRows for `model`.

    With `alpha` and `support` given (one value or one per n-gram order; support in rows per
    head table), those are the parameters, and the cache is ranked by a profile of
    `train_tokens` accesses (None: by the true frequencies). Otherwise the model is fitted
    (fit_zipf) to `stats` (a trace's measurements, first Engram layer), or to the default corpus
    trace when `stats` is None: the fit reproduces the trace's distinct rows per step and its
    static top-K curve, including how well a cache ranked on its first half does; a parameter
    given overrides the fitted one.
    """
    spec = model.engram
    if spec is None:
        raise UserError(f"model {model.name} has no Engram layers")
    n_orders = spec.max_ngram_size - 1
    if alpha is None or support is None:
        stats = stats or default_row_model(model).stats
        check_geometry(stats, spec, "Zipf fit")
        first = stats.layers[min(stats.layers)]
        fit = fit_zipf(first, spec, stats.n_tokens)
        alpha = fit.alpha if alpha is None else alpha
        support = fit.support if support is None else support
        train_tokens = fit.train_tokens if train_tokens is None else train_tokens
        origin = f"Zipf fit of {stats.corpus}"
    else:
        origin = "Zipf parameters given"
    alpha, support = _per_order(alpha, n_orders, "alpha"), _per_order(support, n_orders, "support")
    if any(not (a > 0) for a in alpha) or any(s < 1 for s in support):
        raise UserError("Zipf alpha must be > 0 and support >= 1 row")
    desc = ", ".join(f"{n}-gram s={a:.2f} over {int(s):,} rows/head" for n, a, s in zip(spec.orders, alpha, support))
    ranking = ("cache ranked by true frequency" if train_tokens is None
               else f"cache ranked on a profile of {train_tokens:,.0f} accesses/head")
    return ZipfRows(spec=spec, alpha=tuple(float(a) for a in alpha), support=tuple(int(s) for s in support),
                    batch_ref=batch_ref, source=f"{origin}: {desc}; {ranking}", train_tokens=train_tokens)


def _per_order(v, n, name):
    vals = [float(x) for x in np.atleast_1d(v)]
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise UserError(f"Zipf {name}: give one value or one per n-gram order ({n})")
    return vals


# --- rendering -------------------------------------------------------------------------------

def stats_dict(stats: TraceStats) -> dict:
    """Everything in TraceStats as plain JSON types (for --json)."""
    out = _stats_meta(stats)
    for layer, ls in stats.layers.items():
        out["layers"][str(layer)].update({name: _jsonable(np.asarray(getattr(ls, name)).tolist()) for name in _ARRAYS})
    out["source"] = stats.source
    return out


def _render_stats(stats: TraceStats):
    from rich.table import Table
    from rich.text import Text
    yield Text.assemble(("Engram address trace  ", "bold"), stats.corpus)
    yield Text(f"tokenizer: {stats.tokenizer}; {stats.n_tokens:,} tokens in {stats.n_sequences:,} documents",
               style="dim")
    for layer, ls in stats.layers.items():
        summary = Table(title=f"layer {layer}: {ls.rows_in_table:,} rows", title_justify="left", show_header=False)
        summary.add_row("accesses / distinct rows", f"{ls.n_accesses:,} / {ls.n_distinct:,}")
        summary.add_row("re-reads", f"{ls.reuse_fraction:.1%} of accesses; median {ls.reuse_p50_tokens:,.0f}, "
                                    f"p90 {ls.reuse_p90_tokens:,.0f} tokens since the last read")
        summary.add_row("Zipf exponent s", ", ".join(f"{n}-gram {a:.2f}" for n, a in
                                                    zip(range(2, 2 + len(ls.zipf_alpha)), ls.zipf_alpha)))
        yield summary
        steps = Table("tokens/step", "decode: distinct rows", "rows/token", "prefill chunk: distinct rows",
                      title="distinct rows per step", title_justify="left")
        for b, d, p in zip(ls.batch_tokens, ls.unique_decode, ls.unique_prefill):
            if b in (1, 8, 64, 256, 1024, 4096, 16384, 65536) or b == ls.batch_tokens[-1]:
                steps.add_row(f"{b:,}", f"{d:,.0f}", f"{d / b:.2f}", f"{p:,.0f}")
        yield steps
        yield hit_table(ls.capacities, {"static top-K (step rows)": ls.hit_step, "static top-K (accesses)": ls.hit_access},
                        ls.rows_in_table, f"hot-row cache, batch {stats.batch_ref}")


def hit_table(capacities, curves: dict, rows_in_table: int, title: str):
    """A rich table of hit rates against capacity; every 2nd power of two keeps it short."""
    from rich.table import Table
    table = Table("cache rows", "% of table", *curves, title=title, title_justify="left")
    caps = np.asarray(capacities)
    keep = [i for i, c in enumerate(caps) if c > 0 and (i == len(caps) - 1 or int(math.log2(c)) % 2 == 0)]
    for i in keep:
        table.add_row(f"{caps[i]:,}", f"{caps[i] / rows_in_table:.3%}", *(f"{v[i]:.1%}" for v in curves.values()))
    return table


def trace_for(model: ModelSpec, texts=(), id_files=(), tokenizer=None, trace_file=None) -> AddressTrace:
    """The address trace the CLI asks for: a saved trace file, text files, token-id files, or
    else the offline default corpus."""
    if model.engram is None:
        raise UserError(f"model {model.name} has no Engram layers to trace")
    if trace_file:
        if texts or id_files or tokenizer:
            raise UserError("give either --trace or text/ids/--tokenizer, not both")
        return load_trace(trace_file, model.engram)
    if texts and id_files:
        raise UserError("give either --text or --ids, not both")
    from engramsim.corpus import text_corpus
    corpus = text_corpus(list(texts)) if texts else None
    return build_trace(model.engram, corpus=corpus, tokenizer_path=tokenizer, token_id_files=list(id_files))
