import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim import costs
from engramsim.costs import batch_shape
from engramsim.hardware import load_hardware
from engramsim.rows.uniform import UniformRows
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.scheduler import Seq
from engramsim.sim.tiers import TIERS, Placement, default_tiers
from tests.simkit import preset_hardware, scenario, tiny_workload, with_gpu, with_host, with_link

ONE_PREFILL = tiny_workload(num_seqs=1, inp=(300, 300), out=(1, 1), max_seqs=1)


def slow_link_hw():
    # 1 MB/s: the zero-copy fetch of 300 tokens x 16 rows x 160 B takes ~0.8 s, far beyond
    # the window of two layers.
    return with_link(load_hardware("h800"), h2d_Bps=1e6)


def expected_uva_fetch_s(sc: Scenario, tokens: int) -> float:
    hw, spec = sc.hw, sc.model.engram
    rows = UniformRows(spec).unique_rows(tokens, spec.layer_ids[0])
    rate = min(
        costs.zero_copy_cap_Bps(hw.link, spec.row_bytes),
        hw.link.h2d_Bps / costs.zero_copy_wire_factor(hw.link, spec.row_bytes),
        hw.host.dram_bw_Bps * hw.host.dram_efficiency / costs.lines_per_row_bytes(spec.row_bytes),
    )
    return hw.gpu.kernel_launch_s + hw.link.read_round_trip_s + rows * spec.row_bytes / rate


def window_s(sc: Scenario, tokens: int) -> float:
    """Compute of the layers before the Engram layer, for one prefill of `tokens`."""
    shape = batch_shape([Seq(0, 0.0, tokens, 1)], prefill=True)
    comp = costs.step_compute(sc.hw.gpu, sc.model.backbone, shape, 1)
    return comp.layers_s(sc.model.backbone, 0, sc.model.engram.layer_ids[0])


def test_stall_is_fetch_minus_window_when_fetch_is_longer():
    sc = scenario(ONE_PREFILL, hw=slow_link_hw())
    run = simulate(sc, [Placement("dram-uva")]).runs[0]
    expected = expected_uva_fetch_s(sc, 300) - window_s(sc, 300)
    assert expected > 0.5
    assert run.stall_s == pytest.approx(expected, rel=1e-9)


def test_synchronous_fetch_stalls_for_the_whole_fetch():
    sc = scenario(ONE_PREFILL, hw=slow_link_hw(), prefetch=False)
    run = simulate(sc, [Placement("dram-uva")]).runs[0]
    assert run.stall_s == pytest.approx(expected_uva_fetch_s(sc, 300), rel=1e-9)


def test_one_request_timeline_matches_cost_functions():
    # Baseline: a single prefill step is hash-free: layers + LM head + step overhead.
    sc = scenario(ONE_PREFILL)
    report = simulate(sc, [])
    bb = sc.model.backbone
    comp = costs.step_compute(sc.hw.gpu, bb, batch_shape([Seq(0, 0.0, 300, 1)], True), 1)
    step = comp.layers_s(bb, 0, bb.n_layers) + comp.head_s + sc.hw.gpu.step_overhead_s
    assert report.baseline["makespan_s"] == pytest.approx(step, rel=1e-12)
    assert report.baseline["ttft_p50_s"] == pytest.approx(step, rel=1e-12)


def test_hbm_tier_does_not_fit_a_200GB_table_on_one_80GB_gpu():
    run = simulate(scenario(), [Placement("hbm")]).runs[0]
    assert not run.fits and run.throughput_tok_s is None
    assert "HBM" in run.problems[0]


def test_hbm_tier_fits_small_table_and_costs_only_in_line_gather():
    run = simulate(scenario(model="engram-27b", hw="h200"), [Placement("hbm")]).runs[0]
    assert run.fits and run.stall_s == 0
    assert run.resources == {}


