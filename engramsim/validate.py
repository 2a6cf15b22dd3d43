"""End-to-end validation: the real Engram model measured on this machine, beside what the
simulator predicts for the very same model, workload and placements.

The simulator sees this CPU as the accelerator: a profile of the machine gives its matmul rate,
copy bandwidth, per-thread gather rate, page-read latency and hash cost (engramsim.calibrate,
`machine_hardware`); its compute runs on the same cores as the prefetch thread, so the two
contend (as they do here). The measured no-Engram baseline calibrates the backbone: its
layers' and its LM head's matmul regimes on this CPU (row by row, packed), and the per-layer
and per-step host overheads of an eager PyTorch forward pass (operator dispatch, sampling),
which no microbenchmark captures. The engine's Engram hashing and fusion, the handoff of a
fetch to the prefetch thread and cold page faults (on each thread's core) are timed alone. Every Engram placement is then predicted with no further fitting: its error
measures the memory-path model. On a CUDA machine the model runs on the GPU (step times from
CUDA events) and the hardware is the profile calibrated over the h200 preset.

A noisy machine must not decide the verdict, so the measurement is statistical:
- rounds: every placement runs once per round, interleaved, and each overhead is paired with
  the baseline run of its own round; rounds go on until every overhead's 95% bootstrap CI is
  within +-`CI_TARGET_PP`, or the time budget runs out (the report says which);
- noise guards: a round in which any run saw CPU steal, other processes' load or run-queue
  waits above `NoiseLimits` is dropped (and reported); so is, from the per-step comparison, a
  step whose thread waited on a run queue;
- per-step: step times by kind and batch bucket, measured against simulated (median, p90);
- consistency: the predicted overhead lies within the measured CI, or within 2 pp of the
  measured overhead where the CI is narrower than that (`stats.consistent`).
"""

from __future__ import annotations

import dataclasses
import enum
import os
import pickle
import socket
import statistics
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from engramsim import costs
from engramsim.errors import UserError
from engramsim.fileio import write_atomic
from engramsim.hardware import Hardware
from engramsim.model import ModelSpec
from engramsim.optimize import nelder_mead
from engramsim.realmodel.config import MeasuredCase, StepRecord, TimedRun
from engramsim.realmodel.noise import NoiseLimits
from engramsim.realmodel.stats import (
    MIN_ROUNDS,
    TOLERANCE_PP,
    Estimate,
    StepComparison,
    StepSample,
    compare_steps,
    consistent,
    half_width,
    keep_rounds,
    paired_overheads_pct,
)
from engramsim.results import summarize_run
from engramsim.sim.engine import RawRun, run_server
from engramsim.sim.run import Scenario
from engramsim.sim.scheduler import Seq
from engramsim.sim.tiers import Placement
from engramsim.workload import Engine, Requests, Workload

# Real placement -> (simulator tier, prefetch).
CPU_TIER_OF = {
    "device": ("hbm", True),
    "host-prefetch": ("dram-copy", True),
    "host-sync": ("dram-copy", False),
    "mmap-prefetch-cold": ("ssd", True),
    "mmap-prefetch-warm": ("ssd", True),
    "mmap-sync-cold": ("ssd", False),
    "mmap-sync-warm": ("ssd", False),
}
GPU_TIER_OF = {
    "gpu-hbm": ("hbm", True),
    "pinned-copy-prefetch": ("dram-copy", True),
    "pinned-copy-sync": ("dram-copy", False),
    "pinned-uva-prefetch": ("dram-uva", True),
    "pinned-uva-sync": ("dram-uva", False),
}
TIER_OF = {**CPU_TIER_OF, **GPU_TIER_OF}
CI_TARGET_PP = 1.0  # rounds go on until every overhead CI is this narrow (half-width)
MAX_ROUNDS = 60


@dataclass(frozen=True)
class ValidationCase:
    placement: str
    sim_tier: str
    role: str  # "calibration" (the baseline) or "prediction"
    measured_tok_s: float  # mean over kept rounds
    measured_tok_s_ci: tuple[float, float]
    predicted_tok_s: float
    error_pct: float
    measured_overhead_pct: float  # mean over kept rounds, paired with their baselines
    measured_overhead_ci_pp: tuple[float, float]
    predicted_overhead_pct: float
    consistent: bool
    measured_stall_s: float  # mean over kept rounds
    predicted_stall_s: float
    per_step: tuple[StepComparison, ...] = ()
    noise: dict = field(default_factory=dict)
    measured_runs_tok_s: tuple[float, ...] = ()  # every round, kept or not

    def to_dict(self) -> dict:
        return asdict(self)  # per_step rows: kind, batch_bucket, measured_median_ms, predicted_ms, error_pct, ...


# --- which rounds count ----------------------------------------------------------------------


@dataclass(frozen=True)
class RoundSelection:
    kept: list[int]
    quiet_only: bool  # False: too few quiet rounds, the least noisy were kept
    reasons: dict[int, list[str]]  # noisy round -> why


def select_rounds(runs: dict[str, list[TimedRun]], limits: NoiseLimits) -> RoundSelection:
    """Rounds complete in every placement, minus those in which any run was noisy."""
    n = min(map(len, runs.values()))
    reasons = {
        r: [f"{name}: {why}" for name, rs in runs.items() for why in rs[r].noise.reasons(limits)] for r in range(n)
    }
    scores = [max((_severity(rs[r].noise, limits) for rs in runs.values()), default=0.0) for r in range(n)]
    kept, quiet = keep_rounds([bool(reasons[r]) for r in range(n)], scores)
    return RoundSelection(kept, quiet, {r: why for r, why in reasons.items() if why})


