"""Validation: the real model beside the simulator. Shapes and the calibration arithmetic are
tested; measured figures are not (they depend on the machine and its load)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engramsim.calibrate import cpu_hardware, gpu_hardware, with_page_faults
from engramsim.errors import UserError
from engramsim.realmodel import quick_config, to_model_spec
from engramsim.realmodel.config import StepRecord, TimedRun
from engramsim.realmodel.noise import NoiseLimits, RunNoise
from engramsim.validate import (
    AdaptiveStop,
    ComputeFit,
    fit_backbone_overheads,
    line_fit,
    overhead_estimates,
    profile_mismatch,
    select_rounds,
    sim_workload,
)

ROOT = Path(__file__).resolve().parent.parent
CPU = {
    "cpu_model": "test CPU",
    "cores": 2,
    "dram_bytes": 16 * 2**30,
    "matmul_flops": {"fp32": 50e9},
    "memcpy_Bps": 5e9,
    "gather_rows_per_s": {1: 3e6, 2: 5e6},
    "gather_rows_per_s_per_thread": 3e6,
    "gather_curve": None,
    "gather_call_overhead_s": 5e-6,
    "hash_s_per_token": 1e-7,
    "ssd": {"mmap_cold": {"iops": 20000.0, "latency_s": 50e-6}},
}


def test_cpu_hardware_uses_the_measured_rates():
    hw = cpu_hardware(CPU, threads=1, row_bytes=128, table_bytes=2**29)
    assert hw.gpu.compute_on_host and hw.gpu.compute_threads == 1
    assert hw.gpu.bf16_flops == 50e9 and hw.gpu.hbm_bw_Bps == 10e9
    # One prefetch thread gathers at the measured per-thread rate.
    assert hw.host.gather_mlp / hw.host.dram_latency_s == pytest.approx(3e6)
    # Cold page faults happen one at a time at the measured latency.
    assert hw.ssd.queue_depth == 1 and hw.ssd.latency_s == 50e-6


def test_cpu_hardware_needs_a_profile():
    with pytest.raises(UserError, match="engramsim profile"):
        cpu_hardware({"cores": 2}, threads=1, row_bytes=128, table_bytes=1.0)


def test_backbone_overheads_are_recovered_from_synthetic_steps():
    """Steps built from known overheads give those overheads back."""
    from dataclasses import replace

    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=1, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    from engramsim.validate import _record_compute

    layer_s, step_s, seq_s, first = 2e-3, 5e-3, 4e-4, min(model.engram.layer_ids)
    gap_s = 1e-4  # between steps: in the run's wall time, not in any step timer
    records = []
    for phase, seqs, tokens, context in [("prefill", 1, 40, 40), ("decode", 8, 8, 400), ("decode", 4, 4, 300)]:
        rec = StepRecord(phase, seqs, tokens, context, 0, 0, 0, 0, 0, 0, 0, 0)
        c = _record_compute(hw, model, rec)
        pre = first * (layer_s + c.dense_layer_s)
        total = model.backbone.n_layers * (layer_s + c.dense_layer_s) + c.head_s + step_s + seq_s * seqs
        records.append(
            StepRecord(
                phase,
                seqs,
                tokens,
                context,
                0,
                pre,
                0,
                0,
                0,
                total - pre,
                total,
                0,
                thread_cpu_s=total,
                run_delay_s=0.0,
            )
        )
    # A step another process kept off its core for 90% of it: only its running 10% is ours.
    like = records[1]
    slow = StepRecord(
        "decode",
        8,
        8,
        400,
        0,
        10 * like.pre_s,
        0,
        0,
        0,
        10 * like.rest_s,
        10 * like.total_s,
        0,
        thread_cpu_s=like.total_s,
        run_delay_s=9 * like.total_s,
    )
    steps = tuple(records)
    wall = sum(r.total_s for r in steps) + gap_s * len(steps)
    run = TimedRun(wall_s=wall, cpu_s=wall, tok_s=1.0, stall_s=0.0, busy_s=0.0, noise=quiet_noise(wall), steps=steps)
    noisy_run = TimedRun(
        wall_s=wall + slow.total_s + gap_s,
        cpu_s=wall,
        tok_s=1.0,
        stall_s=0.0,
        busy_s=0.0,
        noise=quiet_noise(wall),
        steps=steps + (slow,),
    )
    got = fit_backbone_overheads(hw, model, [run])
    assert got == pytest.approx((layer_s, step_s + gap_s, seq_s))
    got_layer, _, got_seq = fit_backbone_overheads(hw, model, [run, noisy_run])
    assert got_layer == pytest.approx(layer_s) and got_seq == pytest.approx(seq_s)
    # The fit is of each size's median, as the per-step comparison is: a step slowed without
    # waiting on a run queue (another process's cache and memory traffic) moves nothing when
    # its size has more steps at the usual time.
    slowed = replace(like, pre_s=3 * like.pre_s, rest_s=3 * like.rest_s, total_s=3 * like.total_s)
    skewed = replace(
        run, steps=steps + (like, like, slowed), wall_s=wall + 2 * like.total_s + slowed.total_s + 3 * gap_s
    )
    assert fit_backbone_overheads(hw, model, [skewed]) == pytest.approx((layer_s, step_s + gap_s, seq_s))


def test_the_simulator_logs_every_step_with_its_per_sequence_overhead():
    from engramsim.validate import simulate_steps

    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=1, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    workload = sim_workload(3, [10, 20, 30], [4, 2, 3])
    from engramsim.workload import Requests

    reqs = Requests(np.zeros(3), np.array([10, 20, 30]), np.array([4, 2, 3]))
    raw, plain = simulate_steps(hw, model, workload, reqs, None)
    more = simulate_steps(hw, model, sim_workload(3, [10, 20, 30], [4, 2, 3], seq_host_s=1e-3), reqs, None)[1]
    # Three prefills of one prompt each, then decodes of 3, 2 (one finished after 2 tokens) and 1.
    assert [(s.kind, s.tokens) for s in plain] == [
        ("prefill", 10),
        ("prefill", 20),
        ("prefill", 30),
        ("decode", 3),
        ("decode", 2),
        ("decode", 1),
    ]
    assert sum(s.seconds for s in plain) == pytest.approx(raw.makespan_s)
    seqs = [1, 1, 1, 3, 2, 1]
    assert [b.seconds - a.seconds for a, b in zip(plain, more)] == pytest.approx([1e-3 * n for n in seqs])


# (phase, sequences, tokens, context tokens) of synthetic baseline steps.
SIZES = [
    ("prefill", 1, 33, 33),
    ("prefill", 1, 60, 60),
    ("decode", 12, 12, 600),
    ("decode", 8, 8, 500),
    ("decode", 4, 4, 300),
    ("decode", 3, 3, 200),
    ("decode", 2, 2, 150),
    ("decode", 1, 1, 90),
]


def synthetic_pre_steps(true, model, sizes, layer_s=0.0):
    """Steps whose layers before the Engram layer take what `true` hardware costs them, plus `layer_s`."""
    from engramsim.validate import _record_compute

    steps = []
    for phase, seqs, tokens, context in sizes:
        rec = StepRecord(phase, seqs, tokens, context, 0, 0, 0, 0, 0, 0, 0, 0)
        pre = min(model.engram.layer_ids) * (layer_s + _record_compute(true, model, rec).dense_layer_s)
        steps.append(StepRecord(phase, seqs, tokens, context, 0, pre, 0, 0, 0, 0, pre, 0))
    return steps


def test_compute_rate_and_weight_bandwidth_are_recovered_from_synthetic_baseline_steps():
    """Steps whose layers run at 20 GFLOP/s and stream weights at 4 GB/s, plus 1 ms each, give
    both back, whatever the profile said (50 GFLOP/s, 10 GB/s); a GPU keeps its profile's.
    (Two compute threads: packing may overlap multiplying, as the roofline has it.)"""
    from dataclasses import replace

    from engramsim.validate import fit_compute_rates

    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=2, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    true = replace(hw, gpu=replace(hw.gpu, bf16_flops=20e9, hbm_bw_Bps=4e9))
    steps = synthetic_pre_steps(true, model, SIZES[:3] + SIZES[4:5] + SIZES[6:], layer_s=1e-3)
    fit = fit_compute_rates(hw, model, steps)
    assert fit.flops == pytest.approx(20e9, rel=1e-2) and fit.weights_Bps == pytest.approx(4e9, rel=1e-2)
    assert fit.gemv_max_rows == 0
    on_gpu = replace(hw, gpu=replace(hw.gpu, compute_on_host=False))
    assert fit_compute_rates(on_gpu, model, steps) == ComputeFit(50e9, 10e9)


@pytest.mark.parametrize("serial", [False, True])
def test_row_by_row_weight_streaming_is_recovered_from_synthetic_baseline_steps(serial):
    """Layers whose BLAS multiplies up to 3 rows one by one (each streaming the weights at
    2 GB/s) and packs from 4 rows on (20 GFLOP/s, 8 GB/s), plus 0.4 ms each: the fit gives the
    threshold, both bandwidths and the rate back, and whether packing and multiplying add
    (`serial`) or overlap; the step costs then follow the kink. One compute thread cannot
    overlap them: its fit is serial whatever the steps say."""
    from dataclasses import replace

    from engramsim.validate import _record_compute, fit_compute_rates

    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=1 if serial else 2, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    gpu = replace(hw.gpu, bf16_flops=20e9, hbm_bw_Bps=8e9, gemv_max_rows=3, gemv_Bps=2e9, layer_overhead_s=4e-4)
    gpu = replace(gpu, packed_serial=serial)
    true = replace(hw, gpu=replace(gpu, matmul_efficiency=1.0, hbm_efficiency=1.0))
    steps = synthetic_pre_steps(true, model, SIZES)
    fit = fit_compute_rates(hw, model, steps)
    assert fit.gemv_max_rows == 3
    assert fit.gemv_Bps == pytest.approx(2e9, rel=1e-2) and fit.weights_Bps == pytest.approx(8e9, rel=1e-2)
    assert fit.flops == pytest.approx(20e9, rel=1e-2) and fit.packed_serial == serial
    one, four = (_record_compute(true, model, StepRecord("decode", n, n, 90 * n, *[0] * 8)) for n in (1, 4))
    # One row streams the weights once at the slow rate; four packed rows stream them once, faster.
    assert one.dense_layer_s > four.dense_layer_s
    if not serial:  # the same overlapped steps on one thread: fitted serial all the same
        one_thread = replace(hw, gpu=replace(hw.gpu, compute_threads=1))
        assert fit_compute_rates(one_thread, model, steps).packed_serial


def quiet_noise(wall_s=1.0, outside=0.0, delay=0.0):
    return RunNoise(wall_s=wall_s, steal_pct=0.0, outside_cores=outside, run_delay_pct=delay, load_avg_1m=0.0)


def timed(tok_s, outside=0.0):
    return TimedRun(
        wall_s=1.0, cpu_s=1.0, tok_s=tok_s, stall_s=0.0, busy_s=0.0, noise=quiet_noise(outside=outside), steps=()
    )


def test_rounds_with_outside_load_are_dropped_from_the_overheads():
    # Round 2 ran beside another job that slowed the placement only: it must not count.
    runs = {
        "baseline": [timed(100), timed(100), timed(50), timed(100)],
        "device": [timed(90), timed(60, outside=1.2), timed(45), timed(90)],
    }
    sel = select_rounds(runs, NoiseLimits())
    assert sel.kept == [0, 2, 3] and sel.quiet_only and list(sel.reasons) == [1]
    assert "device: outside load 1.20 cores" in sel.reasons[1]
    est = overhead_estimates(runs, sel.kept)["device"]
    assert est.value == pytest.approx(10.0) and est.ci == pytest.approx((10.0, 10.0))


def test_adaptive_rounds_stop_on_a_narrow_ci_or_on_the_budget():
    tight = {"baseline": [timed(100)] * 3, "device": [timed(90), timed(90.5), timed(89.5)]}
    stop = AdaptiveStop(NoiseLimits(), budget_s=1000, min_rounds=3)
    assert stop(tight, spent_s=30) == "ci" and stop.half_width_pp <= 1.0
    wide = {"baseline": [timed(100)] * 3, "device": [timed(80), timed(95), timed(88)]}
    stop = AdaptiveStop(NoiseLimits(), budget_s=1000, min_rounds=3)
    assert stop(wide, spent_s=30) is None and stop.half_width_pp > 1.0
    # Another round would take 10 s more and pass the 35 s budget.
    assert AdaptiveStop(NoiseLimits(), budget_s=35, min_rounds=3)(wide, spent_s=30) == "budget"
    # Never before the fewest rounds, whatever the budget.
    few = {name: rs[:2] for name, rs in wide.items()}
    assert AdaptiveStop(NoiseLimits(), budget_s=1, min_rounds=3)(few, spent_s=30) is None
    assert AdaptiveStop(NoiseLimits(), budget_s=1e9, min_rounds=1, max_rounds=3)(wide, spent_s=1) == "max_rounds"
    # A narrow CI over noisy rounds (too few quiet ones) is no reason to stop.
    noisy = {"baseline": [timed(100, outside=2)] * 3, "device": [timed(90, outside=2)] * 3}
    assert AdaptiveStop(NoiseLimits(), budget_s=1000, min_rounds=3)(noisy, spent_s=3) is None


def test_a_profile_from_another_machine_is_named():
    import os
    import socket

    from engramsim.measure.system import cpu_model

    here = {"hostname": socket.gethostname(), "cpu_model": cpu_model(), "cpu_cores": os.cpu_count()}
    assert profile_mismatch(here, None, "cpu") is None
    line = profile_mismatch({**here, "hostname": "elsewhere", "cpu_cores": 64}, None, "cpu")
    assert "host 'elsewhere'" in line and "cores 64" in line and "\n" not in line


def test_line_fit_gives_fixed_and_per_token_cost():
    assert line_fit([(1, 1.1e-3), (11, 2.1e-3), (21, 3.1e-3)]) == pytest.approx((1e-3, 1e-4))


def test_sim_workload_prefills_one_prompt_per_step():
    w = sim_workload(3, [10, 20, 30], [5, 6, 7])
    assert w.engine.max_prefill_seqs == 1 and w.engine.max_num_seqs == 3
    assert not w.engine.prefill_lookahead  # the real harness does not look ahead
    assert (w.input_len_min, w.input_len_max) == (10, 30)


@pytest.mark.slow
def test_tiny_validation_end_to_end(tmp_path):
    """Every case carries the CI, consistency, per-step and noise fields; a profile from another
    machine gives one warning line; --save writes the same JSON."""
    pytest.importorskip("torch")
    data = json.loads((ROOT / "profiles" / "vm-cpu-2026-11-29.json").read_text())
    data["host"]["hostname"] = "another-host"
    profile = tmp_path / "other.json"
    profile.write_text(json.dumps(data))
    saved = tmp_path / "validation.json"
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "cli.py"),
            "validate",
            "--tiny",
            "--profile",
            str(profile),
            "--scratch",
            str(tmp_path),
            "--json",
            "--budget-s",
            "2",
            "--save",
            str(saved),
            "--save-measured",
            str(tmp_path / "measured.pkl"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1 and "host 'another-host'" in warnings[0]
    data = json.loads(r.stdout)
    assert json.loads(saved.read_text()) == data
    names = [c["placement"] for c in data["cases"]]
    assert names[0] == "baseline" and len(names) == 8
    assert data["rounds"] >= 1 and data["stopped_by"] in ("ci", "budget", "max_rounds")
    assert data["rounds_kept"] + len(data["dropped_rounds"]) >= min(data["rounds"], 3)
    for case in data["cases"]:
        lo, hi = case["measured_tok_s_ci"]
        assert lo <= case["measured_tok_s"] <= hi
        lo, hi = case["measured_overhead_ci_pp"]
        assert lo <= case["measured_overhead_pct"] <= hi
        assert isinstance(case["consistent"], bool)
        assert np.isfinite(case["predicted_tok_s"]) and case["predicted_tok_s"] > 0
        assert {"steal_pct", "rounds_dropped"} <= set(case["noise"])
        kinds = {s["kind"] for s in case["per_step"]}
        assert kinds == {"prefill", "decode"}
        for s in case["per_step"]:
            assert s["error_pct"] == pytest.approx(100 * (s["predicted_ms"] / s["measured_median_ms"] - 1))
    # The raw measurements give the very same report again, measuring nothing.
    from engramsim.fileio import dumps_json
    from engramsim.validate import load_measurements, validation_report

    replayed = validation_report(load_measurements(str(tmp_path / "measured.pkl")))
    assert json.loads(dumps_json(replayed.to_dict())) == data


def test_budget_must_be_positive(capsys):
    from engramsim.cli import main

    for bad in ("0", "-5", "nan", "1e30"):
        with pytest.raises(SystemExit) as e:
            main(["validate", "--tiny", "--budget-s", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert (
            err.startswith("error: Invalid value for '--budget-s': must be a number in (0, 604800]") and "\n" not in err
        )


def test_every_placement_maps_to_a_simulator_tier():
    from engramsim.realmodel import CPU_PLACEMENTS, GPU_PLACEMENTS
    from engramsim.sim.tiers import TIERS
    from engramsim.validate import GPU_TIER_OF, TIER_OF

    assert set(TIER_OF) == set(CPU_PLACEMENTS + GPU_PLACEMENTS) - {"baseline"}
    assert all(tier in TIERS for tier, _ in TIER_OF.values())
    assert GPU_TIER_OF == {
        "gpu-hbm": ("hbm", True),
        "pinned-copy-prefetch": ("dram-copy", True),
        "pinned-copy-sync": ("dram-copy", False),
        "pinned-uva-prefetch": ("dram-uva", True),
        "pinned-uva-sync": ("dram-uva", False),
    }


def test_gpu_hardware_needs_gpu_measurements():
    from engramsim.profile_io import load_profile

    profile = load_profile(ROOT / "profiles" / "vm-cpu-2026-11-29.json")
    with pytest.raises(UserError, match="no GPU"):
        gpu_hardware(profile, threads=4, table_bytes=2**32)


def test_gpu_hardware_is_one_gpu_over_the_h200_preset():
    """The profile's host figures over h200; one GPU per host; engine overheads left to the
    baseline fit instead of the preset's nano-vLLM figures."""
    from engramsim.hardware import load_hardware
    from engramsim.profile_io import load_profile

    profile = load_profile(ROOT / "profiles" / "vm-cpu-2026-11-29.json")
    profile.gpu = {"name": "NVIDIA H200", "memory_bytes": 141 * 10**9}  # as system.gpu_info reports it
    hw = gpu_hardware(profile, threads=16, table_bytes=2**32)
    h200 = load_hardware("h200")
    assert hw.gpus_per_host == 1 and hw.gpu.name == "NVIDIA H200" and not hw.gpu.compute_on_host
    assert hw.gpu.step_overhead_s == hw.gpu.layer_overhead_s == 0.0
    assert hw.host.gather_threads_per_gpu == 16
    assert hw.host.cpu_cores == profile.host["cpu_cores"]
    assert hw.link.h2d_Bps == h200.link.h2d_Bps  # no h2d in this profile: the preset's figure


