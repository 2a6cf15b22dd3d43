"""End-to-end validation: the real Engram model measured on this machine, beside what the
simulator predicts for the very same model, workload and placements.

The simulator sees this CPU as the accelerator: a profile of the machine gives its matmul rate,
copy bandwidth, per-thread gather rate, page-read latency and hash cost; its compute runs on the
same cores as the prefetch thread, so the two contend (as they do here). Two figures come from
the measured no-Engram baseline: the per-layer and per-step host overheads of an eager PyTorch
forward pass (operator dispatch, sampling), which no microbenchmark captures. The cost of the
engine's Engram hashing and fusion comes from timing those two calls alone, against batch size. Every Engram placement is then
predicted with no further fitting: its error measures the memory-path model.

On a CUDA machine the model runs on the GPU and the simulator's hardware is the profile
calibrated over the h200 preset (`gpu_hardware`): HBM, pinned copy and UVA figures measured
there. The same two baseline overheads and the timed Engram calls complete the description.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, replace

from engramsim import costs
from engramsim.errors import UserError
from engramsim.hardware import GPU, SSD, Hardware, Host, Link
from engramsim.model import ModelSpec
from engramsim.costs import batch_shape
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.scheduler import Seq
from engramsim.sim.tiers import Placement
from engramsim.workload import Engine, Requests, Workload
from engramsim.units import GiB
# Real placement -> (simulator tier, prefetch).
CPU_TIER_OF = {"device": ("hbm", True), "host-prefetch": ("dram-copy", True), "host-sync": ("dram-copy", False),
               "mmap-prefetch-cold": ("ssd", True), "mmap-prefetch-warm": ("ssd", True),
               "mmap-sync-cold": ("ssd", False), "mmap-sync-warm": ("ssd", False)}
GPU_TIER_OF = {"gpu-hbm": ("hbm", True),
               "pinned-copy-prefetch": ("dram-copy", True), "pinned-copy-sync": ("dram-copy", False),
               "pinned-uva-prefetch": ("dram-uva", True), "pinned-uva-sync": ("dram-uva", False)}
TIER_OF = {**CPU_TIER_OF, **GPU_TIER_OF}
GPU_BASE_PRESET = "h200"


@dataclass(frozen=True)
class ValidationCase:
    placement: str
    sim_tier: str
    measured_tok_s: float
    predicted_tok_s: float
    error_pct: float
    measured_overhead_pct: float
    predicted_overhead_pct: float
    measured_stall_s: float
    predicted_stall_s: float
    measured_runs_tok_s: tuple[float, ...] = ()


def cpu_hardware(cpu: dict, threads: int, row_bytes: int, table_bytes: float) -> Hardware:
    """This machine, with its CPU standing in for the GPU, from `cpu_device_from_profile`."""
    _require(cpu, "matmul_flops", "memcpy_Bps", "gather_rows_per_s_per_thread", "hash_s_per_token")
    read_Bps = 2 * cpu["memcpy_Bps"]  # memcpy moves each byte twice; a read-only stream, once
    per_thread = _rows_per_s(cpu, 1, table_bytes)
    inline = _rows_per_s(cpu, threads, table_bytes)
    sector = -(-row_bytes // costs.GPU_SECTOR_BYTES) * costs.GPU_SECTOR_BYTES
    latency_s = 100e-9  # nominal; the gather rate below is what was measured
    gpu = GPU(name=f"{cpu.get('cpu_model') or 'CPU'} as device", bf16_flops=cpu["matmul_flops"]["fp32"],
              hbm_bytes=float(cpu["dram_bytes"]), hbm_bw_Bps=read_Bps, matmul_efficiency=1.0, hbm_efficiency=1.0,
              gather_efficiency=min(1.0, inline * sector / read_Bps),
              kernel_launch_s=cpu.get("gather_call_overhead_s") or 0.0, compute_on_host=True, compute_threads=threads)
    # The prefetch thread gathers straight into the buffer the Engram layer reads: no link copy.
    link = Link(kind="none (CPU: staging is used in place)", h2d_Bps=1e15, d2h_Bps=1e15, latency_s=1e-9)
    host = Host(name="this machine", dram_bw_Bps=read_Bps, dram_latency_s=latency_s,
                dram_bytes=float(cpu["dram_bytes"]), dram_efficiency=1.0, cpu_cores=int(cpu["cores"]),
                gather_threads_per_gpu=1, gather_mlp=per_thread * latency_s,
                hash_s_per_token=cpu["hash_s_per_token"])
    ssd = _page_reads(cpu)
    return Hardware(name="this-machine", description="this CPU as the accelerator, from a profile", gpus_per_host=1,
                    gpu=gpu, link=link, host=host, ssd=ssd)


def gpu_hardware(profile, threads: int, table_bytes: float) -> Hardware:
    """This machine with its GPU, from a profile that measured it, over the h200 preset.

    The real run is one GPU alone on its host, gathering with the harness's torch threads, and
    its engine overheads are fitted from the baseline (`predict`): the preset's engine figures
    (fitted to nano-vLLM on 8 GPUs) are zeroed rather than inherited.
    """
    from engramsim.calibrate import calibrate
    if profile.gpu is None:
        raise UserError("the profile has no GPU measurements: run `engramsim profile` on this GPU machine first")
    cal = calibrate(profile, base=GPU_BASE_PRESET, table_GiB=table_bytes / GiB)
    hw = cal.hardware(f"calibration of the profile over {GPU_BASE_PRESET}")
    gpu = replace(hw.gpu, step_overhead_s=0.0, layer_overhead_s=0.0)
    host = replace(hw.host, gather_threads_per_gpu=max(1, threads))
    return replace(hw, name="this-gpu-machine", gpus_per_host=1, gpu=gpu, host=host)


def _rows_per_s(cpu: dict, threads: int, table_bytes: float) -> float:
    """Measured gather rate, rescaled from the profiled table size to the model's table size."""
    by_threads = cpu.get("gather_rows_per_s") or {}
    rate = by_threads.get(threads) or by_threads.get(max(by_threads, default=1)) or cpu["gather_rows_per_s_per_thread"]
    curve = cpu.get("gather_curve")
    if curve:
        at_table, _ = curve.at(table_bytes)
        at_profiled, _ = curve.at(curve.max_table_bytes)
        if at_table > 0 and at_profiled > 0:
            rate *= at_profiled / at_table
    return rate


