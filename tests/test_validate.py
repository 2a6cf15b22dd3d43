"""Validation: the real model beside the simulator. Shapes and the calibration arithmetic are
tested; measured figures are not (they depend on the machine and its load)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engramsim.errors import UserError
from engramsim.realmodel import quick_config, to_model_spec
from engramsim.realmodel.config import StepRecord
from engramsim.validate import cpu_hardware, fit_backbone_overheads, line_fit, sim_workload

ROOT = Path(__file__).resolve().parent.parent
CPU = {"cpu_model": "test CPU", "cores": 2, "dram_bytes": 16 * 2**30, "matmul_flops": {"fp32": 50e9},
       "memcpy_Bps": 5e9, "gather_rows_per_s": {1: 3e6, 2: 5e6}, "gather_rows_per_s_per_thread": 3e6,
       "gather_curve": None, "gather_call_overhead_s": 5e-6, "hash_s_per_token": 1e-7,
       "ssd": {"mmap_cold": {"iops": 20000.0, "latency_s": 50e-6}}}


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
    model = to_model_spec(quick_config())
    hw = cpu_hardware(CPU, threads=1, row_bytes=model.engram.row_bytes, table_bytes=2**29)
    from engramsim.validate import _record_compute
    layer_s, step_s, first = 2e-3, 5e-3, min(model.engram.layer_ids)
    records = []
    for phase, seqs, tokens, context in [("prefill", 1, 40, 40), ("decode", 8, 8, 400), ("decode", 4, 4, 300)]:
        rec = StepRecord(phase, seqs, tokens, context, 0, 0, 0, 0, 0, 0, 0, 0)
        c = _record_compute(hw, model, rec)
        pre = first * (layer_s + c.dense_layer_s)
        total = model.backbone.n_layers * (layer_s + c.dense_layer_s) + c.head_s + step_s
        records.append(StepRecord(phase, seqs, tokens, context, 0, pre, 0, 0, 0, total - pre, total, 0))

    class Baseline:
        step_records = records
        wall_s = sum(r.total_s for r in records)

    got_layer, got_step = fit_backbone_overheads(hw, model, Baseline)
    assert got_layer == pytest.approx(layer_s) and got_step == pytest.approx(step_s)


def test_line_fit_gives_fixed_and_per_token_cost():
    assert line_fit([(1, 1.1e-3), (11, 2.1e-3), (21, 3.1e-3)]) == pytest.approx((1e-3, 1e-4))


def test_sim_workload_prefills_one_prompt_per_step():
    w = sim_workload(3, [10, 20, 30], [5, 6, 7])
    assert w.engine.max_prefill_seqs == 1 and w.engine.max_num_seqs == 3
    assert not w.engine.prefill_lookahead  # the real harness does not look ahead
    assert (w.input_len_min, w.input_len_max) == (10, 30)


@pytest.mark.slow
def test_tiny_validation_end_to_end(tmp_path):
    pytest.importorskip("torch")
    profile = ROOT / "profiles" / "vm-cpu-2026-11-29.json"
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "validate", "--tiny", "--profile", str(profile),
                        "--scratch", str(tmp_path), "--json"], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    names = [c["placement"] for c in data["cases"]]
    assert names[0] == "baseline" and len(names) == 8
    for case in data["cases"]:
        assert {"placement", "measured_tok_s", "predicted_tok_s", "error_pct", "measured_overhead_pct",
                "predicted_overhead_pct"} <= set(case)
        assert np.isfinite(case["predicted_tok_s"]) and case["predicted_tok_s"] > 0


def test_paired_overhead_cancels_drift_between_rounds():
    from engramsim.validate import paired_overhead_pct
    # The host runs at full, half and full speed over three rounds; the placement costs 10%.
    baseline = (100.0, 50.0, 100.0)
    placement = (90.0, 45.0, 90.0)
    assert paired_overhead_pct(placement, baseline) == pytest.approx(10.0)


def test_every_placement_maps_to_a_simulator_tier():
    from engramsim.realmodel import CPU_PLACEMENTS, GPU_PLACEMENTS
    from engramsim.sim.tiers import TIERS
    from engramsim.validate import GPU_TIER_OF, TIER_OF
    assert set(TIER_OF) == set(CPU_PLACEMENTS + GPU_PLACEMENTS) - {"baseline"}
    assert all(tier in TIERS for tier, _ in TIER_OF.values())
    assert GPU_TIER_OF == {"gpu-hbm": ("hbm", True), "pinned-copy-prefetch": ("dram-copy", True),
                           "pinned-copy-sync": ("dram-copy", False), "pinned-uva-prefetch": ("dram-uva", True),
                           "pinned-uva-sync": ("dram-uva", False)}


def test_gpu_hardware_needs_gpu_measurements():
    from engramsim.profile_io import load_profile
    from engramsim.validate import gpu_hardware
    profile = load_profile(ROOT / "profiles" / "vm-cpu-2026-11-29.json")
    with pytest.raises(UserError, match="no GPU"):
        gpu_hardware(profile, threads=4, table_bytes=2**32)


def test_gpu_hardware_is_one_gpu_over_the_h200_preset():
    """The profile's host figures over h200; one GPU per host; engine overheads left to the
    baseline fit instead of the preset's nano-vLLM figures."""
    from engramsim.hardware import load_hardware
    from engramsim.profile_io import load_profile
    from engramsim.validate import gpu_hardware
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
    from engramsim.validate import _with_page_faults
    hw = cpu_hardware(CPU, threads=1, row_bytes=128, table_bytes=2**29)
    assert _with_page_faults(hw, None) is hw
    timed = _with_page_faults(hw, 40e-6)
    assert timed.ssd.latency_s == 40e-6 and timed.ssd.read_iops == pytest.approx(25_000)
    assert timed.ssd.queue_depth == 1