def _severity(noise, limits: NoiseLimits) -> float:
    """How far past its limits a run's readings went (1.0 = at a limit)."""
    ratios = [
        (noise.steal_pct, limits.max_steal_pct),
        (noise.outside_cores, limits.max_outside_cores),
        (noise.run_delay_pct, limits.max_run_delay_pct),
    ]
    return max((value / limit for value, limit in ratios if value is not None and limit > 0), default=0.0)


def overhead_estimates(runs: dict[str, list[TimedRun]], kept: list[int]) -> dict[str, Estimate]:
    """Each Engram placement's overhead against the baseline of the same round, over `kept`."""
    base = [runs["baseline"][r].tok_s for r in kept]
    return {
        name: Estimate.of(paired_overheads_pct([rs[r].tok_s for r in kept], base))
        for name, rs in runs.items()
        if name != "baseline"
    }


class AdaptiveStop:
    """Stopping rule of the rounds: stop once every overhead CI half-width is within `target_pp`
    (over at least MIN_ROUNDS kept rounds), or when another round would overrun `budget_s`, or
    at `max_rounds`. Never before `min_rounds`. `reason` says which, `half_width_pp` how far."""

    def __init__(
        self,
        limits: NoiseLimits,
        budget_s: float,
        min_rounds: int,
        target_pp: float = CI_TARGET_PP,
        max_rounds: int = MAX_ROUNDS,
    ):
        self.limits, self.budget_s, self.min_rounds = limits, budget_s, min_rounds
        self.target_pp, self.max_rounds = target_pp, max_rounds
        self.reason: str | None = None
        self.half_width_pp: float | None = None

    def __call__(self, runs: dict[str, list[TimedRun]], spent_s: float) -> str | None:
        n = min(map(len, runs.values()))
        selection = select_rounds(runs, self.limits)
        estimates = overhead_estimates(runs, selection.kept) if "baseline" in runs else {}
        self.half_width_pp = max((half_width(e.ci) for e in estimates.values()), default=0.0)
        if n < self.min_rounds:
            return None
        if len(selection.kept) >= MIN_ROUNDS and selection.quiet_only and self.half_width_pp <= self.target_pp:
            self.reason = "ci"
        elif n >= self.max_rounds:
            self.reason = "max_rounds"
        elif spent_s * (n + 1) / n > self.budget_s:
            self.reason = "budget"
        return self.reason


# --- the simulator's side ---------------------------------------------------------------------


def _record_compute(hw: Hardware, model: ModelSpec, rec: StepRecord):
    """The roofline compute of one measured step, as the simulator would cost it."""
    per_seq = rec.tokens if rec.phase == "prefill" else rec.context_tokens // max(rec.seqs, 1)
    seqs = [Seq(0, 0.0, per_seq, 1)] * (1 if rec.phase == "prefill" else rec.seqs)
    return costs.step_compute(hw.gpu, model.backbone, costs.batch_shape(seqs, rec.phase == "prefill"), 1)


@dataclass(frozen=True)
class ComputeFit:
    """What the baseline's layers say of a CPU standing in for the accelerator: matmul FLOP/s,
    weight-streaming bytes/s of a packed matrix product, and up to how many rows the BLAS
    multiplies row by row instead (each row streaming all the weights at `gemv_Bps`)."""

    flops: float
    weights_Bps: float
    gemv_max_rows: int = 0
    gemv_Bps: float = 0.0
    packed_serial: bool = False


GEMV_ROWS_TRIED = range(9)  # 0 (no row-by-row regime) to 8 rows


def fit_compute_rates(
    hw: Hardware,
    model: ModelSpec,
    steps: list[StepRecord],
    span: float = 16.0,
    gemv_rows_tried=GEMV_ROWS_TRIED,
    floors: tuple[float, float] = (0.0, 0.0),
) -> ComputeFit:
    """The `ComputeFit` that best explains the baseline's layers before the first Engram layer
    ("pre" time per layer) across its steps, through the simulator's own costs
    (`costs.matmul_s`), a constant per-layer overhead taking the rest (least squares, jointly:
    the overhead is the mean residual); times count only the share the thread was running
    (`fit_backbone_overheads`). The row-by-row threshold is the one of `gemv_rows_tried` with
    the least misfit (`describe_machine` passes the head's, `fit_head`). Only for a CPU
    standing in for the accelerator; a GPU keeps its profile's figures, as do steps whose
    sizes hardly vary.

    The profile's matmul and memcpy benchmarks run other shapes on every thread, whenever the
    profile ran; the baseline's own prefill steps (compute-bound), small decode steps (one
    matrix-vector product per row) and larger ones (packed) run this model on the validation's
    thread. One fit for every placement: the Engram ones stay predictions.
    """
    rate, bw = hw.gpu.bf16_flops * hw.gpu.matmul_efficiency, hw.gpu.hbm_bw_Bps * hw.gpu.hbm_efficiency
    tokens = [s.tokens for s in steps]
    if not hw.gpu.compute_on_host or len(steps) < 3 or max(tokens) < 2 * min(tokens):
        return ComputeFit(rate, bw)
    first = min(model.engram.layer_ids)
    # One point per step size (its median): noisy steps and the many prefill sizes do not
    # outweigh the few decode batch sizes that show the row-by-row regime.
    steps, y, _ = size_medians(steps, [s.pre_s * s.running_share / first for s in steps])
    rows = np.array([s.tokens for s in steps], dtype=float)
    # The roofline's two terms per step, at unit rates: max(flops / rate, bytes / bandwidth).
    unit = replace(hw.gpu, layer_overhead_s=0.0, matmul_efficiency=1.0, hbm_efficiency=1.0, gemv_max_rows=0)
    flops = np.array(
        [
            _record_compute(replace(hw, gpu=replace(unit, bf16_flops=1.0, hbm_bw_Bps=1e30)), model, s).dense_layer_s
            for s in steps
        ]
    )
    nbytes = np.array(
        [
            _record_compute(replace(hw, gpu=replace(unit, bf16_flops=1e30, hbm_bw_Bps=1.0)), model, s).dense_layer_s
            for s in steps
        ]
    )
    bb = model.backbone
    weights = (bb.attn_params + bb.dense_mlp_params) * bb.weight_bytes_per_param

    def rates(log_rates) -> tuple[float, float, float]:
        r, b, g = np.exp(log_rates)
        return r, max(b, floors[0]), max(g, floors[1])

    def predicted(log_rates, gemv_rows: int, serial: bool) -> np.ndarray:
        r, b, g = rates(log_rates)
        packed = flops / r + nbytes / b if serial else np.maximum(flops / r, nbytes / b)
        by_row = rows * weights / g + (nbytes - weights) / b
        return np.where(rows <= gemv_rows, by_row, packed)

    def misfit(log_rates, gemv_rows: int, serial: bool) -> float:
        resid = y - predicted(log_rates, gemv_rows, serial)
        return float(np.sum((resid - max(resid.mean(), 0.0)) ** 2))  # overheads are never negative

    # A coarse grid finds the basin; the project's small simplex (no scipy) polishes it. Its
    # tolerance is absolute on the misfit, which is in squared seconds.
    axes = [np.linspace(np.log(x / span), np.log(x * span), 17) for x in (rate, bw, bw)]
    grid = [(a, b, c) for a in axes[0] for b in axes[1] for c in axes[2]]
    fits = []
    # One thread cannot overlap packing the weights with multiplying: the two add.
    serial_tried = (True,) if hw.gpu.compute_threads == 1 else (False, True)
    for gemv_rows in gemv_rows_tried:
        for serial in serial_tried:
            start = min(grid, key=lambda x: misfit(x, gemv_rows, serial))
            best = nelder_mead(
                lambda x: misfit(x, gemv_rows, serial),
                np.array(start),
                step=float(axes[0][1] - axes[0][0]),
                iters=600,
                tol=1e-20,
            )
            fits.append((misfit(best, gemv_rows, serial), gemv_rows, serial, rates(best)))
    _, gemv_rows, serial, (r, b, g) = min(fits, key=lambda f: f[0])
    used = gemv_rows > 0 and bool(np.any(rows <= gemv_rows))
    return ComputeFit(float(r), float(b), gemv_rows if used else 0, float(g) if used else 0.0, serial)