def _with_page_faults(hw: Hardware, fault_s: float | None) -> Hardware:
    """Page faults timed on the model's own table file replace the profile's generic figure."""
    if not fault_s:
        return hw
    return replace(hw, ssd=_page_fault_ssd(1.0 / fault_s, fault_s))


def _page_fault_ssd(iops: float, latency_s: float) -> SSD:
    return SSD(name="scratch disk (mmap page faults)", devices=1, read_iops=iops, read_bw_Bps=1e12,
               latency_s=latency_s, device_bytes=1e15, page_bytes=4096, queue_depth=1)


def _page_reads(cpu: dict) -> SSD | None:
    """A cold memory-mapped gather faults one page at a time in the gathering thread: queue
    depth one, at the measured mmap page-read latency."""
    cold = (cpu.get("ssd") or {}).get("mmap_cold")
    if not cold:
        return None
    return _page_fault_ssd(cold["iops"], cold["latency_s"])


def _require(cpu: dict, *keys):
    missing = [k for k in keys if not cpu.get(k)]
    if missing:
        raise UserError(f"the profile lacks {', '.join(missing)}: run `engramsim profile --quick` first")


def _record_compute(hw: Hardware, model: ModelSpec, rec):
    """The roofline compute of one measured step, as the simulator would cost it."""
    bb = model.backbone
    per_seq = rec.tokens if rec.phase == "prefill" else rec.context_tokens // max(rec.seqs, 1)
    seqs = [Seq(0, 0.0, per_seq, 1)] * (1 if rec.phase == "prefill" else rec.seqs)
    return costs.step_compute(hw.gpu, bb, batch_shape(seqs, rec.phase == "prefill"), 1)


def fit_backbone_overheads(hw: Hardware, model: ModelSpec, baseline) -> tuple[float, float]:
    """(per-layer, per-step) host overheads of the eager forward, from the measured baseline.

    The harness times the layers before the first Engram layer ("pre"); what they take beyond
    the roofline is the per-layer dispatch overhead. What the whole step takes beyond its layers
    and LM head, spread over its steps, is the per-step overhead (sampling, batch bookkeeping).
    """
    bb, first = model.backbone, min(model.engram.layer_ids)
    comps = [_record_compute(hw, model, rec) for rec in baseline.step_records]
    layer = max(statistics.fmean(rec.pre_s / first - c.dense_layer_s
                                 for rec, c in zip(baseline.step_records, comps)), 0.0)
    # The run's wall time, not the sum of step timers: it also holds the work between steps.
    layers_s = sum(bb.n_layers * (layer + c.dense_layer_s) + c.head_s for c in comps)
    step = max((baseline.wall_s - layers_s) / len(comps), 0.0)
    return layer, step


def line_fit(points: list[tuple[int, float]]) -> tuple[float, float]:
    """(fixed seconds, seconds per token) of a cost measured against tokens per call."""
    from engramsim.calibrate import fit_line
    fixed, per_token = fit_line([b for b, _ in points], [t for _, t in points], relative=False)
    return max(fixed, 0.0), max(per_token, 0.0)