def test_page_faults_timed_on_the_table_replace_the_profile_figure():
    hw = cpu_hardware(CPU, threads=1, row_bytes=128, table_bytes=2**29)
    assert with_page_faults(hw, None) is hw
    timed = with_page_faults(hw, 40e-6)
    assert timed.ssd.latency_s == 40e-6 and timed.ssd.read_iops == pytest.approx(25_000)
    assert timed.ssd.queue_depth == 1


def test_the_report_renders_cis_consistency_and_noise():
    from io import StringIO

    from rich.console import Console

    from engramsim.realmodel.stats import StepComparison
    from engramsim.validate import ValidationCase, ValidationReport

    step = StepComparison("decode", "8-15", 40, 3, 13.0, (12.5, 13.4), 14.0, 13.6, 13.7, 4.6, 0.0, 0.0, 13.1, 3.8)
    noise = {
        "steal_pct": 0.5,
        "outside_load_cores": 0.2,
        "run_delay_pct": 1.0,
        "rounds": 6,
        "rounds_kept": 5,
        "rounds_dropped": 1,
        "quiet_only": True,
        "steps_dropped": 3,
    }
    base = ValidationCase(
        "baseline",
        "no Engram",
        "calibration",
        300.0,
        (290.0, 310.0),
        301.0,
        0.33,
        0.0,
        (0.0, 0.0),
        0.0,
        True,
        0.0,
        0.0,
        (step,),
        noise,
    )
    host = ValidationCase(
        "host-sync",
        "dram-copy (sync)",
        "prediction",
        282.0,
        (279.0, 285.0),
        283.0,
        0.35,
        6.0,
        (5.2, 6.8),
        9.1,
        False,
        0.0,
        0.001,
        (step,),
        noise,
    )
    report = ValidationReport(
        "test CPU",
        "p.json",
        {},
        1,
        [base, host],
        rounds=6,
        rounds_kept=5,
        dropped_rounds={3: ["baseline: outside load 1.20 cores"]},
        stopped_by="ci",
        budget_s=300,
        worst_overhead_ci_half_width_pp=0.8,
        pinned="compute on cores [0], prefetch on [1]",
    )
    out = StringIO()
    Console(file=out, width=220, color_system=None).print(report)
    text = out.getvalue()
    assert "+6.0% [+5.2, +6.8]" in text and "+9.1%" in text  # the predicted 9.1 lies outside: not consistent
    assert "round 3 dropped: baseline: outside load 1.20 cores" in text
    assert "stopped because every overhead CI reached the target" in text and "reached 0.80 pp" in text
    assert "NOT every case consistent; worst per-step median error 4.6%" in text
    assert report.to_dict()["cases"][1]["per_step"][0]["error_pct"] == 4.6 and not report.all_consistent