@dataclass(frozen=True)
class HeadFit:
    """The LM head of a CPU standing in for the accelerator, from its timed heads: up to
    `gemv_max_rows` rows one matrix-vector product per row, each streaming the head's weights
    at `gemv_Bps`; above, packing them (`weights_Bps`) then multiplying (`flops`)."""

    gemv_max_rows: int
    gemv_Bps: float
    weights_Bps: float
    flops: float


HEAD_TOLERANCE = 0.02  # relative misfit per head size that a lower threshold may cost


def _median_by_rows(steps: list[StepRecord]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, median head seconds) per distinct head size: a prefill computes the logits of its
    last position only (1 row), a decode step those of every sequence. Only the share of each
    step its thread was running counts."""
    by_rows: dict[int, list[float]] = {}
    for s in steps:
        by_rows.setdefault(1 if s.phase == "prefill" else s.seqs, []).append(s.head_s * s.running_share)
    rows = sorted(by_rows)
    return np.array(rows, dtype=float), np.array([float(np.median(by_rows[r])) for r in rows])


def _head_regimes(rows, y, gemv_rows: int, weight_bytes: float, flops_per_row: float):
    """(misfit, HeadFit) with the row-by-row regime up to `gemv_rows` rows: a rate through the
    origin below, a line (packing + per-row compute) above, each by least squares on relative
    errors; None where a regime's rate comes out non-physical or the packed side has fewer
    than two sizes."""
    low, high = rows <= gemv_rows, rows > gemv_rows
    if len(np.unique(rows[high])) < 2:
        return None
    w = 1 / y[high]  # relative errors: every size counts alike
    slope, fixed = np.polyfit(rows[high], y[high], 1, w=w)
    if slope <= 0 or fixed <= 0:
        return None
    fit_y = fixed + slope * rows
    gemv_Bps = 0.0
    if low.any():
        rates = rows[low] * weight_bytes / y[low]  # each size's own rate; relative LSQ of y = bytes / g
        gemv_Bps = float(np.sum(rates**2) / np.sum(rates))
        fit_y = np.where(low, rows * weight_bytes / gemv_Bps, fit_y)
    misfit = float(np.sum((fit_y / y - 1) ** 2))
    return misfit, HeadFit(gemv_rows, gemv_Bps, weight_bytes / fixed, flops_per_row / slope)


def fit_head(hw: Hardware, model: ModelSpec, steps: list[StepRecord]) -> HeadFit | None:
    """The LM head's regimes from the baseline's timed heads (`StepRecord.head_s`), one median
    per head size; the row-by-row threshold is the lowest of `GEMV_ROWS_TRIED` whose misfit is
    within `HEAD_TOLERANCE` per size of the least. None on a GPU, or when the heads were not
    timed or hardly vary in size.

    Why apart from the layers: on a CPU BLAS (torch, 1 thread, measured with
    benchmarks/cpu_matmul_rows.py) a matmul of up to 3 rows is one matrix-vector product per
    row and 4 rows or more a packed product, for every shape of the model; a layer's weights
    (< 4 MB) stay in cache and stream at ~60 GB/s a row, but the head's (vocab x hidden, 25 MB
    in the quick model) come from memory at ~15 GB/s a row, so 2-3 rows cost twice and three
    times one row, and 4 rows (packed) less than 3."""
    if not hw.gpu.compute_on_host or not any(s.head_s > 0 for s in steps):
        return None
    rows, y = _median_by_rows([s for s in steps if s.head_s > 0])
    if len(rows) < 3:
        return None
    bb = model.backbone
    weight_bytes = bb.hidden_size * bb.vocab_size * bb.weight_bytes_per_param
    fits = [_head_regimes(rows, y, n, weight_bytes, 2.0 * bb.hidden_size * bb.vocab_size) for n in GEMV_ROWS_TRIED]
    fits = [f for f in fits if f is not None]
    if not fits:
        return None
    # A row-by-row regime of one or two sizes fits them exactly, so a higher threshold always
    # fits a little better: take the lowest within 2% per size of the best.
    best = min(f[0] for f in fits)
    return next(fit for misfit, fit in fits if misfit <= best + HEAD_TOLERANCE**2 * len(rows))


def fit_backbone_overheads(hw: Hardware, model: ModelSpec, runs: list[TimedRun]) -> tuple[float, float, float]:
    """(per-layer, per-step, per-sequence) host overheads of the eager forward, from baseline runs.

    The harness times the layers before the first Engram layer ("pre"); what they take beyond
    the roofline is the per-layer dispatch overhead. What a step takes beyond its layers and LM
    head (sampling, batch bookkeeping) is fitted as a fixed cost plus a cost per sequence in the
    step (least squares, each step size's median weighted by its count: the per-step comparison
    is of medians, and another process's load skews means up); the work between steps (a run's
    wall time less its step timers) joins the fixed cost. A step's times count only the share
    its thread was running (`StepRecord.running_share`): time spent waiting for a core is
    another process's.
    """
    bb, first = model.backbone, min(model.engram.layer_ids)
    steps = [s for run in runs for s in run.steps]
    comps = [_record_compute(hw, model, s) for s in steps]
    _, beyond, counts = size_medians(
        steps, [s.pre_s * s.running_share / first - c.dense_layer_s for s, c in zip(steps, comps)]
    )
    layer = max(float(np.average(beyond, weights=counts)), 0.0)
    sizes, rest, counts = size_medians(
        steps,
        [
            s.total_s * s.running_share - bb.n_layers * (layer + c.dense_layer_s) - c.head_s
            for s, c in zip(steps, comps)
        ],
    )
    seqs = np.array([s.seqs for s in sizes], dtype=float)
    per_seq = 0.0
    if np.ptp(seqs) > 0:
        per_seq = max(float(np.polyfit(seqs, rest, 1, w=np.sqrt(counts))[0]), 0.0)
    fixed = float(np.average(rest - per_seq * seqs, weights=counts))
    between = statistics.median(between_steps_s(run) for run in runs)
    return layer, max(fixed + between, 0.0), per_seq


def size_medians(steps: list[StepRecord], values) -> tuple[list[StepRecord], np.ndarray, np.ndarray]:
    """Per step size (phase, tokens, sequences): one of its steps, the median of `values` over
    its steps, and how many there were."""
    groups: dict[tuple, list] = {}
    for s, v in zip(steps, values):
        groups.setdefault((s.phase, s.tokens, s.seqs), []).append((s, v))
    keys = sorted(groups)
    return (
        [groups[k][0][0] for k in keys],
        np.array([float(np.median([v for _, v in groups[k]])) for k in keys]),
        np.array([len(groups[k]) for k in keys], dtype=float),
    )


def between_steps_s(run: TimedRun) -> float:
    """A run's wall time outside its step timers (the harness's loop and bookkeeping), per step:
    the simulator counts it in its steps' host time (`GPU.step_overhead_s`)."""
    return max((run.wall_s - sum(s.total_s for s in run.steps)) / len(run.steps), 0.0) if run.steps else 0.0


