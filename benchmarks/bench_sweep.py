"""Sweep speed: configs per second on one worker and on N, and the parallel efficiency.

The grid is paper-table4-sized (Dense-8B, H800, 512 sequences Uniform(100, 1024)): every seed is
one backbone, so its tiers share one baseline run, as in a real sweep. Targets on a 2-core machine:
1,000 such configs in <= 60 s, parallel efficiency >= 80% at 2 workers.

Two projections of the 1,000-config sweep, since the machine is shared: `wall` from the rate the
N-worker sweep reached now (other jobs' load stretches it), and `quiet` from CPU time, which their
load barely stretches: the N-worker sweep's CPU seconds (parent and workers) per config, spread
over N cores, i.e. a quiet machine with a core per worker and tasks of equal size (the grid's
are). `parallel_efficiency_cpu` is the CPU the one-worker sweep needed over what N workers spent
(their start-up and result passing); on a quiet machine it is the wall efficiency too. With
--repeat R every figure is the best (least time) of R sweeps.

Run: python benchmarks/bench_sweep.py [--configs 100] [--workers 2] [--repeat 1]
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


def timed(g, workers: int, repeat: int) -> tuple[float, float, list[dict]]:
    """Wall seconds and CPU seconds (this process and its finished workers), each the least of
    `repeat` sweeps, and the rows."""
    walls, cpus = [], []
    for _ in range(repeat):
        cpu0 = _cpu_s()
        t0 = time.perf_counter()
        rows = run_sweep(g, workers=workers).rows
        walls.append(time.perf_counter() - t0)
        cpus.append(_cpu_s() - cpu0)
    return min(walls), min(cpus), rows


def _cpu_s() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="sweeps per worker count; the best is kept")
    args = ap.parse_args()
    g = grid(args.configs)
    n, w = len(g.configs), args.workers
    one_s, one_cpu_s, rows_one = timed(g, 1, args.repeat)
    many_s, many_cpu_s, rows_many = timed(g, w, args.repeat)
    assert rows_one == rows_many, "workers changed the rows"
    wall_s_1000 = 1000 * many_s / n
    quiet_s_1000 = 1000 * many_cpu_s / n / w
    efficiency_wall, efficiency_cpu = one_s / (w * many_s), one_cpu_s / many_cpu_s
    report = {
        "benchmark": "sweep paper-table4 dense-8b h800, 5 tiers per seed (shared baseline)",
        "configs": n,
        "workers": w,
        "repeat": args.repeat,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
        "cpu_s_per_config_1_worker": round(one_cpu_s / n, 4),
        f"cpu_s_per_config_{w}_workers": round(many_cpu_s / n, 4),
        "wall_s_1_worker": round(one_s, 2),
        f"wall_s_{w}_workers": round(many_s, 2),
        f"configs_per_s_{w}_workers": round(n / many_s, 2),
        "parallel_efficiency_cpu": round(efficiency_cpu, 3),
        "parallel_efficiency_wall": round(efficiency_wall, 3),
        "projected_1000_configs_s_quiet": round(quiet_s_1000, 1),
        "projected_1000_configs_s_wall": round(wall_s_1000, 1),
        "target_1000_configs_s": 60,
        "target_parallel_efficiency": 0.8,
        "meets_targets_quiet": quiet_s_1000 <= 60 and efficiency_cpu >= 0.8,
        "meets_targets_wall": wall_s_1000 <= 60 and efficiency_wall >= 0.8,
    }
    print(json.dumps(report))
    print(
        f"1,000 configs: {quiet_s_1000:.0f} s on a quiet machine (CPU time, {w} workers), "
        f"{wall_s_1000:.0f} s at this load ({report['load_average_1min']}); parallel efficiency "
        f"{efficiency_cpu:.2f} (CPU), {efficiency_wall:.2f} (wall); target 60 s and 0.8",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