def test_page_faults_are_the_median_of_the_kept_rounds_timings():
    from types import SimpleNamespace

    from engramsim.validate import page_fault_s_of

    cold = SimpleNamespace(page_fault_s=90e-6, page_fault_s_rounds=(60e-6, 180e-6, 70e-6, 80e-6))
    device = SimpleNamespace(page_fault_s=None, page_fault_s_rounds=())
    # Round 1 was dropped (noisy): its 180 us does not count.
    assert page_fault_s_of([device, cold], kept=[0, 2, 3]) == pytest.approx(70e-6)
    assert page_fault_s_of([device, cold], kept=[]) == pytest.approx(75e-6)
    assert page_fault_s_of([device], kept=[0]) is None
    # A case from before per-round timings: its one figure.
    assert page_fault_s_of([SimpleNamespace(page_fault_s=5e-5, page_fault_s_rounds=())], kept=[0]) == 5e-5


def test_a_cold_map_warms_with_the_runs_own_re_reads():
    from engramsim.validate import cold_hit_rate

    def step(rows, new):
        return StepRecord("decode", 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, rows, new_pages=new)

    # 100 reads, 80 of them to pages the run had not read yet; 25% resident at the start.
    steps = [step(40, 40), step(60, 40)]
    assert cold_hit_rate(0.25, steps) == pytest.approx(1 - 0.75 * 0.8)
    assert cold_hit_rate(0.0, steps) == pytest.approx(0.2)
    assert cold_hit_rate(0.3, []) == 0.3