def line_fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(fixed seconds, seconds per token) of a cost measured against tokens per call."""
    from engramsim.calibrate import fit_line

    fixed, per_token = fit_line([b for b, _ in points], [t for _, t in points], relative=False)
    return max(fixed, 0.0), max(per_token, 0.0)


def sim_workload(n_seqs: int, input_lens: list[int], output_lens: list[int], seq_host_s: float = 0.0) -> Workload:
    """The harness prefills one prompt per step, then decodes the whole batch; its prefetch
    starts at each step's own start (no lookahead into the next prompt). Its only engine host
    cost per sequence is `seq_host_s` (fitted on the baseline); the fixed one is the GPU's
    step overhead."""
    engine = Engine(
        max_num_seqs=n_seqs,
        max_num_batched_tokens=max(input_lens) + max(output_lens),
        kv_block_tokens=16,
        max_prefill_seqs=1,
        prefill_lookahead=False,
        seq_host_s=seq_host_s,
    )
    return Workload(
        name="realmodel",
        kind="offline",
        num_seqs=n_seqs,
        input_len_min=min(input_lens),
        input_len_max=max(input_lens),
        output_len_min=min(output_lens),
        output_len_max=max(output_lens),
        engine=engine,
    )


def cold_hit_rate(resident_before: float, steps) -> float:
    """The page-cache hit rate of a cold map over a run: a read misses only if its page was
    neither resident at the start (mincore) nor read by an earlier step of the run; the run's
    own re-reads (`StepRecord.new_pages`, counted from its row ids) warm the cache as it goes.
    A run-wide average: the simulator's page cache has one hit rate."""
    reads = sum(s.rows for s in steps)
    if not reads:
        return resident_before
    first_reads = min(sum(s.new_pages for s in steps) / reads, 1.0)
    return 1.0 - (1.0 - resident_before) * first_reads


def _sim_placement(m: MeasuredCase) -> Placement:
    """A measured placement as the simulator's; a cold map starts with what mincore found
    resident and warms with the run's own re-reads (`cold_hit_rate`)."""
    tier, _ = TIER_OF[m.placement]
    hit = cold_hit_rate(m.resident_before or 0.0, m.step_records) if m.cache_state == "cold" else 1.0
    return Placement(tier, ssd_dram_hit_rate=hit if tier == "ssd" else 0.0)