def paired_overhead_pct(runs: tuple[float, ...], baseline_runs: tuple[float, ...]) -> float:
    """Overhead against the baseline run of the same round, median over rounds. Repeats are
    interleaved, so each pair ran seconds apart: a host whose speed drifts over minutes (a shared
    VM) cancels out of the ratio."""
    return 100 * statistics.median(1 - r / b for r, b in zip(runs, baseline_runs))


def sim_workload(n_seqs: int, input_lens: list[int], output_lens: list[int]) -> Workload:
    """The harness prefills one prompt per step, then decodes the whole batch; its prefetch
    starts at each step's own start (no lookahead into the next prompt)."""
    engine = Engine(max_num_seqs=n_seqs, max_num_batched_tokens=max(input_lens) + max(output_lens),
                    kv_block_tokens=16, max_prefill_seqs=1, prefill_lookahead=False)
    return Workload(name="realmodel", kind="offline", num_seqs=n_seqs, input_len_min=min(input_lens),
                    input_len_max=max(input_lens), output_len_min=min(output_lens), output_len_max=max(output_lens),
                    engine=engine)


def machine_hardware(measured: list, model: ModelSpec, profile, device: str) -> Hardware:
    """The simulator's description of the machine the placements ran on: the CPU standing in
    for the accelerator, or the GPU calibrated from the profile."""
    threads = measured[0].torch_threads
    table_bytes = float(max(m.table_bytes for m in measured))
    if device == "cuda":
        return gpu_hardware(profile, threads, table_bytes)
    from engramsim.calibrate import cpu_device_from_profile
    return cpu_hardware(cpu_device_from_profile(profile), threads, model.engram.row_bytes, table_bytes)


def _sim_placement(m) -> Placement:
    """A measured placement as the simulator's; a cold map starts with what mincore found resident."""
    tier, _ = TIER_OF[m.placement]
    hit = (m.resident_before or 0.0) if m.cache_state == "cold" else 1.0
    return Placement(tier, ssd_dram_hit_rate=hit if tier == "ssd" else 0.0)


def predict(measured: list, model: ModelSpec, hw: Hardware, requests: Requests, engram_parts: dict
            ) -> list[ValidationCase]:
    """Simulate every measured placement on `hw` (`machine_hardware`); `measured` must include
    the baseline."""
    by_name = {m.placement: m for m in measured}
    if "baseline" not in by_name:
        raise UserError("validation needs the baseline placement measured")
    base = by_name["baseline"]
    layer_s, step_s = fit_backbone_overheads(hw, model, base)
    fusion_fixed, fusion_per_token = line_fit(engram_parts["fusion"])
    hash_fixed, hash_per_token = line_fit(engram_parts["hashing"])
    layers = len(model.engram.layer_ids)
    hw = replace(hw, gpu=replace(hw.gpu, layer_overhead_s=layer_s, step_overhead_s=step_s,
                                 engram_module_overhead_s=fusion_fixed, engram_module_s_per_token=fusion_per_token),
                 host=replace(hw.host, hash_call_s=hash_fixed / layers, hash_s_per_token=hash_per_token / layers))
    hw = _with_page_faults(hw, next((m.page_fault_s for m in measured if m.page_fault_s), None))
    workload = sim_workload(len(requests), list(map(int, requests.input_len)), list(map(int, requests.output_len)))
    # One simulation per prefetch mode: each simulates the baseline once beside its placements.
    engram_cases = [m for m in measured if m.placement != "baseline"]
    runs = {}
    for prefetch in (True, False):
        group = [m for m in engram_cases if TIER_OF[m.placement][1] == prefetch]
        report = simulate(Scenario(hw=hw, model=model, workload=workload, prefetch=prefetch),
                          [_sim_placement(m) for m in group], requests=requests)
        runs.update(zip((m.placement for m in group), report.runs))
    baseline_pred = report.baseline_tok_s
    cases = [ValidationCase("baseline", "no Engram", base.measured_tok_s, baseline_pred,
                            100 * (baseline_pred / base.measured_tok_s - 1), 0.0, 0.0, 0.0, 0.0,
                            tuple(base.tok_s_runs))]
    for m in engram_cases:
        run = runs[m.placement]
        tier, prefetch = TIER_OF[m.placement]
        cases.append(ValidationCase(
            placement=m.placement, sim_tier=tier + ("" if prefetch else " (sync)"), measured_tok_s=m.measured_tok_s,
            predicted_tok_s=run.throughput_tok_s,
            error_pct=100 * (run.throughput_tok_s / m.measured_tok_s - 1),
            measured_overhead_pct=paired_overhead_pct(m.tok_s_runs, base.tok_s_runs),
            predicted_overhead_pct=run.overhead_pct, measured_stall_s=m.stall_s, predicted_stall_s=run.stall_s,
            measured_runs_tok_s=tuple(m.tok_s_runs)))
    return cases


