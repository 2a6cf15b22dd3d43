"""Microbenchmarks of the memory paths an Engram lookup takes, on the machine at hand.

This package is the only place that imports torch or NVML, always lazily (`import_torch`,
`import_pynvml`), so the simulator runs without them. Layout:

  timing.py   repeat a timed call (warm-up, bounded time), median and p10/p90; CPU and CUDA timers
  plan.py     pure logic: sweeps per mode, sizes under a memory budget, index streams, records
  system.py   host, disk, NUMA and GPU (NVML) information
  cpu.py      CPU benchmarks: dram_gather, memcpy, ssd_read, hash, cpu_matmul, overlap, cxl
  cuda.py     GPU benchmarks: hbm_gather, h2d/d2h, uva_gather, copy_pipeline, overlap
  run.py      the benchmark registry and the run loop (progress, Ctrl-C -> partial profile)
"""

from __future__ import annotations

from engramsim.errors import UserError


def import_torch():
    try:
        import torch
    except ImportError:
        raise UserError("measuring needs torch: pip install 'engramsim[measure]' (or pip install torch)") from None
    return torch


def import_pynvml():
    """pynvml (nvidia-ml-py) or None when it is not installed."""
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


def cuda_available() -> bool:
    return import_torch().cuda.is_available()
