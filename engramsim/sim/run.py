"""Run the server model for each placement beside a no-Engram baseline and summarise it."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from engramsim.capacity import (
    Parallel,
    check_parallel,
    engram_shard_ranks,
    host_copies_per_node,
    plan_memory,
    with_socket_checks,
)
from engramsim.engine import EngineSpec, load_engine
from engramsim.errors import UserError
from engramsim.hardware import Hardware
from engramsim.iopolicy import IOPolicy
from engramsim.model import ModelSpec
from engramsim.results import RunResult, SimReport, summarize_run
from engramsim.rows import RowModel
from engramsim.rows.uniform import UniformRows
from engramsim.rows.warmup import ColdStart
from engramsim.sim.engine import RawRun, ServerSetup, run_server
from engramsim.sim.tiers import Placement, tier_for
from engramsim.sim.work import DEFAULT_MAX_STEPS, estimate_work
from engramsim.topology import check_path
from engramsim.units import GiB
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
    # The engine preset whose memory plan sizes the KV cache (None: nano-vllm); the scheduler
    # limits come from `workload.engine` (see workload.with_engine).
    engine: EngineSpec | None = None
    ep: int = 1
    # The server's longest context (vLLM --max-model-len; 0: the model's): sizes the indexer buffer.
    max_model_len: int = 0
    # How the engine reads rows from SSD.
    io: IOPolicy = IOPolicy()
    # Hot-row caches start empty and warm up (None: they start at their steady-state hit rate).
    cold_start: ColdStart | None = None

    def __post_init__(self):
        if self.gpus < 1 or self.tp < 1:
            raise UserError("--gpus and --tp must be at least 1")
        if self.gpus % self.tp:
            raise UserError(f"--gpus {self.gpus} is not a multiple of --tp {self.tp}")
        if self.tp > self.hw.gpus_per_host:
            raise UserError(f"--tp {self.tp} spans more GPUs than one host has ({self.hw.gpus_per_host})")
        eng = self.workload.engine
        if self.workload.input_len_max > eng.max_num_batched_tokens:
            raise UserError(
                f"prompts of up to {self.workload.input_len_max} tokens exceed "
                f"max_num_batched_tokens ({eng.max_num_batched_tokens})"
            )
        if self.model.engram is None:
            raise UserError(f"model {self.model.name} has no [engram] table to place")
        # No prefetch and reads at the Engram layer are one thing: either sets the other.
        if not (self.prefetch and self.io.prefetch):
            object.__setattr__(self, "prefetch", False)
            object.__setattr__(self, "io", replace(self.io, read_at="forward"))
        check_parallel(self.model, self.parallel, self.gpus)
        if self.max_model_len and self.workload.max_seq_len > self.max_model_len:
            raise UserError(
                f"sequences of up to {self.workload.max_seq_len} tokens exceed --max-model-len {self.max_model_len}"
            )
        limit = self.model.backbone.max_model_len
        if limit and self.workload.max_seq_len > limit:
            raise UserError(
                f"sequences of up to {self.workload.max_seq_len} tokens exceed the model's maximum context ({limit})"
            )

    @property
    def parallel(self) -> Parallel:
        return Parallel(tp=self.tp, dp=self.gpus // self.tp, ep=self.ep)

    @property
    def engine_spec(self) -> EngineSpec:
        """The engine preset with the scheduler limits the simulation really uses."""
        eng = self.workload.engine
        return (self.engine or load_engine("nano-vllm")).with_overrides(
            max_num_seqs=eng.max_num_seqs,
            max_num_batched_tokens=eng.max_num_batched_tokens,
            block_size_tokens=eng.kv_block_tokens,
        )

    def plan(self, placement: Placement | None):
        """The per-rank memory plan of one placement (None: the no-Engram baseline)."""
        memory = placement.memory if placement else None
        hbm = placement.hbm_cache_bytes if placement else 0.0
        dram = placement.dram_cache_bytes if placement else 0.0
        plan = plan_memory(
            self.hw,
            self.model,
            self.engine_spec,
            self.parallel,
            memory,
            hbm,
            dram,
            context_tokens=self.workload.max_seq_len,
            max_model_len=self.max_model_len,
        )
        if placement is None:
            return plan
        return with_socket_checks(
            plan, self.hw, self.model.engram.table_bytes, memory, placement.numa, self.replica_copies_per_node
        )

    def engram_dp(self, placement: Placement | None) -> int:
        """Replicas that split one Engram table and exchange ids and rows each step (engine
        `engram_dp_sharding`). A host table that the node's replicas share (`host_copies`
        per-node, vLLM's `dp_shared_memory`) replaces the exchange: every replica then reads
        its own tokens' rows (vllm-project/vllm #56512: with shared memory `dp_size = 1`)."""
        if placement is None or (placement.memory != "hbm" and self.engine_spec.host_copies == "per-node"):
            return 1
        return engram_shard_ranks(self.hw, self.engine_spec, self.parallel) // self.tp

    @property
    def replica_copies_per_node(self) -> int:
        """Host copies of the table set that replicas keep (engine `per-replica`), else 1; the
        NUMA layout then decides how each copy spreads over the sockets."""
        if self.engine_spec.host_copies != "per-replica":
            return 1
        return host_copies_per_node(self.hw, self.engine_spec, self.parallel)

    @property
    def rows(self) -> RowModel:
        return self.row_model or UniformRows(self.model.engram)

    def server_setup(self, placement: Placement | None, kv_blocks: int) -> ServerSetup:
        """What the engine runs for one placement (None: the baseline) with this much KV."""
        prefetch = self.prefetch if placement is None or placement.prefetch is None else placement.prefetch
        return ServerSetup(
            hw=self.hw,
            model=self.model,
            workload=self.workload,
            placement=placement,
            gpus=self.gpus,
            tp=self.tp,
            kv_blocks=kv_blocks,
            row_model=self.rows,
            prefetch=prefetch,
            io=self.io,
            cold_start=self.cold_start,
            ep=self.ep,
            engram_dp=self.engram_dp(placement),
        )


