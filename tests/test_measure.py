"""Measurement logic on CPU: statistics, bounded repeats, sweeps under a memory budget, index
streams, records, system probes, the CPU benchmarks end to end on tiny sizes, and the CUDA
benchmarks' device-agnostic parts driven with CPU tensors."""

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim.errors import UserError
from engramsim.measure import cpu, cuda, import_torch
from engramsim.measure.plan import (
    Context,
    KiB,
    MiB,
    fit_sizes,
    gather_points,
    make_config,
    memory_budget,
    record,
    scatter,
    zipf_indices,
)
from engramsim.measure.run import BENCHMARKS, run_profile, select
from engramsim.measure.system import cpu_model, disk_info, meminfo, numa_nodes
from engramsim.measure.timing import PerfTimer, Stats, measure, percentile, summarize

torch = pytest.importorskip("torch")


def tiny_config(**over):
    cfg = replace(
        make_config(quick=True, cores=2),
        point_budget_s=0.05,
        repeats=3,
        table_bytes=(64 * KiB, 256 * KiB),
        row_bytes=(128, 256),
        rows_per_call=(1, 64, 512),
        memcpy_bytes=1 * MiB,
        ssd_file_bytes=1 * MiB,
        ssd_row_bytes=(256,),
        ssd_queue_depths=(1, 2),
        ssd_reads_per_call=16,
        hash_tokens=(8,),
        matmul_shapes=(("fp32", 4, 32, 64),),
        memory_margin_bytes=0,
    )
    return replace(cfg, **over)


# --- statistics and bounded repeats -----------------------------------------------------------


def test_summarize_uses_interpolated_percentiles():
    s = summarize([float(v) for v in range(10, 0, -1)])  # unsorted 1..10
    assert (s.median_s, s.n) == (5.5, 10)
    assert s.p10_s == pytest.approx(1.9) and s.p90_s == pytest.approx(9.1)
    assert percentile([3.0], 90) == 3.0


class FakeClock:
    def __init__(self, step):
        self.t, self.step = 0.0, step

    def __call__(self):
        self.t += self.step
        return self.t


def test_measure_warms_up_then_repeats_and_runs_setup_before_each_call():
    calls, setups = [], []
    clock = FakeClock(0.001)
    stats = measure(
        lambda: calls.append(1),
        PerfTimer(clock),
        warmup=2,
        repeats=4,
        budget_s=100,
        setup=lambda: setups.append(1),
        clock=clock,
    )
    assert stats.n == 4 and len(calls) == 6 and len(setups) == 6
    assert stats.median_s == pytest.approx(0.001)


def test_measure_stops_at_its_time_budget_but_times_at_least_once():
    clock = FakeClock(1.0)  # every clock read advances one second
    calls = []
    stats = measure(lambda: calls.append(1), PerfTimer(clock), warmup=3, repeats=50, budget_s=2.5, clock=clock)
    assert stats.n == 1 and len(calls) < 5


def test_perf_timer_waits_for_sync():
    order = []
    PerfTimer(sync=lambda: order.append("sync"))(lambda: order.append("fn"))
    assert order == ["fn", "sync"]


# --- planning ---------------------------------------------------------------------------------


def test_memory_budget_and_fit_sizes_skip_what_does_not_fit_with_a_reason():
    budget = memory_budget(free_bytes=10 * MiB, margin_bytes=2 * MiB, fraction=0.5)
    assert budget == 4 * MiB
    assert memory_budget(1 * MiB, 2 * MiB, 0.5) == 0
    kept, skipped = fit_sizes([1 * MiB, 4 * MiB, 8 * MiB], budget)
    assert kept == [1 * MiB, 4 * MiB]
    assert [s for s, _ in skipped] == [8 * MiB] and "budget" in skipped[0][1]


def test_gather_points_cover_the_grid_zipf_and_rows_sweep():
    cfg = tiny_config()
    points = list(gather_points(cfg, [64 * KiB, 256 * KiB], threads=(1, 2)))
    grid = [p for p in points if p["rows"] == 65536 and p["dist"] == "uniform"]
    assert len(grid) == 2 * 2 * 2  # sizes x row bytes x threads
    assert sum(p["dist"] == "zipf" for p in points) == 2
    sweep = sorted(p["rows"] for p in points if p["rows"] != 65536)
    assert sweep == [1, 64, 512] and all(p["table_bytes"] == 256 * KiB for p in points if p["rows"] != 65536)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 5000))
def test_scatter_is_a_bijection(n):
    out = scatter(np.arange(n, dtype=np.int64), n)
    assert sorted(out.tolist()) == list(range(n))