class StepLog:
    """A recorder for `run_server` (the interface of report.timeline.RunRecorder) that keeps
    each step's kind, size, time and prefetch wait, and nothing else."""

    def __init__(self):
        self.steps: list[StepSample] = []
        self._stall_s = 0.0

    def step(self, replica, start_s, end_s, prefill, batch, tokens, kv_blocks_used=None):
        self.steps.append(StepSample("prefill" if prefill else "decode", tokens, end_s - start_s, self._stall_s))
        self._stall_s = 0.0

    def stall(self, replica, layer, start_s, end_s):
        self._stall_s += end_s - start_s

    def fetch(self, *args):
        pass

    def flows(self, *args):
        pass

    def resources(self, *args):
        pass


def simulate_steps(
    hw: Hardware,
    model: ModelSpec,
    workload: Workload,
    requests: Requests,
    placement: Placement | None,
    prefetch: bool = True,
) -> tuple[RawRun, list[StepSample]]:
    """One replica on one device serving `requests`; the run and every step it took."""
    scenario = Scenario(hw=hw, model=model, workload=workload, prefetch=prefetch)
    plan = scenario.plan(placement)
    if not plan.fits:
        raise UserError(f"the validation model does not fit the simulated machine: {plan.problems[0]}")
    log = StepLog()
    return run_server(scenario.server_setup(placement, plan.kv_blocks_per_rank), requests, recorder=log), log.steps


def describe_machine(
    hw: Hardware, model: ModelSpec, baseline_runs: list[TimedRun], engram_parts: dict, page_fault_s: float | None
) -> tuple[Hardware, float]:
    """`hw` (calibrate.machine_hardware) completed with what only this run can say: the eager
    forward's overheads (baseline), the engine's Engram calls and the table file's page faults;
    and the engine's host cost per sequence in a step (for `sim_workload`)."""
    from engramsim.calibrate import with_page_faults

    steps = [s for run in baseline_runs for s in run.steps]
    head = fit_head(hw, model, steps)
    # The BLAS picks row by row or packed by rows, whatever the matrix: the head's timings,
    # a clean signal, set the threshold the layers' fit uses.
    fit = fit_compute_rates(
        hw,
        model,
        steps,
        gemv_rows_tried=(head.gemv_max_rows,) if head else GEMV_ROWS_TRIED,
        floors=(head.weights_Bps, head.gemv_Bps) if head else (0.0, 0.0),
    )
    bw = fit.weights_Bps
    gather_Bps = hw.gpu.hbm_bw_Bps * hw.gpu.gather_efficiency  # the profile's gather rate stays
    hw = replace(
        hw,
        gpu=replace(
            hw.gpu,
            bf16_flops=fit.flops,
            hbm_bw_Bps=bw,
            gemv_max_rows=head.gemv_max_rows if head else fit.gemv_max_rows,
            gemv_Bps=fit.gemv_Bps,
            packed_serial=fit.packed_serial,
            head_gemv_Bps=head.gemv_Bps if head else 0.0,
            head_weights_Bps=head.weights_Bps if head else 0.0,
            head_flops=head.flops if head else 0.0,
            matmul_efficiency=1.0,
            hbm_efficiency=1.0,
            gather_efficiency=min(1.0, gather_Bps / bw),
        ),
    )
    layer_s, step_s, seq_s = fit_backbone_overheads(hw, model, baseline_runs)
    fusion_fixed, fusion_per_token = line_fit(engram_parts["fusion"])
    hash_fixed, hash_per_token = line_fit(engram_parts["hashing"])
    layers = len(model.engram.layer_ids)
    hw = replace(
        hw,
        gpu=replace(
            hw.gpu,
            layer_overhead_s=layer_s,
            step_overhead_s=step_s,
            engram_module_overhead_s=fusion_fixed,
            engram_module_s_per_token=fusion_per_token,
        ),
        host=replace(hw.host, hash_call_s=hash_fixed / layers, hash_s_per_token=hash_per_token / layers),
    )
    return with_page_faults(hw, page_fault_s), seq_s


# --- measured beside predicted ------------------------------------------------------------------


def _measured_steps(runs: list[TimedRun], kept: list[int], limits: NoiseLimits) -> list[StepSample]:
    """The kept rounds' steps, each with its share of its run's work between steps, as the
    simulator's steps include it (like with like: `between_steps_s`)."""
    return [
        StepSample(
            kind=s.phase,
            tokens=s.tokens,
            seconds=s.total_s + gap,
            stall_s=s.stall_s,
            quiet=s.quiet(limits),
            running_s=s.total_s * s.running_share + gap,
        )
        for r in kept
        for gap in [between_steps_s(runs[r])]
        for s in runs[r].steps
    ]


def _case_noise(runs: list[TimedRun], selection: RoundSelection, steps: tuple[StepComparison, ...]) -> dict:
    kept = [runs[r].noise for r in selection.kept]
    mean = lambda xs: float(np.mean(xs)) if xs else None
    return {
        "steal_pct": max((n.steal_pct for n in kept if n.steal_pct is not None), default=None),
        "outside_load_cores": mean([n.outside_cores for n in kept if n.outside_cores is not None]),
        "run_delay_pct": mean([n.run_delay_pct for n in kept if n.run_delay_pct is not None]),
        "rounds": len(runs),
        "rounds_kept": len(selection.kept),
        "rounds_dropped": len(runs) - len(selection.kept),
        "quiet_only": selection.quiet_only,
        "steps_dropped": sum(s.steps_dropped for s in steps),
    }