def test_offloading_frees_hbm_for_kv_cache():
    sc = scenario(model="engram-27b", hw="h200")
    hbm, dram = simulate(sc, [Placement("hbm"), Placement("dram-copy")]).runs
    assert dram.kv_tokens_per_rank > hbm.kv_tokens_per_rank


def test_eight_gpus_contend_for_one_host():
    # With a slow host DRAM, 8 GPUs stall more than 1 GPU: they share it.
    from tests.simkit import with_host

    hw = with_host(load_hardware("h800"), dram_bw_Bps=2e8)
    one = simulate(scenario(tiny_workload(num_seqs=8), hw=hw, gpus=1), [Placement("dram-uva")]).runs[0]
    eight = simulate(scenario(tiny_workload(num_seqs=64), hw=hw, gpus=8), [Placement("dram-uva")]).runs[0]
    assert eight.stall_s / 8 > one.stall_s * 2


def test_tensor_parallel_splits_the_fetch_across_links():
    hw = slow_link_hw()
    tp1 = simulate(scenario(hw=hw, gpus=1, tp=1), [Placement("dram-uva")]).runs[0]
    tp2 = simulate(scenario(hw=hw, gpus=2, tp=2), [Placement("dram-uva")]).runs[0]
    assert tp2.stall_s < tp1.stall_s


def test_every_tier_runs_and_reports_bytes_where_they_flow():
    sc = scenario()
    runs = {r.tier: r for r in simulate(sc, [Placement(t) for t in default_tiers(sc.hw)]).runs}  # h800: no [rdma]
    assert "link" in runs["dram-copy"].resources and "cpu" in runs["dram-copy"].resources
    assert "cxl" in runs["cxl-uva"].resources and "dram" not in runs["cxl-uva"].resources
    # What each resource carried follows from the rows fetched (one GPU, no cache):
    row_bytes, ssd = sc.model.engram.row_bytes, sc.hw.ssd
    rows = runs["cxl-uva"].fetched_rows
    assert rows > 0
    assert runs["cxl-uva"].resources["cxl"]["moved"] == pytest.approx(
        rows * row_bytes * costs.lines_per_row_bytes(row_bytes) / 1e9
    )  # whole cache lines, GB
    rows = runs["ssd"].fetched_rows
    assert runs["ssd"].resources["ssd_iops"]["moved"] == pytest.approx(rows / 1e6)  # one page read per row, Mops
    assert runs["ssd"].resources["ssd_bw"]["moved"] == pytest.approx(rows * ssd.page_bytes / 1e9)
    assert runs["ssd"].resources["link"]["moved"] == pytest.approx(rows * row_bytes / 1e9)


def test_ssd_page_cache_hits_reduce_ssd_reads():
    cold, warm = simulate(scenario(), [Placement("ssd"), Placement("ssd", ssd_dram_hit_rate=0.9)]).runs
    assert warm.resources["ssd_iops"]["moved"] == pytest.approx(cold.resources["ssd_iops"]["moved"] * 0.1)


def test_hbm_cache_hits_reduce_host_traffic():
    none, cached = simulate(
        scenario(), [Placement("dram-copy"), Placement("dram-copy", hbm_cache_bytes=40 * 2**30)]
    ).runs
    assert cached.hbm_hit_rate > 0.2
    assert cached.resources["link"]["moved"] < none.resources["link"]["moved"]


def test_poisson_workload_runs_with_arrivals():
    w = tiny_workload(num_seqs=10, kind="poisson", rate=5.0)
    report = simulate(scenario(w), [Placement("dram-copy")])
    assert report.runs[0].makespan_s > 1.0  # the last of 10 arrivals at 5/s comes after ~2 s


def test_same_seed_same_result_and_other_seed_differs():
    a = simulate(scenario(seed=3), [Placement("dram-uva")]).to_dict()
    b = simulate(scenario(seed=3), [Placement("dram-uva")]).to_dict()
    c = simulate(scenario(seed=4), [Placement("dram-uva")]).to_dict()
    assert a == b and a != c


