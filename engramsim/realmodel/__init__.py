"""A real, small Engram-augmented transformer and a harness that measures its throughput with
the table in each placement this machine supports (the measured half of `engramsim validate`):
CPU_PLACEMENTS on a CPU-only machine, GPU_PLACEMENTS when torch sees a CUDA device.

Importing this package needs no torch: the configuration, `to_model_spec` and the result
dataclasses are torch-free. `measure_placements` and `this_device` import torch on first call
and raise a UserError if it is missing.
"""

from engramsim.realmodel.config import (
    CPU_PLACEMENTS,
    GPU_PLACEMENTS,
    PLACEMENTS,
    MeasuredCase,
    PhaseSummary,
    RealModelConfig,
    RunConfig,
    StepRecord,
    TablePlacement,
    WorkloadConfig,
    engram_spec,
    gpu_quick_config,
    placement,
    placements_for,
    quick_config,
    resolve_device,
    tiny_config,
    to_model_spec,
)


def measure_placements(config: RunConfig, placements=None, progress=None, until=None) -> list[MeasuredCase]:
    """Placements default to those of the run's device (`placements_for`); rounds go on until
    `until(runs by placement, seconds spent)` gives a reason to stop (default: config.repeats)."""
    from engramsim.realmodel.harness import measure_placements as measure

    return measure(config, placements, progress, until)


def this_device(config: RunConfig) -> str:
    """ "cpu" or "cuda": config.device resolved against what torch sees."""
    from engramsim.realmodel.harness import this_device as resolve

    return resolve(config)


__all__ = [
    "CPU_PLACEMENTS",
    "GPU_PLACEMENTS",
    "PLACEMENTS",
    "MeasuredCase",
    "PhaseSummary",
    "TablePlacement",
    "RealModelConfig",
    "RunConfig",
    "StepRecord",
    "WorkloadConfig",
    "engram_spec",
    "gpu_quick_config",
    "placement",
    "placements_for",
    "quick_config",
    "resolve_device",
    "tiny_config",
    "to_model_spec",
    "measure_placements",
    "this_device",
]