def _case(
    m: MeasuredCase,
    sim: tuple[RawRun, list[StepSample]],
    base_raw: RawRun,
    selection: RoundSelection,
    runs: dict[str, list[TimedRun]],
    limits: NoiseLimits,
) -> ValidationCase:
    mine, kept = runs[m.placement], selection.kept
    tok_s = Estimate.of([mine[r].tok_s for r in kept])
    raw, sim_steps = sim
    predicted, base_predicted = summarize_run(raw)["throughput_tok_s"], summarize_run(base_raw)["throughput_tok_s"]
    steps = tuple(compare_steps(_measured_steps(mine, kept, limits), sim_steps))
    common = dict(
        placement=m.placement,
        measured_tok_s=tok_s.value,
        measured_tok_s_ci=tok_s.ci,
        predicted_tok_s=predicted,
        error_pct=100 * (predicted / tok_s.value - 1),
        measured_stall_s=float(np.mean([mine[r].stall_s for r in kept])),
        predicted_stall_s=raw.stats.stall_s,
        per_step=steps,
        noise=_case_noise(mine, selection, steps),
        measured_runs_tok_s=tuple(r.tok_s for r in mine),
    )
    if m.placement == "baseline":
        # Its overheads were fitted to these runs: consistent on throughput, within 2% of it.
        ok = consistent(predicted, tok_s, TOLERANCE_PP / 100 * tok_s.value)
        return ValidationCase(
            sim_tier="no Engram",
            role="calibration",
            measured_overhead_pct=0.0,
            measured_overhead_ci_pp=(0.0, 0.0),
            predicted_overhead_pct=0.0,
            consistent=ok,
            **common,
        )
    tier, prefetch = TIER_OF[m.placement]
    overhead = overhead_estimates({"baseline": runs["baseline"], m.placement: mine}, kept)[m.placement]
    predicted_overhead = 100 * (1 - predicted / base_predicted)
    return ValidationCase(
        sim_tier=tier + ("" if prefetch else " (sync)"),
        role="prediction",
        measured_overhead_pct=overhead.value,
        measured_overhead_ci_pp=overhead.ci,
        predicted_overhead_pct=predicted_overhead,
        consistent=consistent(predicted_overhead, overhead),
        **common,
    )


def predict(
    measured: list[MeasuredCase],
    model: ModelSpec,
    hw: Hardware,
    requests: Requests,
    selection: RoundSelection,
    limits: NoiseLimits,
    seq_host_s: float = 0.0,
    prefetch_hw: Hardware | None = None,
) -> list[ValidationCase]:
    """Simulate every measured placement on `hw` (`describe_machine`) and compare, over the
    rounds `selection` kept. `measured` must include the baseline. A placement that prefetches
    runs on `prefetch_hw` where given: its page faults timed on the prefetch thread's cores."""
    runs = {m.placement: list(m.runs) for m in measured}
    workload = sim_workload(
        len(requests), list(map(int, requests.input_len)), list(map(int, requests.output_len)), seq_host_s
    )
    base = simulate_steps(hw, model, workload, requests, None)
    cases = []
    for m in measured:
        sim = (
            base
            if m.placement == "baseline"
            else simulate_steps(
                _case_hardware(m, hw, prefetch_hw),
                model,
                workload,
                requests,
                _sim_placement(m),
                TIER_OF[m.placement][1],
            )
        )
        cases.append(_case(m, sim, base[0], selection, runs, limits))
    return cases


def _case_hardware(m: MeasuredCase, hw: Hardware, prefetch_hw: Hardware | None) -> Hardware:
    """The machine as a placement sees it: one that prefetches faults at the prefetch thread's
    rate, and one whose rows a thread fetches (not the device placement, whose prefetch in the
    simulator's hbm tier is a plain gather) pays the handoff to it."""
    if not TIER_OF[m.placement][1]:
        return hw
    base = prefetch_hw or hw
    handoff = getattr(m, "prefetch_handoff_s", None)  # None in files saved before it was timed
    return replace(base, host=replace(base.host, prefetch_handoff_s=handoff)) if handoff else base


def page_fault_s_of(measured: list[MeasuredCase], kept: list[int], prefetch_thread: bool = False) -> float | None:
    """Seconds per cold fault: the median of the faults timed at the start of the kept rounds
    (the disk as those rounds saw it), else of every round's, else the single figure. With
    `prefetch_thread`, those timed on the prefetch thread's cores, where there are any."""
    case = next((m for m in measured if m.page_fault_s), None)
    if case is None:
        return None
    rounds = case.page_fault_s_rounds
    if prefetch_thread and getattr(case, "prefetch_page_fault_s_rounds", ()):
        rounds = case.prefetch_page_fault_s_rounds
    in_kept = [rounds[r] for r in kept if r < len(rounds)]
    return float(statistics.median(in_kept or rounds)) if rounds else case.page_fault_s


# --- the report --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationReport:
    machine: str
    profile: str
    config: dict
    torch_threads: int
    cases: list[ValidationCase]
    rounds: int = 0
    rounds_kept: int = 0
    dropped_rounds: dict = field(default_factory=dict)  # round (1-based) -> why it was dropped
    stopped_by: str = ""  # "ci", "budget", "max_rounds" or "repeats"
    budget_s: float = 0.0
    ci_target_pp: float = CI_TARGET_PP
    worst_overhead_ci_half_width_pp: float = 0.0
    pinned: str = ""
    noise_limits: dict = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    fitted: dict = field(default_factory=dict)  # fitted_figures: calibration, not prediction

    @property
    def all_consistent(self) -> bool:
        return all(c.consistent for c in self.cases)

    @property
    def worst_step_error_pct(self) -> float:
        return max((abs(s.error_pct) for c in self.cases for s in c.per_step), default=0.0)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k != "cases"}
        d["cases"] = [c.to_dict() for c in self.cases]
        d["all_consistent"] = self.all_consistent
        d["worst_step_error_pct"] = self.worst_step_error_pct
        return d

    def __rich_console__(self, console, options):
        from engramsim.report.validation import render_validation

        yield from render_validation(self)


