"""Hit-rate-curve throughput (accesses/s) per policy on a 10M-access Zipf trace.

    python benchmarks/bench_cache.py [--accesses N] [--policies static-topk,lru]

The trace: Zipf(1.1) ranks folded onto 5M rows (numpy, seed 0); 12 capacities per curve.
LFU is simulated per capacity in Python, so it runs on --lfu-accesses with 3 capacities.
Target (issue 4): 10M accesses in at most 10 s.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from engramsim.cache import hit_rate_curve


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accesses", type=int, default=10_000_000)
    ap.add_argument("--policies", default="static-topk,lru,lfu")
    ap.add_argument("--lfu-accesses", type=int, default=500_000)
    args = ap.parse_args()
    trace = np.random.default_rng(0).zipf(1.1, args.accesses) % 5_000_000
    for policy in args.policies.split(","):
        n = args.lfu_accesses if policy == "lfu" else args.accesses
        caps = 4 ** np.arange(3, 6) if policy == "lfu" else 4 ** np.arange(12)
        t = time.perf_counter()
        curve = hit_rate_curve(trace[:n], caps, policy)
        dt = time.perf_counter() - t
        print(
            f"{policy:12s} {n:>11,} accesses in {dt:6.2f} s = {n / dt / 1e6:5.2f} M accesses/s "
            f"({len(caps)} capacities{', each simulated' if policy == 'lfu' else ' from one pass'}); "
            f"hit rate at {caps[-1]:,} rows: {curve[-1]:.1%}"
        )


if __name__ == "__main__":
    main()
