"""One-box inference: unified-memory machines, how an engine reads rows from SSD, closed-loop
streams and caches that start cold. Hand-computed values on tiny scenarios."""

import math
from dataclasses import replace

import numpy as np
import pytest

from engramsim import costs
from engramsim.cache import stack_distances
from engramsim.capacity import Parallel, plan_memory
from engramsim.engine import load_engine
from engramsim.errors import UserError
from engramsim.hardware import load_hardware
from engramsim.iopolicy import IOPolicy
from engramsim.model import load_model, with_row_dtype
from engramsim.onebox import fresh_bytes_per_fault
from engramsim.rows.warmup import ColdStart, lru_warmup, uniform_warmup
from engramsim.sim.run import simulate
from engramsim.sim.tiers import Placement, default_tiers, tier_for
from tests.clikit import run_cli
from tests.simkit import scenario, tiny_workload

M3 = load_hardware("apple-m3-ultra")
MODEL = "engram-27b"


def decode_heavy(num_seqs=2, concurrency=None):
    w = tiny_workload(num_seqs=num_seqs, inp=(32, 32), out=(24, 24), max_seqs=8)
    return w.closed_loop(concurrency) if concurrency else w


# --- unified memory ---------------------------------------------------------------------------


def test_a_unified_machine_names_its_in_memory_tier_unified_and_refuses_host_tiers():
    assert tier_for(M3, "hbm") == "unified" and tier_for(M3, "ssd") == "ssd"
    assert default_tiers(M3) == ("unified", "ssd")
    for tier in ("dram-uva", "dram-copy", "cxl-uva", "cxl-copy"):
        with pytest.raises(UserError, match="unified-memory machine"):
            tier_for(M3, tier)
    with pytest.raises(UserError, match="not a unified-memory machine"):
        tier_for(load_hardware("h800"), "unified")
    assert Placement("unified").memory == "hbm" and Placement("unified").path == "hbm"


def test_a_unified_pool_holds_the_ssd_tiers_row_cache_and_the_os_keeps_its_share():
    sc = scenario(hw=M3, model=MODEL)
    engine = load_engine("llama-cpp")
    free = plan_memory(M3, sc.model, engine, Parallel(), "ssd", 0.0, 0.0)
    cached = plan_memory(M3, sc.model, engine, Parallel(), "ssd", 0.0, 8 * 2**30)
    assert free.per_rank_GiB["kv"] - cached.per_rank_GiB["kv"] == pytest.approx(8.0)
    assert free.usable_GiB == pytest.approx(512 - 32)  # the pool less the OS's reserve


def test_unified_ssd_reads_stage_rows_without_a_host_link():
    sc = scenario(decode_heavy(), hw=M3, model=MODEL, io=IOPolicy(readers=4))
    run = simulate(sc, [Placement("ssd")]).runs[0]
    assert "link" not in run.resources and run.resources["ssd_iops"]["moved"] > 0


# --- how rows are read ------------------------------------------------------------------------


def test_iops_by_queue_depth_interpolates_the_parts_measured_points():
    ssd = M3.ssd  # Apple internal: 13.3K at QD1, 38.5K at QD8, 250K at QD64
    assert costs.ssd_iops_at(ssd, 1) == pytest.approx(13333)
    assert costs.ssd_iops_at(ssd, 8) == pytest.approx(38500)
    assert costs.ssd_iops_at(ssd, 0.5) == pytest.approx(13333 / 2)
    between = costs.ssd_iops_at(ssd, math.sqrt(8 * 64))  # geometric middle of 8 and 64
    assert between == pytest.approx(math.sqrt(38500 * 250000))
    assert costs.ssd_iops_at(ssd, 4096) == pytest.approx(ssd.read_iops)