def sim_requests(config) -> Requests:
    """The measured run's request lengths, in the simulator's form (all submitted at t=0)."""
    from engramsim.realmodel.harness import make_requests

    reqs = make_requests(config.workload, config.model.vocab_size)
    n = len(reqs.prompts)
    return Requests(np.zeros(n), np.array([len(p) for p in reqs.prompts]), np.array(reqs.output_lens))


def profile_mismatch(profile_host: dict, profile_gpu: dict | None, device: str) -> str | None:
    """A one-line warning when a profile was measured on another machine than this one."""
    from engramsim.measure.system import cpu_model

    here = {"host": socket.gethostname(), "CPU": cpu_model(), "cores": os.cpu_count()}
    there = {
        "host": profile_host.get("hostname"),
        "CPU": profile_host.get("cpu_model"),
        "cores": profile_host.get("cpu_cores"),
    }
    if device == "cuda":
        import torch

        here["GPU"], there["GPU"] = torch.cuda.get_device_name(0), (profile_gpu or {}).get("name")
    diffs = [f"{k} {there[k]!r} here {here[k]!r}" for k in here if there[k] is not None and there[k] != here[k]]
    if not diffs:
        return None
    return "the profile was measured on another machine (" + "; ".join(diffs) + "): predictions use its figures"


PROFILE_BENCHMARKS = ("dram_gather", "memcpy", "cpu_matmul", "hash", "ssd_read")
# What a GPU validation reads from a profile: host gathers and hashing for the copy path, HBM
# gathers, link copies, UVA gathers, and the GPU matmul rate (overlap_gpu).
GPU_PROFILE_BENCHMARKS = (
    "dram_gather",
    "memcpy",
    "hash",
    "hbm_gather",
    "h2d",
    "d2h",
    "uva_gather",
    "copy_pipeline",
    "overlap_gpu",
)


def run_validation(
    config,
    profile_path: str | None,
    scratch: str,
    budget_s: float,
    progress=None,
    warn=None,
    save_measured: str | None = None,
) -> ValidationReport:
    """Profile (unless given), measure every placement in rounds until the overhead CIs are
    narrow or `budget_s` (seconds of measured rounds) runs out, then predict each placement.
    `save_measured`: also write the measurements there (`Measurements`) for `--replay`."""
    from engramsim.profile_io import load_profile
    from engramsim.realmodel import measure_placements, placements_for, this_device
    from engramsim.realmodel.harness import time_engram_parts

    if not 0 < budget_s < float("inf"):
        raise UserError(f"--budget-s must be a positive, finite number of seconds, got {budget_s}")
    say = progress or (lambda msg: None)
    device = this_device(config)
    warnings = []
    if profile_path:
        profile = load_profile(profile_path)
        label = str(profile_path)
        mismatch = profile_mismatch(profile.host, profile.gpu, device)
        if mismatch:
            warnings.append(mismatch)
            (warn or say)(mismatch)
    else:
        from engramsim.measure.run import run_profile

        say("profiling this machine (quick)")
        benchmarks = GPU_PROFILE_BENCHMARKS if device == "cuda" else PROFILE_BENCHMARKS
        profile = run_profile(
            only=list(benchmarks),
            quick=True,
            scratch=scratch,
            progress=lambda name, rec: rec is None and say(f"profiling: {name}"),
        )
        label = "measured now (quick)"
    say("timing the engine's Engram hashing and fusion alone")
    parts_by_round = [time_engram_parts(config, PARTS_BATCHES, PARTS_REPEATS)]
    stop = AdaptiveStop(config.noise, budget_s, min_rounds=config.repeats)

    def until(timed, elapsed_s) -> bool:  # the parts are timed again after every round
        done = stop(timed, elapsed_s)
        if not done:
            say("timing the engine's Engram hashing and fusion alone")
            parts_by_round.append(time_engram_parts(config, PARTS_BATCHES, PARTS_REPEATS))
        return done

    measured = measure_placements(config, placements_for(device), progress=say, until=until)
    engram_parts = median_parts(parts_by_round)
    m = Measurements(config, profile, label, tuple(warnings), device, engram_parts, measured, stop.reason, budget_s)
    if save_measured:
        write_atomic(save_measured, pickle.dumps(m))
    say("simulating")
    return validation_report(m)


# Calls per batch size each time the Engram parts are timed alone. They are timed between every
# two rounds, and each part's figure is the median over those timings: timed once, the fusion
# of one sequence took 0.41 ms in one quiet run and 0.61 ms in the next (median of 20 calls),
# while inside the steps it took 0.47 and 0.50 ms; each timing builds the module afresh.
PARTS_REPEATS = 7
# Batch sizes they are timed at: the validation's decode steps run 1-15 sequences, and small
# batches take the BLAS's row-by-row path (see the LM head's fit), so a line through only 1, 4,
# 16 and 64 under-priced the 2-3-sequence steps (by 3-11% per step in the 2026-11-30 runs).
PARTS_BATCHES = (1, 2, 4, 8, 16, 64)


def median_parts(parts_by_round: list[dict]) -> dict:
    """{"fusion": [(B, s)], "hashing": [(B, s)]}: per part and batch size, the median over the
    timings of `time_engram_parts`."""
    first = parts_by_round[0]
    return {
        part: [(b, statistics.median(dict(r[part])[b] for r in parts_by_round)) for b, _ in first[part]]
        for part in first
    }


@dataclass(frozen=True)
class Measurements:
    """Everything `run_validation` measured, from which `validation_report` predicts: saved
    with `validate --save-measured`, a refit of the prediction can be judged on the same
    measurements with `validate --replay` (no re-measuring)."""

    config: object  # realmodel.RunConfig
    profile: object  # profile_io.Profile
    label: str
    warnings: tuple[str, ...]
    device: str
    engram_parts: dict
    measured: list[MeasuredCase]
    stopped_by: str | None
    budget_s: float