@dataclass(frozen=True)
class Baseline:
    """The no-Engram run of a scenario: it depends on neither the placement, the prefetch mode
    nor the row model, so a sweep can share it across every scenario of one backbone."""

    raw: RawRun
    summary: dict


def run_baseline(
    scenario: Scenario, requests: Requests | None = None, timeline=None, finished=None, itl: bool = True
) -> Baseline:
    """`itl`: summarize with the inter-token latencies (results.vllm_bench_names)."""
    requests = requests if requests is not None else scenario.workload.requests(scenario.seed)
    plan = _baseline_plan(scenario)
    raw = _run(scenario, None, plan, requests, timeline.run("no-Engram baseline") if timeline else None, finished)
    return Baseline(raw, summarize_run(raw, itl))


def _baseline_plan(scenario: Scenario):
    plan = scenario.plan(None)
    if not plan.fits:
        raise UserError(f"the backbone alone does not fit: {plan.problems[0]}")
    return plan


def check_work(scenario: Scenario, runs: int, max_steps: float | None) -> None:
    """Refuse, before any work, a simulation estimated above `max_steps` (None: no limit)."""
    kv_tokens = _baseline_plan(scenario).kv_blocks_per_rank * scenario.workload.engine.kv_block_tokens
    work = estimate_work(scenario.workload, scenario.gpus // scenario.tp, runs, kv_tokens)
    if max_steps is not None and work.steps > max_steps:
        raise UserError(
            f"this simulation needs {work.describe()}, over the limit of {max_steps:.3g}; "
            f"lift it with --max-steps {_round_up(work.steps)}"
        )


def simulate(
    scenario: Scenario,
    placements: list[Placement],
    progress=None,
    requests: Requests | None = None,
    baseline: Baseline | None = None,
    timeline=None,
    max_steps: float | None = DEFAULT_MAX_STEPS,
    finished=None,
    itl: bool = True,
) -> SimReport:
    """The baseline once (unless given), then every placement; `progress(label)` is called
    before each run and `finished(n)` as sequences finish (n more each time). `requests`
    replaces the workload's generated requests (to replay a measured run). A `timeline`
    (engramsim.report.timeline.Timeline) records every run. Refuses, before any work, a
    simulation estimated above `max_steps` engine steps (None: no limit). `itl`: report the
    inter-token latencies (False leaves them None, as a sweep needs none)."""
    check_work(scenario, (baseline is None) + len(placements), max_steps)
    for placement in placements:
        check_placement(scenario, placement)
    requests = requests if requests is not None else scenario.workload.requests(scenario.seed)
    if baseline is None:
        if progress:
            progress("baseline")
        baseline = run_baseline(scenario, requests, timeline, finished, itl)
    baseline_tok_s = baseline.summary["throughput_tok_s"]
    runs = []
    for placement in placements:
        tier_for(scenario.hw, placement.tier)
        if progress:
            progress(placement.tier)
        plan = scenario.plan(placement)
        recorder = timeline.run(placement_label(placement)) if timeline and plan.fits else None
        raw = _run(scenario, placement, plan, requests, recorder, finished) if plan.fits else None
        if raw is None and finished:
            finished(len(requests))
        runs.append(RunResult.from_raw(placement, plan, raw, baseline_tok_s, scenario, itl))
    return SimReport.build(scenario, baseline.summary, baseline.raw, runs)


def check_placement(scenario: Scenario, placement: Placement) -> None:
    """Refuse a placement this server cannot build (a path it lacks, a lookup it cannot do)."""
    check_path(scenario.hw, placement.tier, placement.numa)
    if placement.hbm_lookup != "local" and scenario.tp < 2:
        raise UserError(f"the {placement.hbm_lookup} lookup exchanges rows between TP ranks; it needs --tp >= 2")


def _round_up(steps: float) -> int:
    """`steps` rounded up to two significant digits, for a flag value a person can type."""
    scale = 10 ** max(int(math.floor(math.log10(steps))) - 1, 0)
    return int(math.ceil(steps / scale) * scale)


def _run(scenario: Scenario, placement: Placement | None, plan, requests, recorder=None, finished=None) -> RawRun:
    return run_server(scenario.server_setup(placement, plan.kv_blocks_per_rank), requests, recorder, finished)


def placement_label(p: Placement) -> str:
    """The name the report tables give this placement."""
    from types import SimpleNamespace

    from engramsim.report.console import label

    return label(
        SimpleNamespace(tier=p.tier, hbm_cache_GiB=p.hbm_cache_bytes / GiB, dram_cache_GiB=p.dram_cache_bytes / GiB)
    )