def test_serial_reads_take_latency_plus_cpu_each_and_more_readers_keep_more_in_flight():
    ssd, os = M3.ssd, M3.os
    one = costs.ssd_read_plan(ssd, os, IOPolicy(readers=1), 264, rows=24)
    assert one.op_s == pytest.approx(ssd.latency_s + os.pread_cpu_s, rel=1e-4)
    assert one.rows_per_s == pytest.approx(1 / (75e-6 + 2e-6), rel=1e-4)
    eight = costs.ssd_read_plan(ssd, os, IOPolicy(readers=8), 264, rows=24)
    assert eight.op_s == pytest.approx(8 / 38500 + os.pread_cpu_s)  # the device's time at QD8
    assert eight.rows_per_s > 2.5 * one.rows_per_s


@pytest.mark.parametrize("rows, readers, read_times", [(24, 1, 24), (24, 8, 3), (4, 8, 1), (1, 1, 1)])
def test_reads_take_one_read_time_per_wave_of_readers(rows, readers, read_times):
    plan = costs.ssd_read_plan(M3.ssd, M3.os, IOPolicy(readers=readers), 264, rows)
    assert plan.lead_s(rows) + rows / plan.rows_per_s == pytest.approx(read_times * plan.op_s)


def test_an_engine_that_reads_decode_rows_serially_fans_out_only_big_reads():
    policy = IOPolicy(readers=16, parallel_min_rows=256)
    assert policy.readers_for(24) == 1 and policy.readers_for(4096) == 16
    small = costs.ssd_read_plan(M3.ssd, M3.os, policy, 264, rows=24)
    assert small.in_flight == 1


@pytest.mark.parametrize(
    "io, madvise, ssd_bytes, cpu_attr",
    [
        ("pread", False, 16384, "pread_cpu_s"),  # a buffered read loads one 16 KiB page
        ("mmap", False, 4 * 16384, "fault_cpu_s"),  # a fault reads the OS's read-around window
        ("mmap", True, 16384, "fault_cpu_s"),  # MADV_RANDOM: one page
        ("odirect", False, 4096, "pread_cpu_s"),  # the row's own 4 KiB block
    ],
)
def test_bytes_and_cpu_per_read_follow_the_io_kind_and_page_size(io, madvise, ssd_bytes, cpu_attr):
    plan = costs.ssd_read_plan(M3.ssd, M3.os, IOPolicy(readers=1, io=io, madvise_random=madvise), 264, rows=1)
    assert plan.ssd_bytes == ssd_bytes and plan.cpu_s == getattr(M3.os, cpu_attr)


def test_io_uring_overlaps_its_cpu_with_the_device_and_keeps_depth_per_reader():
    linux = load_hardware("rtx-pro-6000-ws")
    plan = costs.ssd_read_plan(linux.ssd, linux.os, IOPolicy(readers=2, io="io_uring", io_depth=16), 264, rows=1000)
    assert plan.in_flight == 32
    assert plan.op_s == pytest.approx(max(linux.ssd.latency_s, 32 / costs.ssd_iops_at(linux.ssd, 32)))


def test_bad_io_policies_are_refused():
    with pytest.raises(UserError, match="read-at"):
        IOPolicy(read_at="later")
    with pytest.raises(UserError, match="io"):
        IOPolicy(io="aio")
    with pytest.raises(UserError, match="--readers"):
        IOPolicy().with_flags(readers=0)


def test_read_at_orders_ssd_throughput_and_more_readers_help_blocking_reads():
    w = decode_heavy(num_seqs=2, concurrency=1)

    def tok_s(tier, **io):
        sc = scenario(w, hw=M3, model=MODEL, io=IOPolicy(**io))
        return simulate(sc, [Placement(tier)]).runs[0].throughput_tok_s

    forward1 = tok_s("ssd", read_at="forward", readers=1)
    forward16 = tok_s("ssd", read_at="forward", readers=16)
    prefetch = tok_s("ssd", read_at="prefetch", readers=1)
    resident = tok_s("unified")
    assert forward1 < prefetch <= resident * (1 + 1e-9)
    assert forward1 < forward16


