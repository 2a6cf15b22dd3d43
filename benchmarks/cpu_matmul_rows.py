"""How this CPU's BLAS multiplies a few rows: the mechanism behind `costs.head_matmul_s` and the
row-by-row (gemv) regime that `engramsim validate` fits on its baseline.

    python benchmarks/cpu_matmul_rows.py [--threads T] [--core C]

Times torch's nn.Linear (the validation model's layers, fp32) for every matrix of the quick
validation model at M = 1, 2, 3, 4, 5, 6, 8, 12, 16, 32 rows, on T threads (default 1, as the
validation runs) pinned to core C; prints the median of 7 timings per cell, and per row the
weight rate (weight bytes / time) and the FLOP rate. A BLAS that goes row by row shows a
weight rate that falls as 1/M up to its threshold, then a jump down in time (packing) at the
next M. On the 2-core EPYC VM of 2026-11-29 (1 thread): every shape switches between 3 and 4
rows; the layers' weights (0.6-3 MB, cache-resident) stream at ~60 GB/s a row, the LM head's
(25 MB) at ~14 GB/s a row, so the head takes 1.8 / 3.2 / 4.2 ms at 1 / 2 / 3 rows and 2.2 ms at 4.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from engramsim.realmodel import quick_config

ROWS = (1, 2, 3, 4, 5, 6, 8, 12, 16, 32)


def shapes(cfg) -> dict[str, tuple[int, int]]:
    """(in, out) features of every matmul of the validation model (engramsim.realmodel.model)."""
    h, hd = cfg.hidden_size, cfg.head_dim
    return {
        "qkv": (h, (cfg.n_heads + 2 * cfg.n_kv_heads) * hd),
        "o": (cfg.n_heads * hd, h),
        "gate_up": (h, 2 * cfg.intermediate_size),
        "down": (cfg.intermediate_size, h),
        "lm head": (h, cfg.vocab_size),
    }


def time_linear(torch, k: int, n: int, rows: int, budget_s: float = 0.05) -> float:
    lin = torch.nn.Linear(k, n, bias=False)
    x = torch.randn(rows, 1, k)  # a decode step: one position per sequence
    with torch.no_grad():
        for _ in range(5):
            lin(x)
        start = time.perf_counter()
        lin(x)
        reps = max(3, int(budget_s / max(time.perf_counter() - start, 1e-7)))
        times = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(reps):
                lin(x)
            times.append((time.perf_counter() - start) / reps)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--core", type=int, default=0)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if hasattr(os, "sched_setaffinity") and args.core in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {args.core})
    for name, (k, n) in shapes(quick_config().model).items():
        weight_bytes = 4 * k * n
        times = [time_linear(torch, k, n, m) for m in ROWS]
        print(f"{name} ({weight_bytes / 1e6:.2f} MB of weights)")
        print("  us       " + " ".join(f"M{m}:{t * 1e6:8.1f}" for m, t in zip(ROWS, times)))
        print("  GB/s/row " + " ".join(f"M{m}:{weight_bytes / t / m / 1e9:8.1f}" for m, t in zip(ROWS, times)))
        print("  GFLOP/s  " + " ".join(f"M{m}:{2 * m * k * n / t / 1e9:8.1f}" for m, t in zip(ROWS, times)))


if __name__ == "__main__":
    main()