def test_page_touches_count_each_page_once_per_run():
    from engramsim.realmodel.harness import PageTouches

    touches = PageTouches(row_bytes=1024, page_bytes=4096)  # four rows a page
    assert touches.new(np.array([0, 1, 5])) == 2  # pages 0 and 1
    assert touches.new(np.array([2, 4, 8])) == 1  # only page 2 is new
    spanning = PageTouches(row_bytes=3000, page_bytes=4096)  # row 1 spans pages 0 and 1
    assert spanning.new(np.array([1])) == 2 and spanning.new(np.array([0])) == 0


def head_steps(gpu, model, rows_list, share=1.0):
    """Baseline steps whose timed heads take what `gpu` costs them (`costs.head_matmul_s`)."""
    from engramsim.costs import head_matmul_s

    bb = model.backbone
    weights = bb.hidden_size * bb.vocab_size * bb.weight_bytes_per_param
    steps = []
    for rows in rows_list:
        head = head_matmul_s(gpu, rows, 2.0 * rows * bb.hidden_size * bb.vocab_size, weights)
        phase = "prefill" if rows == 1 else "decode"
        steps.append(
            StepRecord(phase, 1 if rows == 1 else rows, 40 if rows == 1 else rows, 40 * rows, *[0] * 8, head_s=head)
        )
    return steps