def test_prestaged_reads_hide_behind_the_steps_host_work():
    hw = replace(M3, gpu=replace(M3.gpu, step_overhead_s=2e-3))
    w = decode_heavy(num_seqs=1, concurrency=1)
    runs = {}
    for at in ("prefetch", "prestage"):
        sc = scenario(w, hw=hw, model=MODEL, io=IOPolicy(read_at=at, readers=1))
        runs[at] = simulate(sc, [Placement("ssd")]).runs[0]
    assert runs["prestage"].stall_s < runs["prefetch"].stall_s
    assert runs["prestage"].throughput_tok_s > runs["prefetch"].throughput_tok_s


# --- closed loop --------------------------------------------------------------------------------


def test_a_closed_loop_sends_each_request_when_a_stream_frees_up():
    w = decode_heavy(num_seqs=3, concurrency=1)
    report = simulate(scenario(w, hw=M3, model=MODEL), [Placement("unified")])
    one = report.baseline
    # One stream: requests run one after another, so the makespan is three single runs.
    single = simulate(scenario(decode_heavy(num_seqs=1, concurrency=1), hw=M3, model=MODEL), [Placement("unified")])
    assert one["makespan_s"] == pytest.approx(3 * single.baseline["makespan_s"], rel=1e-9)
    two = simulate(scenario(decode_heavy(num_seqs=4, concurrency=2), hw=M3, model=MODEL), [Placement("unified")])
    assert two.baseline_tok_s > one["throughput_tok_s"]


def test_concurrency_below_one_is_refused():
    with pytest.raises(UserError, match="concurrency"):
        tiny_workload().closed_loop(0)
    with pytest.raises(UserError, match="concurrency"):
        replace(tiny_workload(), kind="closed")


# --- a cache that starts cold ---------------------------------------------------------------------


def test_lru_from_empty_warms_in_the_first_pass_over_the_working_set():
    d = stack_distances(np.array([1, 2, 3] * 4))
    # Windows of three accesses: the first pass misses, then every access hits at capacity 3.
    assert list(lru_warmup(d, 3, points=4).warmed) == [0.0, 1.0, 1.0, 1.0]
    # At capacity 2 a cycle of three always misses: no warm state to reach, so "warm" from the start.
    assert list(lru_warmup(d, 2, points=4).warmed) == [1.0] * 4


def test_a_uniform_cold_cache_warms_as_it_fills():
    w = uniform_warmup(1000, 100)
    assert w.at(0) == 0.0
    n = w.lookups[5]
    assert w.at(n) == pytest.approx(min(100, 1000 * -math.expm1(-n / 1000)) / 100)
    assert w.at(1e9) == pytest.approx(1.0)


def test_a_cold_hot_row_cache_hits_less_than_a_warm_one():
    w = tiny_workload(num_seqs=4, inp=(64, 64), out=(8, 8))
    kw = dict(hw="h800", model=MODEL)
    warm = simulate(scenario(w, **kw), [Placement("dram-copy", hbm_cache_bytes=2**30)]).runs[0]
    sc = scenario(w, cold_start=ColdStart(scenario(w, **kw).model.engram.rows_per_layer), **kw)
    cold = simulate(sc, [Placement("dram-copy", hbm_cache_bytes=2**30)]).runs[0]
    assert 0 < cold.hbm_hit_rate < warm.hbm_hit_rate


# --- row formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, row_bytes",
    [
        ("int2-g64", 80),  # 256 x 2 bits + 4 groups x (bf16 scale + bias)
        ("int2", 68),  # 256 x 2 bits + 2 groups x bf16 scale
        ("int4", 132),
        ("fp4", 136),
        ("q2_k", 84),
        ("q4_k", 144),
    ],
)
def test_row_dtypes_carry_their_scale_bytes(dtype, row_bytes):
    model = with_row_dtype(load_model("deepseek-v4.1-flash"), dtype)
    assert model.engram.row_bytes == row_bytes
    assert model.engram.table_bytes == pytest.approx(sum(model.engram.num_embeddings) * row_bytes)


