"""ZipfRows: a RowModel from Zipf parameters, for tables and batches beyond any trace."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from engramsim import engram
from engramsim.addresses.stats import BATCH_REF
from engramsim.model import EngramSpec

ZIPF_BINS = 240  # log-spaced rank bins per head table
POISSON_EXACT = 64  # training counts below this are ranked with their Poisson noise


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