@dataclass(frozen=True)
class ValidationReport:
    machine: str
    profile: str
    config: dict
    torch_threads: int
    cases: list[ValidationCase]

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return {"machine": self.machine, "profile": self.profile, "config": self.config,
                "torch_threads": self.torch_threads, "cases": [asdict(c) for c in self.cases]}

    def __rich_console__(self, console, options):
        from rich.table import Table
        from rich.text import Text
        yield Text.assemble(("engramsim validate", "bold"), f"  {self.machine} · profile {self.profile} · "
                            f"{self.torch_threads} torch threads")
        t = Table(title="Real Engram model vs simulator", title_justify="left", header_style="bold")
        for col in ("placement", "sim tier", "measured tok/s", "predicted tok/s", "error", "measured overhead",
                    "predicted overhead", "stall s meas/pred"):
            t.add_column(col, justify="left" if col in ("placement", "sim tier") else "right",
                         no_wrap=col == "placement")
        for c in self.cases:
            style = "green" if abs(c.error_pct) <= 10 else "red"
            t.add_row(c.placement, c.sim_tier, f"{c.measured_tok_s:,.1f}", f"{c.predicted_tok_s:,.1f}",
                      Text(f"{c.error_pct:+.1f}%", style=style), f"{c.measured_overhead_pct:+.1f}%",
                      f"{c.predicted_overhead_pct:+.1f}%", f"{c.measured_stall_s:.3f} / {c.predicted_stall_s:.3f}")
        yield t
        yield Text("measured: median of interleaved repeats; overhead: median over rounds against the baseline "
                   "run of the same round. Repeats (tok/s) show this machine's run-to-run spread:", style="dim")
        for c in self.cases:
            yield Text(f"  {c.placement}: " + ", ".join(f"{x:,.0f}" for x in c.measured_runs_tok_s), style="dim")


def sim_requests(config) -> Requests:
    """The measured run's request lengths, in the simulator's form (all submitted at t=0)."""
    import numpy as np
    from engramsim.realmodel.harness import make_requests
    reqs = make_requests(config.workload, config.model.vocab_size)
    n = len(reqs.prompts)
    return Requests(np.zeros(n), np.array([len(p) for p in reqs.prompts]), np.array(reqs.output_lens))


PROFILE_BENCHMARKS = ("dram_gather", "memcpy", "cpu_matmul", "hash", "ssd_read")
# What a GPU validation reads from a profile: host gathers and hashing for the copy path, HBM
# gathers, link copies, UVA gathers, and the GPU matmul rate (overlap_gpu).
GPU_PROFILE_BENCHMARKS = ("dram_gather", "memcpy", "hash", "hbm_gather", "h2d", "d2h", "uva_gather",
                          "copy_pipeline", "overlap_gpu")


def run_validation(config, profile_path: str | None, scratch: str, progress=None) -> ValidationReport:
    """Profile (unless given), measure every placement, then predict each from the profile."""
    from dataclasses import asdict

    from engramsim.profile_io import load_profile
    from engramsim.realmodel import measure_placements, placements_for, this_device, to_model_spec
    from engramsim.realmodel.harness import time_engram_parts

    say = progress or (lambda msg: None)
    device = this_device(config)
    if profile_path:
        profile = load_profile(profile_path)
        label = str(profile_path)
    else:
        from engramsim.measure.run import run_profile
        say("profiling this machine (quick)")
        benchmarks = GPU_PROFILE_BENCHMARKS if device == "cuda" else PROFILE_BENCHMARKS
        profile = run_profile(only=list(benchmarks), quick=True, scratch=scratch,
                              progress=lambda name, rec: rec is None and say(f"profiling: {name}"))
        label = "measured now (quick)"
    say("timing the engine's Engram hashing and fusion alone")
    engram_parts = time_engram_parts(config)
    measured = measure_placements(config, placements_for(device), progress=say)
    say("simulating")
    model = to_model_spec(config)
    hw = machine_hardware(measured, model, profile, device)
    cases = predict(measured, model, hw, sim_requests(config), engram_parts)
    machine = (profile.gpu or {}).get("name") if device == "cuda" else profile.host.get("cpu_model")
    return ValidationReport(machine=str(machine), profile=label, config=asdict(config),
                            torch_threads=measured[0].torch_threads, cases=cases)