# --- command line ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--hw", "apple-m3-ultra", "--tier", "dram-uva"], "unified-memory machine"),
        (["--readers", "0"], "'--readers': must be a whole number in [1, 4096], got '0'"),
        (["--read-at", "later"], "--read-at"),
        (["--concurrency", "0"], "'--concurrency': must be a whole number in [1, 1000000], got '0'"),
    ],
)
def test_bad_one_box_input_is_one_line_and_exit_2(args, message):
    r = run_cli("simulate", *args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


# --- public measurements (checks/onebox) ------------------------------------------------------------


def test_every_public_case_moves_in_the_measured_direction():
    from engramsim.onebox import run_checks

    report = run_checks()
    assert len(report.cases) >= 3
    for case in report.cases:
        assert case.direction_right, case.name
        assert all(arm.predicted_tok_s > 0 for arm in case.arms)
    ds4 = [c for c in report.cases if c.name.startswith("ds4")]
    assert ds4 and all(c.within_2x for c in ds4)


def test_the_m3_ultra_step_cost_in_the_preset_is_the_calibrations():
    from engramsim.onebox import fit_step_overhead_us

    assert M3.gpu.step_overhead_s * 1e6 == pytest.approx(fit_step_overhead_us()["step_overhead_us"], rel=0.01)


def test_mlx_step_cost_is_fitted_on_the_resident_arm_and_the_ssd_arms_check_it():
    from engramsim.onebox import CHECKS_DIR, fit_step_host_us, run_case

    path = CHECKS_DIR / "rapid-mlx-pr3338-resident-vs-ssd.toml"
    fitted = fit_step_host_us(path)
    preset = dict(load_engine("mlx").steps.fitted_step_host_s)[fitted["model"]]
    assert preset * 1e6 == pytest.approx(fitted["step_host_us"], rel=0.01)
    case = run_case(path)
    sync, prefetched, resident = case.arms
    assert resident.fit and not sync.fit and not prefetched.fit
    assert resident.predicted_tok_s == pytest.approx(resident.measured_tok_s, rel=0.01)
    assert sync.predicted_tok_s < prefetched.predicted_tok_s < resident.predicted_tok_s
    assert case.within_2x and case.direction_right


def test_a_case_to_fit_needs_exactly_one_fit_arm(tmp_path):
    from engramsim.onebox import fit_step_host_us

    path = tmp_path / "case.toml"
    path.write_text(
        'name = "x"\nsource = "s"\nhardware = "apple-m3-ultra"\nmodel = "deepseek-v4.1-flash"\n'
        'engine = "mlx"\nprompt_tokens = 8\noutput_tokens = 8\n'
        '[[arms]]\nname = "a"\ntier = "unified"\nmeasured_tok_s = 1\n'
    )
    with pytest.raises(UserError, match="exactly one arm with fit = true, found 0"):
        fit_step_host_us(path)


def test_acceptance_ordering_on_the_m3_ultra_in_json():
    import json

    base = [
        "simulate",
        "--hw",
        "apple-m3-ultra",
        "--model",
        "deepseek-v4.1-flash",
        "--concurrency",
        "1",
        "--workload",
        "fixed",
        "--engine",
        "ds4",
        "--json",
    ]

    def tok_s(*extra):
        r = run_cli(*base, *extra)
        assert r.returncode == 0, r.stderr
        d = json.loads(r.stdout)
        assert {"baseline_tok_s", "runs"} <= set(d) and {"throughput_tok_s", "tier"} <= set(d["runs"][0])
        return d["runs"][0]["throughput_tok_s"]

    # A one-request workload keeps this quick.
    path = _one_request_workload()
    base[base.index("fixed")] = str(path)
    sync = tok_s("--tier", "ssd", "--no-prefetch")
    pre = tok_s("--tier", "ssd", "--read-at", "prefetch")
    resident = tok_s("--tier", "unified")
    assert sync < pre <= resident
    assert tok_s("--tier", "ssd", "--read-at", "forward", "--readers", "16") > tok_s(
        "--tier", "ssd", "--read-at", "forward", "--readers", "1"
    )


def _one_request_workload():
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "one.toml"  # pytest's tmp_path is per test; this is shared
    path.write_text(
        'name = "one"\nkind = "offline"\nnum_seqs = 1\ninput_len_min = 64\ninput_len_max = 64\n'
        "output_len_min = 32\noutput_len_max = 32\n"
    )
    return path


# --- the harness on this machine -------------------------------------------------------------------


def test_mmap_with_madv_random_reads_one_page_per_fault(tmp_path):
    import mmap as _mmap

    from engramsim.measure.cpu import write_scratch_file
    from engramsim.measure.onebox import mmap_fault_bytes

    path = tmp_path / "table.bin"
    write_scratch_file(path, 32 * 2**20)
    got = mmap_fault_bytes(path, 32 * 2**20, faults=20, madvise_random=True)
    if got["bytes_per_fault"] == 0:
        pytest.skip("no per-process I/O accounting (/proc/self/io) here")
    assert got["bytes_per_fault"] == pytest.approx(_mmap.PAGESIZE)


# --- engine presets carry their read policy -----------------------------------------------------


def test_one_box_engines_read_as_their_sources_say():
    ds4, mlx, llama = (load_engine(n).io for n in ("ds4", "mlx", "llama-cpp"))
    assert (ds4.io, ds4.read_at, ds4.parallel_min_rows) == ("odirect", "forward", 256)
    assert (mlx.io, mlx.read_at, mlx.readers) == ("mmap", "prefetch", 1)
    assert (llama.io, llama.read_at) == ("mmap", "forward")
    assert not load_engine("ds4").prefetch and load_engine("mlx").prefetch
    assert load_engine("vllm").io == IOPolicy()  # GPU servers: as many reads in flight as the SSD takes


@pytest.mark.parametrize(
    "table, message",
    [
        ({"readerz": 2}, "unknown key 'readerz'"),
        ({"readers": -1}, "'readers' must be a whole number in \\[0, 4096\\]"),
        ({"read_at": "later"}, "unknown read-at 'later'"),
        ({"io": "aio"}, "unknown io 'aio'"),
    ],
)
def test_a_bad_io_table_is_one_clear_error(table, message):
    from engramsim.engine import engine_from_dict

    data = {
        "name": "x",
        "scheduling": "whole-prompt",
        "max_num_seqs": 1,
        "max_num_batched_tokens": 64,
        "block_size_tokens": 16,
        "memory_utilization": 1.0,
        "act_hidden_copies": 1,
        "act_mlp_copies": 1,
        "io": table,
    }
    with pytest.raises(UserError, match=message):
        engine_from_dict(data, "x.toml")


def test_each_read_takes_its_cpu_time_from_the_hosts_cores():
    w = decode_heavy(num_seqs=1, concurrency=1)
    moved = {}
    for cpu_us in (2.0, 12.0):
        hw = replace(M3, os=replace(M3.os, pread_cpu_s=cpu_us * 1e-6))
        run = simulate(scenario(w, hw=hw, model=MODEL, io=IOPolicy(readers=4)), [Placement("ssd")]).runs[0]
        moved[cpu_us] = (run.resources["cpu"]["moved"], run.fetched_rows)
    (a, rows), (b, rows_b) = moved[2.0], moved[12.0]
    assert rows == pytest.approx(rows_b)
    assert b - a == pytest.approx(rows * 10e-6, rel=1e-6)  # thread-seconds: 10 us more per read


def test_speculative_decoding_reads_rows_for_every_verified_position():
    """Issue #10's speculative decoding on a one-box engine: each decode step verifies K+1
    positions, so it reads their rows; at acceptance 0 the steps are as many as without."""
    w = tiny_workload(num_seqs=1, inp=(1, 1), out=(24, 24), max_seqs=1).closed_loop(1)
    runs = {}
    for k in (0, 3):
        spec_w = replace(w, engine=replace(w.engine, spec_tokens=k, accept_rate=0.0))
        runs[k] = simulate(scenario(spec_w, hw=M3, model=MODEL, io=IOPolicy(readers=4)), [Placement("ssd")]).runs[0]
    assert runs[3].steps == runs[0].steps == 24
    # One prefill token plus 23 decode steps: 24 tokens' rows without, 1 + 23 x 4 with K = 3.
    assert runs[3].fetched_rows / runs[0].fetched_rows == pytest.approx((1 + 23 * 4) / 24, rel=0.01)


def test_the_harness_predicts_from_figures_measured_apart(tmp_path):
    from engramsim.onebox import harness

    report = harness(tmp_path, file_bytes=64 * 2**20)
    serial, eight, default, random = report.rows
    assert serial.measured > 0 and eight.measured > 0
    assert eight.predicted < serial.predicted  # more readers, fewer waves
    page, ahead = report.machine["page_bytes"], report.machine["read_ahead_bytes"]
    window = ahead if ahead else 32 * page  # the device's read-ahead, else the part's
    assert random.predicted == pytest.approx(fresh_bytes_per_fault(page, 64 * 2**20, 200) / 1024)
    assert default.predicted == pytest.approx(fresh_bytes_per_fault(window, 64 * 2**20, 200) / 1024)


def test_a_fault_reads_its_window_less_what_earlier_windows_already_read():
    assert fresh_bytes_per_fault(4096, 2**30, 1) == pytest.approx(4096)
    assert fresh_bytes_per_fault(2**30, 2**30, 10) == pytest.approx(2**30 / 10)  # the whole file, once
    # This VM's 8 MiB read-ahead, 200 faults over 1 GiB: ~4.25 MB each (measured ~3.8 MB).
    assert fresh_bytes_per_fault(8 * 2**20, 2**30, 200) == pytest.approx(4.25e6, rel=0.01)


def test_the_machines_read_ahead_sets_the_read_around_window():
    from engramsim.onebox import machine_os

    m = {"page_bytes": 4096, "pread_cpu_s": 1e-6}
    assert machine_os(m | {"read_ahead_bytes": 8192 * 1024}).mmap_readahead_pages == 2048
    assert machine_os(m | {"read_ahead_bytes": 0}).mmap_readahead_pages == 32  # unknown: the part's


def test_read_ahead_comes_from_the_backing_devices_bdi(tmp_path):
    import os

    from engramsim.measure.system import read_ahead_bytes

    dev = os.stat(tmp_path).st_dev
    bdi = tmp_path / "bdi" / f"{os.major(dev)}:{os.minor(dev)}"
    bdi.mkdir(parents=True)
    (bdi / "read_ahead_kb").write_text("8192\n")
    assert read_ahead_bytes(tmp_path, bdi_root=tmp_path / "bdi") == 8192 * 1024
    assert read_ahead_bytes(tmp_path, bdi_root=tmp_path / "none") == 0
    assert read_ahead_bytes(tmp_path / "missing") == 0


def test_calibration_takes_the_profiled_read_ahead_as_the_read_around():
    from engramsim.calibrate import calibrate
    from engramsim.profile_io import Profile

    profile = Profile.new(
        host={
            "hostname": "box",
            "cpu_cores": 2,
            "scratch_disk": {"device": "/dev/vda", "read_ahead_bytes": 8192 * 1024},
        },
        gpu=None,
    )
    cal = calibrate(profile, base="dgx-spark")
    assert cal.hardware().os.mmap_readahead_pages == 2048
    assert "read_ahead_kb 8192" in cal.provenance["os.mmap_readahead_pages"]


def test_onebox_fit_prints_both_calibrations():
    r = run_cli("onebox", "--fit")
    assert r.returncode == 0, r.stderr
    assert "step_overhead_us = 9073" in r.stdout
    assert "deepseek-v4.1-flash-reap-2bit = 109801  (engines/mlx.toml [fitted_step_host_us]" in r.stdout
