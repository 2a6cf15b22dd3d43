"""A real, small Engram-augmented transformer and a harness that measures its throughput with
the table in each placement this machine supports (the measured half of `engramsim validate`).

Importing this package needs no torch: the configuration, `to_model_spec` and the result
dataclasses are torch-free. `measure_placements` imports torch on first call and raises a
UserError if it is missing.
"""
from engramsim.realmodel.config import (PLACEMENTS, MeasuredCase, PhaseSummary, Placement, RealModelConfig,
                                        RunConfig, StepRecord, WorkloadConfig, engram_spec, placement,
                                        quick_config, tiny_config, to_model_spec)


def measure_placements(config: RunConfig, placements=PLACEMENTS, progress=None) -> list[MeasuredCase]:
    from engramsim.realmodel.harness import measure_placements as measure
    return measure(config, placements, progress)


__all__ = ["PLACEMENTS", "MeasuredCase", "PhaseSummary", "Placement", "RealModelConfig", "RunConfig",
           "StepRecord", "WorkloadConfig", "engram_spec", "placement", "quick_config", "tiny_config",
           "to_model_spec", "measure_placements"]