def test_head_regimes_price_two_and_three_rows_above_four():
    """The LM head of a CPU stand-in (weights from memory): 1-3 rows stream the weights once a
    row, 4 rows pack them once and multiply; hand-checked on 1e6 weight bytes."""
    from dataclasses import replace

    from engramsim.costs import head_matmul_s

    hw = cpu_hardware(CPU, threads=1, row_bytes=128, table_bytes=2**29)
    gpu = replace(hw.gpu, gemv_max_rows=3, head_gemv_Bps=1e9, head_weights_Bps=2e9, head_flops=4e9)
    # 1e6 bytes at 1 GB/s a row; packed: 1e6 / 2e9 + 4 x 2e6 flops / 4e9.
    assert [head_matmul_s(gpu, n, n * 2e6, 1e6) for n in (1, 2, 3, 4)] == pytest.approx([1e-3, 2e-3, 3e-3, 2.5e-3])
    # Without head rates the head is any matmul (the roofline here).
    assert head_matmul_s(hw.gpu, 4, 8e6, 1e6) == pytest.approx(
        max(8e6 / (hw.gpu.bf16_flops * hw.gpu.matmul_efficiency), 1e6 / (hw.gpu.hbm_bw_Bps * hw.gpu.hbm_efficiency))
    )


@pytest.mark.parametrize("threshold", [0, 2, 3])
def test_head_threshold_and_rates_are_recovered_from_synthetic_timed_heads(threshold):
    """Timed heads from known regimes give the threshold and the three rates back; a GPU, or
    heads never timed, give nothing (the head stays a plain matmul)."""
    from dataclasses import replace

    from engramsim.validate import fit_head

    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=1, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    true = replace(hw.gpu, gemv_max_rows=threshold, head_gemv_Bps=15e9, head_weights_Bps=18e9, head_flops=70e9)
    steps = head_steps(true, model, [1, 1, 2, 3, 4, 5, 6, 8, 10, 12])
    fit = fit_head(hw, model, steps)
    assert fit.gemv_max_rows == threshold
    assert fit.weights_Bps == pytest.approx(18e9, rel=1e-6) and fit.flops == pytest.approx(70e9, rel=1e-6)
    assert fit.gemv_Bps == (pytest.approx(15e9, rel=1e-6) if threshold else 0.0)
    assert fit_head(replace(hw, gpu=replace(hw.gpu, compute_on_host=False)), model, steps) is None
    assert fit_head(hw, model, [replace(s, head_s=0.0) for s in steps]) is None