# Invariants over small random servers. Each example simulates three short requests, so the CI
# profile's 1,000 examples per invariant stay within seconds each.
link_GBps = st.floats(0.05, 60)
hw_seeds = st.integers(0, 5)
H800 = preset_hardware("h800")
TINY = tiny_workload(num_seqs=3, inp=(16, 48), out=(2, 6))


@settings(deadline=None)
@given(link_GBps, st.floats(1.5, 10), hw_seeds, st.sampled_from(["dram-uva", "dram-copy", "cxl-uva"]))
def test_more_link_bandwidth_never_lowers_throughput(gbps, factor, seed, tier):
    slow = simulate(scenario(TINY, hw=with_link(H800, h2d_Bps=gbps * 1e9), seed=seed), [Placement(tier)]).runs[0]
    fast = simulate(scenario(TINY, hw=with_link(H800, h2d_Bps=gbps * factor * 1e9), seed=seed), [Placement(tier)]).runs[
        0
    ]
    assert fast.throughput_tok_s >= slow.throughput_tok_s * (1 - 1e-9)


@settings(deadline=None)
@given(link_GBps, hw_seeds, st.sampled_from(["dram-uva", "dram-copy", "cxl-copy", "ssd"]))
def test_prefetch_is_never_worse_than_synchronous(gbps, seed, tier):
    hw = with_link(H800, h2d_Bps=gbps * 1e9)
    pre = simulate(scenario(TINY, hw=hw, seed=seed), [Placement(tier)]).runs[0]
    sync = simulate(scenario(TINY, hw=hw, seed=seed, prefetch=False), [Placement(tier)]).runs[0]
    assert pre.throughput_tok_s >= sync.throughput_tok_s * (1 - 1e-9)
    assert pre.stall_s <= sync.stall_s + 1e-12


@settings(deadline=None)
# The rdma tier needs an [rdma] table, which h800 lacks (tests/test_topology.py covers it).
@given(link_GBps, hw_seeds, st.sampled_from([t for t in TIERS[1:] if t != "rdma"]), st.floats(0, 2e4))
def test_overhead_against_baseline_is_never_negative(gbps, seed, tier, hash_us):
    hw = with_host(with_link(H800, h2d_Bps=gbps * 1e9), hash_call_s=hash_us * 1e-6)
    run = simulate(scenario(TINY, hw=hw, seed=seed), [Placement(tier)]).runs[0]
    assert run.overhead_pct >= -1e-9


@settings(deadline=None)
@given(hw_seeds, st.floats(0, 20))
def test_bytes_are_conserved_along_the_copy_path(seed, cache_gib):
    sc = scenario(TINY, seed=seed)
    run = simulate(sc, [Placement("dram-copy", hbm_cache_bytes=cache_gib * 2**30)]).runs[0]
    row_bytes = sc.model.engram.row_bytes
    # Every fetched row crosses the link exactly once in the DMA copy.
    assert run.resources["link"]["moved"] * 1e9 == pytest.approx(run.fetched_rows * row_bytes, rel=1e-9)


def cpu_device_hw(threads=2, cores=2, gather_threads=1):
    """A CPU standing in for the GPU: compute is thread-seconds on the host's cores."""
    from dataclasses import replace

    hw = with_gpu(load_hardware("h800"), compute_on_host=True, compute_threads=threads)
    return replace(hw, host=replace(hw.host, cpu_cores=cores, gather_threads_per_gpu=gather_threads))


def test_cpu_device_compute_is_unchanged_without_contention():
    gpu_report = simulate(scenario(ONE_PREFILL), [])
    cpu_report = simulate(scenario(ONE_PREFILL, hw=cpu_device_hw()), [])
    assert cpu_report.baseline["makespan_s"] == pytest.approx(gpu_report.baseline["makespan_s"], rel=1e-9)


