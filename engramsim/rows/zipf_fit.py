"""Fit ZipfRows to a trace's measurements, or build them from given parameters.

The optimiser is the small hand-written Nelder-Mead in engramsim/optimize.py, kept on purpose rather than
scipy.optimize.minimize(method="Nelder-Mead"): the fit has 3-4 parameters and a non-smooth
objective (interpolated curves, +inf outside the box), so a derivative-free simplex is the
right method either way; 30 lines of it do not justify making scipy (tens of MB) a core
dependency of a simulator that otherwise needs numpy only; and it keeps the fitted parameters
quoted in the README reproducible. tests/test_traces.py checks it against scipy's where scipy
is installed.
"""

from __future__ import annotations

import math

import numpy as np

from engramsim import engram
from engramsim.addresses.stats import BATCH_REF, LayerStats, TraceStats
from engramsim.addresses.store import check_geometry
from engramsim.errors import UserError
from engramsim.model import EngramSpec, ModelSpec
from engramsim.optimize import nelder_mead
from engramsim.rows.trace import default_row_model
from engramsim.rows.zipf import ZipfRows, zipf_support_for


def _zipf_fit_objective(ls: LayerStats, spec: EngramSpec, n_tokens: int):
    """Squared log error of a ZipfRows against a trace layer's measured decode distinct rows and
    static top-K curve (capacities where it is at least 0.5%), as a function of
    (alpha per order..., log10 profile accesses). The support per order follows from alpha: the
    trace's n_tokens accesses must see the distinct rows per head it saw (zipf_support)."""
    heads = [min(h) for h in engram.table_sizes(spec)[spec.layer_ids[0]]]
    keep = (ls.hit_step >= 0.005) & (ls.capacities > 0)

    def model(x):
        alpha = tuple(float(a) for a in x[:-1])
        support = tuple(
            int(round(zipf_support_for(a, seen, n_tokens, h))) for a, seen, h in zip(alpha, ls.zipf_support, heads)
        )
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


def zipf_row_model(
    model: ModelSpec,
    alpha=None,
    support=None,
    stats: TraceStats | None = None,
    batch_ref: int = BATCH_REF,
    train_tokens: float | None = None,
) -> ZipfRows:
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
    ranking = (
        "cache ranked by true frequency"
        if train_tokens is None
        else f"cache ranked on a profile of {train_tokens:,.0f} accesses/head"
    )
    return ZipfRows(
        spec=spec,
        alpha=tuple(float(a) for a in alpha),
        support=tuple(int(s) for s in support),
        batch_ref=batch_ref,
        source=f"{origin}: {desc}; {ranking}",
        train_tokens=train_tokens,
    )


def _per_order(v, n, name):
    vals = [float(x) for x in np.atleast_1d(v)]
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise UserError(f"Zipf {name}: give one value or one per n-gram order ({n})")
    return vals
