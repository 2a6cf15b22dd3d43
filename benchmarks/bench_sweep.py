"""Sweep speed: configs per second on one worker and on N, and the parallel efficiency.

The grid is paper-table4-sized (Dense-8B, H800, 512 sequences Uniform(100, 1024)): every seed is
one backbone, so its tiers share one baseline run, as in a real sweep. Targets on a 2-core machine:
1,000 such configs in <= 60 s (projected from the measured rate), parallel efficiency >= 80% at 2
workers. Run: python benchmarks/bench_sweep.py [--configs 24] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engramsim.sweep import parse_grid, run_sweep  # noqa: E402

TIERS = ["dram-uva", "dram-copy", "cxl-uva", "cxl-copy", "ssd"]  # all fit (a 200 GB table is no hbm config)


def grid(n_configs: int):
    seeds = -(-n_configs // len(TIERS))
    g = parse_grid(
        {
            "model": "dense-8b-engram100b",
            "hw": "h800",
            "workload": "paper-table4",
            "tier": TIERS,
            "seed": list(range(seeds)),
        },
        "bench",
    )
    return type(g)(configs=g.configs[:n_configs], axes=g.axes, source=g.source)


def timed(g, workers: int) -> tuple[float, float, list[dict]]:
    """Wall seconds, CPU seconds (this process and its finished workers) and the rows."""
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    rows = run_sweep(g, workers=workers).rows
    return time.perf_counter() - t0, _cpu_s() - cpu0, rows


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--configs", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    g = grid(args.configs)
    one_s, one_cpu_s, rows_one = timed(g, 1)
    many_s, _, rows_many = timed(g, args.workers)
    assert rows_one == rows_many, "workers changed the rows"
    rate = len(g.configs) / many_s
    efficiency = one_s / (args.workers * many_s)
    projected = 1000 / rate
    print(
        json.dumps(
            {
                "benchmark": "sweep paper-table4 dense-8b h800, 5 tiers per seed (shared baseline)",
                "configs": len(g.configs),
                "workers": args.workers,
                "wall_s_1_worker": round(one_s, 2),
                f"wall_s_{args.workers}_workers": round(many_s, 2),
                "configs_per_s_1_worker": round(len(g.configs) / one_s, 2),
                f"configs_per_s_{args.workers}_workers": round(rate, 2),
                "parallel_efficiency": round(efficiency, 3),
                # CPU time is what the machine's other load cannot stretch: with it, the
                # rate an idle machine would give at perfect parallel efficiency.
                "cpu_s_per_config": round(one_cpu_s / len(g.configs), 3),
                "projected_1000_configs_s_idle": round(1000 * one_cpu_s / len(g.configs) / args.workers, 1),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "cores": os.cpu_count(),
                "projected_1000_configs_s": round(projected, 1),
                "target_1000_configs_s": 60,
                "target_parallel_efficiency": 0.8,
                "meets_targets": projected <= 60 and efficiency >= 0.8,
            }
        )
    )


if __name__ == "__main__":
    main()