def test_the_head_fit_sets_the_layers_threshold_and_prices_the_kink():
    """describe_machine: the threshold found on the heads is the one the layers use, and the
    simulator's head then costs more at 3 rows than at 4, as measured."""
    from dataclasses import replace

    from engramsim.costs import step_compute
    from engramsim.validate import describe_machine

    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=1, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    true = replace(hw.gpu, gemv_max_rows=3, head_gemv_Bps=15e9, head_weights_Bps=18e9, head_flops=70e9)
    steps = [replace(s, pre_s=1e-3, total_s=5e-3 + s.head_s) for s in head_steps(true, model, [1, 2, 3, 4, 6, 8, 12])]
    run = TimedRun(wall_s=1.0, cpu_s=1.0, tok_s=1.0, stall_s=0.0, busy_s=0.0, noise=quiet_noise(), steps=tuple(steps))
    parts = {"fusion": [(1, 1e-4), (8, 2e-4)], "hashing": [(1, 1e-5), (8, 2e-5)]}
    fitted, _ = describe_machine(hw, model, [run], parts, None)
    assert fitted.gpu.gemv_max_rows == 3 and fitted.gpu.head_weights_Bps == pytest.approx(18e9, rel=1e-6)
    from engramsim.costs import decode_shape

    heads = [step_compute(fitted.gpu, model.backbone, decode_shape(100 * n, n), 1).head_s for n in (1, 3, 4)]
    assert heads[1] == pytest.approx(3 * heads[0]) and heads[2] < heads[1]