def test_zipf_indices_stay_in_range_and_are_skewed():
    rng = np.random.default_rng(0)
    n = 10_000
    idx = zipf_indices(n, 50_000, 1.0, rng)
    assert idx.min() >= 0 and idx.max() < n
    counts = np.bincount(idx, minlength=n)
    assert counts.max() > 50 * (50_000 / n)  # the hottest row far above the uniform mean
    uniform = np.bincount(rng.integers(0, n, 50_000), minlength=n)
    assert (counts > 0).sum() < (uniform > 0).sum()  # fewer distinct rows than uniform draws


def test_record_derives_rates_from_the_median_and_keeps_raw_times():
    r = record("x", {"a": 1}, Stats(0.5, 0.4, 0.6, 3), bytes=1e9, rows=1000, tokens=100, flops=2e9, ops=10)
    assert (r["median_s"], r["p10_s"], r["p90_s"], r["n"]) == (0.5, 0.4, 0.6, 3)
    assert r["GBps"] == 2.0 and r["rows_per_s"] == 2000 and r["us_per_row"] == 500
    assert r["ns_per_token"] == pytest.approx(5e6) and r["GFLOPs"] == 4.0 and r["iops"] == 20


# --- system probes ----------------------------------------------------------------------------


def test_meminfo_and_cpu_model_parse_proc_text():
    assert meminfo("MemTotal:  2048 kB\nMemAvailable:   1024 kB\n") == {
        "total_bytes": 2048 * 1024,
        "available_bytes": 1024 * 1024,
    }
    assert cpu_model("processor\t: 0\nmodel name\t: Test CPU 9000\n") == "Test CPU 9000"


def test_numa_nodes_find_cpu_less_nodes(tmp_path):
    for node, cpus, kb in ((0, "0-3", 1000), (1, "", 4000), (2, "", 0)):
        d = tmp_path / f"node{node}"
        d.mkdir()
        (d / "cpulist").write_text(cpus + "\n")
        (d / "meminfo").write_text(f"Node {node} MemTotal:   {kb} kB\n")
    nodes = numa_nodes(tmp_path)
    assert [n["node"] for n in nodes] == [0, 1, 2]
    assert nodes[1]["total_bytes"] == 4000 * 1024
    assert cpu.cpu_less_nodes(nodes) == [1]  # a node without CPUs and with memory: CXL


def test_disk_info_reports_the_mount_and_free_space(tmp_path):
    info = disk_info(tmp_path)
    assert info["free_bytes"] > 0 and info["fstype"] != "" and info["path"] == str(tmp_path)


def test_ssd_file_planning_and_page_spans():
    assert cpu.plan_file_bytes(64 * MiB, free_bytes=10 * 2**30) == 64 * MiB
    assert cpu.plan_file_bytes(64 * MiB, free_bytes=2**30 + 20 * MiB) == 20 * MiB
    assert cpu.plan_file_bytes(64 * MiB, free_bytes=2**30) is None
    assert cpu.page_span(4100, 100) == (4096, 4096)
    assert cpu.page_span(4000, 200) == (0, 8192)


def test_missing_torch_is_one_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(UserError, match="needs torch"):
        import_torch()


def test_unknown_benchmark_is_a_user_error():
    with pytest.raises(UserError, match="unknown benchmark 'nope'"):
        select(["nope"])
    assert [b.name for b in select(["memcpy", "dram_gather"])] == ["dram_gather", "memcpy"]


# --- CPU benchmarks end to end on tiny sizes --------------------------------------------------


def test_cpu_subset_end_to_end(tmp_path):
    seen = []
    profile = run_profile(
        quick=True, scratch=tmp_path, config=tiny_config(), progress=lambda name, rec: seen.append((name, rec))
    )
    names = {m["name"] for m in profile.measurements}
    assert {"dram_gather", "memcpy", "cpu_matmul", "overlap", "ssd_read"} <= names
    assert not profile.partial and not list(tmp_path.iterdir())  # the scratch file is gone
    gathers = profile.find("dram_gather", dist="uniform", rows=65536)
    assert {(g["params"]["table_bytes"], g["params"]["row_bytes"], g["params"]["threads"]) for g in gathers} == {
        (t, r, th) for t in (64 * KiB, 256 * KiB) for r in (128, 256) for th in (1, 2)
    }
    for m in profile.measurements:
        assert m["p10_s"] <= m["median_s"] <= m["p90_s"] and m["n"] >= 1
    ssd = profile.find("ssd_read")
    assert {(r["params"]["method"], r["params"]["cache"]) for r in ssd} == {
        (m, c) for m in ("pread", "mmap") for c in ("cold", "warm")
    }
    assert all(r["iops"] > 0 and r["latency_us"] > 0 for r in ssd)
    if torch.cuda.is_available():
        return
    gpu_skips = {s["name"] for s in profile.skipped if "no CUDA" in s["reason"]}
    assert gpu_skips == {b.name for b in BENCHMARKS.values() if b.needs_gpu}
    assert {name for name, rec in seen if rec is None} == set(BENCHMARKS)