def test_prefetch_thread_slows_host_compute_on_two_cores():
    # With 2 cores, 2 compute threads and 1 gather thread, the overlap costs compute time that a
    # GPU would not pay; with 3 cores it does not.
    from tests.simkit import with_host

    slow_gather = dict(gather_mlp=0.01)
    tight = simulate(scenario(hw=with_host(cpu_device_hw(cores=2), **slow_gather)), [Placement("dram-copy")]).runs[0]
    roomy = simulate(scenario(hw=with_host(cpu_device_hw(cores=3), **slow_gather)), [Placement("dram-copy")]).runs[0]
    assert tight.throughput_tok_s < roomy.throughput_tok_s


class HalfRows:
    """A row model whose steps touch half the uniform expectation's rows, and caches that hit 60%."""

    source = "test: half of uniform"

    def __init__(self, spec):
        self.uniform = UniformRows(spec)

    def unique_rows(self, tokens, layer_id):
        return self.uniform.unique_rows(tokens, layer_id) / 2

    def hit_rate(self, cache_rows, layer_id):
        return 0.6


def test_fetch_volume_moves_with_the_row_model():
    sc = scenario()
    uniform = simulate(sc, [Placement("dram-copy")]).runs[0]
    half_report = simulate(scenario(row_model=HalfRows(sc.model.engram)), [Placement("dram-copy")])
    half = half_report.runs[0]
    assert half_report.rows_source == "test: half of uniform"
    assert half.fetched_rows == pytest.approx(uniform.fetched_rows / 2)
    assert half.resources["link"]["moved"] == pytest.approx(uniform.resources["link"]["moved"] / 2)
    cached = simulate(
        scenario(row_model=HalfRows(sc.model.engram)), [Placement("dram-copy", hbm_cache_bytes=2**30)]
    ).runs[0]
    assert cached.hbm_hit_rate == pytest.approx(0.6)
    assert cached.fetched_rows == pytest.approx(half.fetched_rows * 0.4)


def test_prefill_lookahead_overlaps_the_next_prompts_fetch():
    # Two prompts that each fill the token budget: two prefill steps. With lookahead, the second
    # step's rows are fetched while the first computes, so the second stalls less.
    from dataclasses import replace

    w = tiny_workload(num_seqs=2, inp=(300, 300), out=(1, 1), max_seqs=2)
    w = replace(w, engine=replace(w.engine, max_num_batched_tokens=300))
    hw = slow_link_hw()
    ahead = simulate(scenario(w, hw=hw), [Placement("dram-uva")]).runs[0]
    no_ahead_w = replace(w, engine=replace(w.engine, prefill_lookahead=False))
    plain = simulate(scenario(no_ahead_w, hw=hw), [Placement("dram-uva")]).runs[0]
    one = expected_uva_fetch_s(scenario(w, hw=hw), 300) - window_s(scenario(w, hw=hw), 300)
    assert plain.stall_s == pytest.approx(2 * one, rel=1e-6)
    assert ahead.stall_s < plain.stall_s
    assert ahead.fetched_rows == pytest.approx(plain.fetched_rows)


def test_allreduce_follows_the_ring_formula():
    gpu = load_hardware("h200").gpu
    assert costs.allreduce_s(gpu, 1e6, 1) == 0.0
    assert costs.allreduce_s(gpu, 1e6, 4) == pytest.approx(gpu.allreduce_latency_s + 1.5 * 1e6 / gpu.nvlink_Bps)


def test_tensor_parallel_without_nvlink_is_a_clear_error():
    from engramsim.errors import UserError

    hw = with_gpu(load_hardware("h800"), nvlink_Bps=0.0)
    with pytest.raises(UserError, match="nvlink_GBps"):
        simulate(scenario(hw=hw, gpus=2, tp=2), [Placement("dram-copy")])