def test_prefetching_placements_fault_at_the_prefetch_threads_rate():
    """Faults timed on the prefetch thread's cores price the prefetching mmap placement; the
    sync one keeps the compute thread's; without them, both take the compute thread's."""
    from types import SimpleNamespace

    from engramsim.validate import page_fault_s_of

    cold = SimpleNamespace(
        page_fault_s=65e-6,
        page_fault_s_rounds=(60e-6, 70e-6, 65e-6),
        prefetch_page_fault_s_rounds=(50e-6, 55e-6, 56e-6),
    )
    assert page_fault_s_of([cold], kept=[0, 1, 2]) == pytest.approx(65e-6)
    assert page_fault_s_of([cold], kept=[0, 1, 2], prefetch_thread=True) == pytest.approx(55e-6)
    older = SimpleNamespace(page_fault_s=65e-6, page_fault_s_rounds=(60e-6, 70e-6, 65e-6))
    assert page_fault_s_of([older], kept=[0, 1, 2], prefetch_thread=True) == pytest.approx(65e-6)


def test_replay_of_a_file_that_is_not_measurements_is_one_line(tmp_path):
    bad = tmp_path / "x.pkl"
    bad.write_bytes(b"not a pickle")
    out = subprocess.run(
        [sys.executable, "cli.py", "validate", "--replay", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2 and out.stderr.strip().startswith("error: --replay") and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_replay_refuses_a_pickle_that_would_run_code(tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "evil.pkl"
    bad.write_bytes(pickle.dumps(Exploit()))
    out = subprocess.run(
        [sys.executable, "cli.py", "validate", "--replay", str(bad)], cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 2 and "error: --replay" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists()


def test_replay_reads_the_foreign_values_a_real_measurement_holds():
    import io
    import pickle

    torch = pytest.importorskip("torch")
    from engramsim.validate import _MeasurementsUnpickler

    values = (torch.__version__, np.arange(3.0), np.float64(2.5))
    loaded = _MeasurementsUnpickler(io.BytesIO(pickle.dumps(values))).load()
    assert loaded[0] == torch.__version__ and list(loaded[1]) == [0.0, 1.0, 2.0] and loaded[2] == 2.5


def test_the_engram_parts_are_the_median_over_their_timings():
    from engramsim.validate import median_parts

    rounds = [
        {"fusion": [(1, 0.4), (4, 0.5)], "hashing": [(1, 0.2), (4, 0.2)]},
        {"fusion": [(1, 0.6), (4, 0.9)], "hashing": [(1, 0.1), (4, 0.3)]},
        {"fusion": [(1, 0.5), (4, 0.6)], "hashing": [(1, 0.3), (4, 0.25)]},
    ]
    assert median_parts(rounds) == {"fusion": [(1, 0.5), (4, 0.6)], "hashing": [(1, 0.2), (4, 0.25)]}
    assert median_parts(rounds[:1]) == rounds[0]


def test_a_measured_step_carries_its_share_of_the_work_between_steps():
    """Two steps of 3 and 5 ms in a run of 10 ms: the 2 ms outside the step timers (the loop,
    the bookkeeping) is in the simulator's steps, so each measured step gets 1 ms of it."""
    from engramsim.validate import _measured_steps, between_steps_s

    steps = (
        StepRecord("decode", 2, 2, 40, *[0] * 6, 3e-3, 0),
        StepRecord("decode", 2, 2, 42, *[0] * 6, 5e-3, 0),
    )
    run = TimedRun(wall_s=10e-3, cpu_s=0.0, tok_s=1.0, stall_s=0.0, busy_s=0.0, noise=quiet_noise(), steps=steps)
    assert between_steps_s(run) == pytest.approx(1e-3)
    samples = _measured_steps([run], [0], NoiseLimits())
    assert [s.seconds for s in samples] == pytest.approx([4e-3, 6e-3])
    assert [s.running_s for s in samples] == pytest.approx([4e-3, 6e-3])


def test_the_prefetch_handoff_is_paid_once_per_engram_layer_and_step_by_prefetching_placements():
    """1 ms handoff, one Engram layer: every step of a prefetching placement takes 1 ms more
    (rows in RAM: the fetch itself is hidden); a synchronous one pays nothing."""
    from dataclasses import replace

    from engramsim.sim.tiers import Placement
    from engramsim.validate import simulate_steps
    from engramsim.workload import Requests

    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=1, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    slow = replace(hw, host=replace(hw.host, prefetch_handoff_s=1e-3))
    reqs = Requests(np.zeros(3), np.array([10, 20, 30]), np.array([4, 2, 3]))
    workload = sim_workload(3, [10, 20, 30], [4, 2, 3])
    assert len(model.engram.layer_ids) == 1
    for prefetch, extra in ((True, 1e-3), (False, 0.0)):
        base = simulate_steps(hw, model, workload, reqs, Placement("dram-copy"), prefetch)[1]
        more = simulate_steps(slow, model, workload, reqs, Placement("dram-copy"), prefetch)[1]
        assert [b.seconds - a.seconds for a, b in zip(base, more)] == pytest.approx([extra] * len(base), abs=1e-9)


def test_the_layers_weight_rates_are_never_below_the_floors_given():
    """The head's weights stream from memory; a layer's, far smaller, cannot stream slower: the
    fit clamps its rates to the floors it is given (`describe_machine` passes the head's)."""
    from dataclasses import replace

    from engramsim.validate import fit_compute_rates

    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=1, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    gpu = replace(hw.gpu, bf16_flops=20e9, hbm_bw_Bps=8e9, gemv_max_rows=3, gemv_Bps=2e9, layer_overhead_s=4e-4)
    true = replace(hw, gpu=replace(gpu, packed_serial=True, matmul_efficiency=1.0, hbm_efficiency=1.0))
    steps = synthetic_pre_steps(true, model, SIZES)
    fit = fit_compute_rates(hw, model, steps, gemv_rows_tried=(3,), floors=(16e9, 4e9))
    assert fit.weights_Bps >= 16e9 and fit.gemv_Bps >= 4e9


def test_only_placements_with_a_prefetch_thread_pay_its_handoff_and_fault_on_its_core():
    from types import SimpleNamespace

    from engramsim.validate import _case_hardware

    model = to_model_spec(quick_config())
    hw = with_page_faults(cpu_hardware(CPU, threads=1, row_bytes=model.engram.row_bytes, table_bytes=2**29), 70e-6)
    prefetch_hw = with_page_faults(hw, 50e-6)
    case = lambda name, handoff: SimpleNamespace(placement=name, prefetch_handoff_s=handoff)  # noqa: E731
    got = {
        name: _case_hardware(case(name, handoff), hw, prefetch_hw)
        for name, handoff in [("device", None), ("host-sync", None), ("mmap-prefetch-cold", 1e-4)]
    }
    assert got["device"].host.prefetch_handoff_s == 0.0  # rows gathered in line: no thread
    assert got["host-sync"] is hw and got["host-sync"].ssd.latency_s == 70e-6
    assert got["mmap-prefetch-cold"].host.prefetch_handoff_s == 1e-4
    assert got["mmap-prefetch-cold"].ssd.latency_s == 50e-6
