"""Run the server model for each placement beside a no-Engram baseline and summarise it."""
from __future__ import annotations

from dataclasses import dataclass

from engramsim.capacity import plan_memory
from engramsim.errors import UserError
from engramsim.rows import RowModel
from engramsim.rows.uniform import UniformRows
from engramsim.hardware import Hardware
from engramsim.model import ModelSpec
from engramsim.results import RunResult, SimReport, summarize_run
from engramsim.sim.engine import RawRun, ServerSetup, run_server
from engramsim.sim.tiers import Placement
from engramsim.workload import Requests, Workload


@dataclass(frozen=True)
class Scenario:
    hw: Hardware
    model: ModelSpec
    workload: Workload
    gpus: int = 1
    tp: int = 1
    seed: int = 0
    prefetch: bool = True
    row_model: RowModel | None = None

    def __post_init__(self):
        if self.gpus < 1 or self.tp < 1:
            raise UserError("--gpus and --tp must be at least 1")
        if self.gpus % self.tp:
            raise UserError(f"--gpus {self.gpus} is not a multiple of --tp {self.tp}")
        if self.tp > self.hw.gpus_per_host:
            raise UserError(f"--tp {self.tp} spans more GPUs than one host has ({self.hw.gpus_per_host})")
        eng = self.workload.engine
        if self.workload.input_len_max > eng.max_num_batched_tokens:
            raise UserError(f"prompts of up to {self.workload.input_len_max} tokens exceed "
                            f"max_num_batched_tokens ({eng.max_num_batched_tokens})")
        if self.model.engram is None:
            raise UserError(f"model {self.model.name} has no [engram] table to place")

    @property
    def rows(self) -> RowModel:
        return self.row_model or UniformRows(self.model.engram)


def simulate(scenario: Scenario, placements: list[Placement], progress=None,
             requests: Requests | None = None) -> SimReport:
    """The baseline once, then every placement; `progress(label)` is called before each run.
    `requests` replaces the workload's generated requests (to replay a measured run)."""
    requests = requests if requests is not None else scenario.workload.requests(scenario.seed)
    if progress:
        progress("baseline")
    baseline_plan = plan_memory(scenario.hw, scenario.model, scenario.workload, scenario.tp, None, 0.0)
    if not baseline_plan.fits:
        raise UserError(f"the backbone alone does not fit: {baseline_plan.problems[0]}")
    baseline = _run(scenario, None, baseline_plan, requests)
    baseline_summary = summarize_run(baseline)
    baseline_tok_s = baseline_summary["throughput_tok_s"]
    runs = []
    for placement in placements:
        if progress:
            progress(placement.tier)
        plan = plan_memory(scenario.hw, scenario.model, scenario.workload, scenario.tp,
                           placement.memory, placement.hbm_cache_bytes, placement.dram_cache_bytes)
        raw = _run(scenario, placement, plan, requests) if plan.fits else None
        runs.append(RunResult.from_raw(placement, plan, raw, baseline_tok_s, scenario))
    return SimReport.build(scenario, baseline_summary, baseline, runs)


def _run(scenario: Scenario, placement: Placement | None, plan, requests) -> RawRun:
    setup = ServerSetup(hw=scenario.hw, model=scenario.model, workload=scenario.workload,
                        placement=placement, gpus=scenario.gpus, tp=scenario.tp,
                        kv_blocks=plan.kv_blocks_per_replica, row_model=scenario.rows,
                        prefetch=scenario.prefetch)
    return run_server(setup, requests)