def test_dram_cache_in_front_of_ssd_takes_the_rows_after_the_hbm_cache():
    sc = scenario(row_model=HalfRows(scenario().model.engram))  # hit rate 0.6 at any size
    plain, cached = simulate(sc, [Placement("ssd"), Placement("ssd", dram_cache_bytes=2**30)]).runs
    # HalfRows hits 60% for any cache: with no HBM cache, the DRAM cache serves 60% of reads.
    assert cached.resources["ssd_iops"]["moved"] == pytest.approx(plain.resources["ssd_iops"]["moved"] * 0.4)
    both = simulate(sc, [Placement("ssd", hbm_cache_bytes=2**30, dram_cache_bytes=2**30)]).runs[0]
    # Both caches together hit as one cache (60%): the DRAM cache adds nothing after the HBM one.
    assert both.resources["ssd_iops"]["moved"] == pytest.approx(both.fetched_rows * 1e-6, rel=1e-6)


def test_dram_cache_is_checked_against_host_dram():
    run = simulate(scenario(), [Placement("ssd", dram_cache_bytes=10 * 2**40)]).runs[0]
    assert not run.fits and run.problems[0].startswith("DRAM:") and "caches" in run.problems[0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tier="ssd", dram_cache_bytes=1.0, ssd_dram_hit_rate=0.5), "not both"),
        (dict(tier="dram-copy", dram_cache_bytes=1.0), "only fronts the ssd tier"),
        (dict(tier="ssd", ssd_dram_hit_rate=2.0), "within"),
    ],
)
def test_bad_cache_placements_are_user_errors(kwargs, message):
    from engramsim.errors import UserError

    with pytest.raises(UserError, match=message):
        Placement(**kwargs)


@pytest.mark.parametrize("tier", ["dram-copy", "dram-uva", "ssd"])
def test_sparse_arrivals_at_large_clocks_finish(tier):
    # 20 requests at 1e-3 req/s: the clock reaches ~2e4 s, where a fetch's last bytes once
    # rounded to nothing and the flow network rescheduled itself forever.
    workload = tiny_workload(num_seqs=20, kind="poisson", rate=1e-3)
    sc = scenario(workload)
    report = simulate(sc, [Placement(tier)])
    last_arrival = float(workload.requests(sc.seed).arrival_s[-1])
    assert last_arrival > 1e4
    assert report.runs[0].makespan_s > last_arrival
    assert 0 <= report.runs[0].overhead_pct < 5


def test_a_very_slow_gpu_finishes():
    # 0.01 TFLOPS: steps of minutes, so the fetches run at clocks beyond 1e4 s.
    sc = scenario(tiny_workload(num_seqs=16, inp=(1000, 1000), out=(20, 20)), hw=with_gpu(H800, bf16_flops=1e10))
    report = simulate(sc, [Placement("dram-copy")])
    assert report.baseline["makespan_s"] > 1e4
    assert report.runs[0].throughput_tok_s <= report.baseline["throughput_tok_s"]


@pytest.mark.parametrize("num_seqs, max_seqs, kv_blocks", [(8, 8, None), (64, 4, None), (40, 64, 30), (200, 64, 60)])
def test_the_work_estimate_tracks_the_steps_simulated(num_seqs, max_seqs, kv_blocks):
    from engramsim.sim.work import estimate_work

    workload = tiny_workload(num_seqs=num_seqs, max_seqs=max_seqs)
    sc = scenario(workload)
    kv = sc.plan(None).kv_blocks_per_rank if kv_blocks is None else kv_blocks
    from engramsim.sim.engine import ServerSetup, run_server

    setup = ServerSetup(
        hw=sc.hw, model=sc.model, workload=workload, placement=None, gpus=1, tp=1, kv_blocks=kv, row_model=sc.rows
    )
    steps = run_server(setup, workload.requests(0)).stats.steps
    estimate = estimate_work(workload, 1, 1, kv * workload.engine.kv_block_tokens).steps_per_run
    assert steps / 3 <= estimate <= steps * 1.5