class _MeasurementsUnpickler(pickle.Unpickler):
    """Builds only engramsim's data classes, numpy's arrays and torch's version string: a pickle can name any callable,
    so a file that is not ours would otherwise run code as it loads (the Python docs'
    "Restricting Globals"). A dataclass constructor given odd values only builds a bad record."""

    _FOREIGN = {("numpy", "dtype"), ("numpy", "ndarray"), ("numpy.core.multiarray", "_reconstruct")}
    _FOREIGN |= {("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar")}
    _FOREIGN |= {("numpy._core.multiarray", "scalar")}
    # torch.__version__ (the machine's record holds it): a str subclass, harmless to build.
    _FOREIGN |= {("torch.torch_version", "TorchVersion")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._FOREIGN:
            return super().find_class(module, name)
        if module.startswith("engramsim."):
            obj = super().find_class(module, name)
            if isinstance(obj, type) and (dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)):
                return obj
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a measurements file never holds")


def load_measurements(path: str) -> Measurements:
    """A file written by `validate --save-measured`. Only engramsim's data classes (and numpy
    arrays) are built from it, so a foreign pickle is refused rather than run."""
    try:
        with open(path, "rb") as f:
            m = _MeasurementsUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError) as e:
        raise UserError(f"--replay {path}: cannot read it ({e})") from None
    if not isinstance(m, Measurements):
        raise UserError(f"--replay {path}: not a file written by validate --save-measured")
    return m


def validation_report(ms: Measurements) -> ValidationReport:
    """The simulator's prediction of every measured placement, beside the measurements."""
    from engramsim.calibrate import machine_hardware, with_page_faults
    from engramsim.realmodel import to_model_spec

    config, profile, device, measured, label = ms.config, ms.profile, ms.device, ms.measured, ms.label
    engram_parts, warnings, budget_s = ms.engram_parts, ms.warnings, ms.budget_s
    model = to_model_spec(config)
    runs = {m.placement: list(m.runs) for m in measured}
    if "baseline" not in runs:
        raise UserError("validation needs the baseline placement measured")
    selection = select_rounds(runs, config.noise)
    hw = machine_hardware(
        profile, device, measured[0].torch_threads, model.engram.row_bytes, float(max(m.table_bytes for m in measured))
    )
    profiled = hw
    hw, seq_host_s = describe_machine(
        hw,
        model,
        [runs["baseline"][r] for r in selection.kept],
        engram_parts,
        page_fault_s_of(measured, selection.kept),
    )
    prefetch_hw = with_page_faults(hw, page_fault_s_of(measured, selection.kept, prefetch_thread=True))
    cases = predict(measured, model, hw, sim_requests(config), selection, config.noise, seq_host_s, prefetch_hw)
    machine = (profile.gpu or {}).get("name") if device == "cuda" else profile.host.get("cpu_model")
    return ValidationReport(
        machine=str(machine),
        profile=label,
        config=asdict(config),
        torch_threads=measured[0].torch_threads,
        cases=cases,
        rounds=len(measured[0].runs),
        rounds_kept=len(selection.kept),
        dropped_rounds={r + 1: why for r, why in selection.reasons.items() if r not in selection.kept},
        stopped_by=ms.stopped_by or "repeats",
        budget_s=budget_s,
        worst_overhead_ci_half_width_pp=max(half_width(c.measured_overhead_ci_pp) for c in cases),
        pinned=measured[0].pinned,
        noise_limits=asdict(config.noise),
        warnings=tuple(warnings),
        fitted=fitted_figures(
            hw,
            profiled,
            seq_host_s,
            prefetch_hw,
            next((m.prefetch_handoff_s for m in measured if getattr(m, "prefetch_handoff_s", None)), None),
        ),
    )


def fitted_figures(
    hw: Hardware,
    profile: Hardware,
    seq_host_s: float,
    prefetch_hw: Hardware | None = None,
    handoff_s: float | None = None,
) -> dict:
    """What the validation fitted or timed itself, beside the profile's figures: the baseline
    gives the compute rate and weight bandwidth (CPU only) and the eager forward's overheads;
    the Engram calls were timed alone."""
    return {
        "compute_GFLOPs": hw.gpu.bf16_flops / 1e9,
        "profile_matmul_GFLOPs": profile.gpu.bf16_flops / 1e9,
        "weights_GBps": hw.gpu.hbm_bw_Bps / 1e9,
        "profile_read_GBps": profile.gpu.hbm_bw_Bps / 1e9,
        "gemv_max_rows": hw.gpu.gemv_max_rows,
        "gemv_GBps": hw.gpu.gemv_Bps / 1e9,
        "packed_serial": hw.gpu.packed_serial,
        "head_gemv_GBps": hw.gpu.head_gemv_Bps / 1e9,
        "head_weights_GBps": hw.gpu.head_weights_Bps / 1e9,
        "head_GFLOPs": hw.gpu.head_flops / 1e9,
        "layer_overhead_us": hw.gpu.layer_overhead_s * 1e6,
        "step_overhead_us": hw.gpu.step_overhead_s * 1e6,
        "seq_overhead_us": seq_host_s * 1e6,
        "engram_fusion_us": hw.gpu.engram_module_overhead_s * 1e6,
        "engram_fusion_ns_per_token": hw.gpu.engram_module_s_per_token * 1e9,
        "hash_call_us": hw.host.hash_call_s * 1e6,
        "hash_ns_per_token": hw.host.hash_s_per_token * 1e9,
        "page_fault_us": hw.ssd.latency_s * 1e6 if hw.ssd else None,
        "prefetch_handoff_us": handoff_s * 1e6 if handoff_s else None,
        "prefetch_page_fault_us": prefetch_hw.ssd.latency_s * 1e6 if prefetch_hw and prefetch_hw.ssd else None,
    }