def test_sizes_beyond_the_memory_budget_are_skipped_with_a_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(cpu, "free_memory_bytes", lambda: 1 * MiB)
    profile = run_profile(["dram_gather"], scratch=tmp_path, config=tiny_config(memory_fraction=0.2))
    kept = {m["params"]["table_bytes"] for m in profile.measurements}
    assert kept == {64 * KiB}
    assert [s["params"]["table_bytes"] for s in profile.skipped] == [256 * KiB]


def test_interrupt_keeps_what_was_measured_and_removes_the_scratch_file(tmp_path):
    count = {"n": 0}

    def progress(name, rec):
        if rec is not None and name == "ssd_read":
            count["n"] += 1
            if count["n"] == 2:
                raise KeyboardInterrupt

    profile = run_profile(["memcpy", "ssd_read", "cxl"], scratch=tmp_path, config=tiny_config(), progress=progress)
    assert profile.partial
    assert len(profile.find("ssd_read")) == 2 and profile.find("memcpy")
    assert not any(r["name"] == "cxl" for r in profile.measurements + profile.skipped)  # never started
    assert not list(tmp_path.iterdir())


def test_run_gather_records_every_point_with_rates():
    ctx = Context(tiny_config(), torch, ".")
    table = torch.ones(64 * KiB, dtype=torch.uint8)
    points = list(gather_points(ctx.config, [64 * KiB], threads=(1, 2)))
    recs = list(cpu.run_gather(ctx, "hbm_gather", table, points))
    assert [r["params"] for r in recs] == points
    assert all(r["rows_per_s"] > 0 and r["GBps"] > 0 for r in recs)


# --- the CUDA benchmarks' logic, driven with CPU tensors --------------------------------------


def test_pipeline_points_gather_the_right_rows_then_copy_them():
    ctx = Context(tiny_config(), torch, ".")
    rows2d = torch.arange(1000 * 8, dtype=torch.int64).view(1000, 8)
    staging, dest = torch.zeros(64, 8, dtype=torch.int64), torch.zeros(64, 8, dtype=torch.int64)
    idx = torch.from_numpy(np.random.default_rng(0).integers(0, 1000, 64))
    with ThreadPoolExecutor(2) as pool:
        recs = list(cuda.pipeline_points(ctx, rows2d, staging, dest, idx, 2, pool, PerfTimer(), lambda: None))
    assert [r["params"]["stage"] for r in recs] == ["gather", "copy", "end_to_end"]
    assert torch.equal(staging, rows2d[idx]) and torch.equal(dest, staging)
    assert all(r["rows"] == 64 and r["bytes"] == 64 * 8 for r in recs)


@pytest.mark.parametrize("direction", ["h2d", "d2h"])
def test_link_copies_move_each_prefix(direction):
    ctx = Context(tiny_config(), torch, ".")
    host = torch.arange(4096, dtype=torch.uint8) if direction == "h2d" else torch.zeros(4096, dtype=torch.uint8)
    dev = torch.zeros(4096, dtype=torch.uint8) if direction == "h2d" else torch.arange(4096, dtype=torch.uint8)
    recs = list(cuda.link_copies(ctx, direction, "pinned", host, dev, [1024, 4096], PerfTimer()))
    assert [(r["name"], r["params"]["bytes"]) for r in recs] == [(direction, 1024), (direction, 4096)]
    assert torch.equal(host, dev)


# --- on a GPU ---------------------------------------------------------------------------------


@pytest.mark.gpu
def test_uva_view_reads_host_memory_in_place():
    host = (torch.arange(1 << 20) % 251).to(torch.uint8)
    view = cuda.mapped_view(torch, host)
    try:
        idx = torch.randint(0, host.numel(), (4096,), device="cuda")
        assert view.device.type == "cuda"
        assert torch.equal(view[idx].cpu(), host[idx.cpu()])
    finally:
        torch.cuda.synchronize()
        del view
        torch.cuda.cudart().cudaHostUnregister(host.data_ptr())


@pytest.mark.gpu
def test_gpu_benchmarks_on_tiny_sizes(tmp_path):
    cfg = tiny_config(link_bytes=(4 * KiB, 64 * KiB))
    profile = run_profile(["hbm_gather", "h2d", "d2h", "uva_gather", "copy_pipeline"], scratch=tmp_path, config=cfg)
    names = {m["name"] for m in profile.measurements}
    assert {"hbm_gather", "h2d", "d2h", "h2d_d2h", "uva_gather", "copy_pipeline"} <= names
    assert profile.gpu is not None and profile.gpu["memory_bytes"] > 0
