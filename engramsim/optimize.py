"""A small derivative-free minimiser shared by the fits (Zipf rows, the validation's CPU rates).

Kept by hand rather than scipy.optimize (see engramsim/rows/zipf_fit.py for why): numpy is the
simulator's only numeric dependency, and tests/test_traces.py checks it against scipy's where
scipy is installed.
"""

from __future__ import annotations

import numpy as np


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
