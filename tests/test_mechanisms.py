"""Engine mechanisms: Engram kernel counts and launches, Engram HBM, speculative decoding and
chunked prefill, with hand-checked timelines and properties."""

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim import costs
from engramsim.capacity import engram_module_bytes, staging_bytes
from engramsim.engine import load_engine
from engramsim.hardware import load_hardware
from engramsim.model import load_model
from engramsim.sim.run import simulate
from engramsim.sim.scheduler import ChunkedScheduler, Scheduler, Seq
from engramsim.sim.tiers import Placement
from engramsim.workload import Engine
from tests.simkit import scenario, tiny_workload, with_gpu


def with_engine(workload, **changes):
    return replace(workload, engine=replace(workload.engine, **changes))


def test_engram_kernel_count_per_hyper_connection_branch():
    # 13 kernels per branch (key projection, two norms, 9 gate ops, conv norm) + 8 shared.
    assert costs.engram_kernels(1) == 21
    assert costs.engram_kernels(4) == 60


def test_composite_rmsnorms_are_eight_kernels_and_twenty_passes_each():
    # PyTorch 2.4-2.8 aten::rms_norm: to fp32, pow, mean, add, rsqrt, mul, mul weight, to bf16;
    # 3 norms per branch (key, query, conv input).
    assert costs.engram_kernels(4, fused_norms=False) == 60 + 4 * 3 * 7
    assert costs.engram_hidden_passes(4, fused_norms=False) == 106 + 4 * 3 * 18
    gpu, model = load_hardware("h800").gpu, load_model("dense-4b-engram100b")
    bb, spec = model.backbone, model.engram
    for tokens in (1, 512, 16384):
        assert costs.engram_module_s(gpu, bb, spec, tokens, 1, fused_norms=False) >= costs.engram_module_s(
            gpu, bb, spec, tokens, 1
        )


def test_unfused_norms_are_never_faster_end_to_end():
    w = tiny_workload()
    fused = simulate(scenario(w), [Placement("dram-copy")]).runs[0]
    unfused = simulate(scenario(with_engine(w, engram_norm_fused=False)), [Placement("dram-copy")]).runs[0]
    assert unfused.makespan_s > fused.makespan_s
    assert unfused.engram_time_s["fusion compute"] > fused.engram_time_s["fusion compute"]


def test_launches_cost_dispatch_plus_driver_launch_per_kernel():
    gpu = replace(load_hardware("h800").gpu, kernel_launch_s=5e-6)
    assert costs.launches_s(gpu, 2e-6, 21) == pytest.approx(21 * 7e-6)


def test_kernel_fixed_time_is_paid_per_kernel_and_per_layer():
    gpu = replace(load_hardware("h800").gpu, kernel_fixed_s=1.5e-6)
    assert costs.kernels_fixed_s(gpu, 60) == pytest.approx(90e-6)
    bb = load_model("dense-4b-engram100b").backbone
    shape = costs.decode_shape(512 * 600, 512)
    bare = costs.step_compute(gpu, bb, shape, 1)
    with_kernels = costs.step_compute(gpu, bb, shape, 1, layer_kernels=12)
    assert with_kernels.dense_layer_s - bare.dense_layer_s == pytest.approx(12 * 1.5e-6)
    assert with_kernels.head_s == bare.head_s


def test_every_engram_kernel_pays_the_fixed_time_in_every_step():
    w = tiny_workload()
    hw = with_gpu(load_hardware("h800"), kernel_fixed_s=2e-6)
    run = simulate(scenario(w, hw=hw), [Placement("dram-copy")]).runs[0]
    model = load_model("dense-4b-engram100b")
    per_step = costs.engram_kernels(model.backbone.hc_mult) * len(model.engram.layer_ids) * 2e-6
    assert run.engram_time_s["kernel fixed time"] == pytest.approx(run.steps * per_step)


@settings(max_examples=8, deadline=None)
@given(st.floats(0, 10), st.floats(0.01, 10), st.integers(0, 20))
def test_a_longer_kernel_fixed_time_is_never_faster(fixed_us, more_us, kernels):
    w = with_engine(tiny_workload(), kernels_per_layer=kernels)
    hw = load_hardware("h800")
    short = simulate(scenario(w, hw=with_gpu(hw, kernel_fixed_s=fixed_us * 1e-6)), [Placement("dram-copy")])
    long = simulate(scenario(w, hw=with_gpu(hw, kernel_fixed_s=(fixed_us + more_us) * 1e-6)), [Placement("dram-copy")])
    assert long.baseline["makespan_s"] >= short.baseline["makespan_s"] - 1e-12
    # Not strictly slower: an eager forward that the host's launches bound hides GPU time.
    assert long.runs[0].makespan_s >= short.runs[0].makespan_s - 1e-12


def test_engram_hbm_is_weights_plus_one_step_of_rows():
    model, engine = load_model("dense-8b-engram100b"), load_engine("nano-vllm")
    bb, spec = model.backbone, model.engram
    assert bb.hc_mult == 4 and spec.memory_dim == 1280 and spec.layer_ids == (1,)  # paper §2.4, §6.4
    weights = (5 * 1280 * 4096 + 4 * 4 * 4096) * 2  # value + 4 key projections, conv
    # Qwen3-8B's peak (4 x 4 hc-wide copies and the MLP) is above the module's: nothing extra.
    assert engram_module_bytes(model, engine, tp=1) == pytest.approx(weights)
    assert staging_bytes(spec, engine, 1) == 16384 * spec.heads_per_layer * 80 * 2  # a full step's bf16 rows


def test_engram_activation_passes_counted_from_the_demo():
    # Per branch: 12 (key projection, 2 norms, gate product and sum, gate x value, conv norm)
    # + 14 over the stream (concat, conv, SiLU, transpose, two adds); 2 shared (value).
    assert costs.engram_hidden_passes(1) == 28
    assert costs.engram_hidden_passes(4) == 106


def test_engram_module_time_grows_with_branches_hidden_and_tokens():
    gpu, model = load_hardware("h800").gpu, load_model("dense-4b-engram100b")
    bb, spec = model.backbone, model.engram
    base = costs.engram_module_s(gpu, bb, spec, 4096, 1)
    assert costs.engram_module_s(gpu, replace(bb, hc_mult=1), spec, 4096, 1) < base
    assert costs.engram_module_s(gpu, replace(bb, hidden_size=4096), spec, 4096, 1) > base
    assert costs.engram_module_s(gpu, bb, spec, 8192, 1) > base
    # At 4,096 tokens the module is HBM-bound: its bytes over the HBM bandwidth, plus fixed costs.
    moved = costs.engram_module_params(bb, spec) * 2 + 4096 * (1280 + 106 * 2560) * 2
    fixed = gpu.engram_module_overhead_s + 4096 * gpu.engram_module_s_per_token
    assert base == pytest.approx(
        fixed + costs.roofline_s(gpu, 2.0 * 4096 * costs.engram_module_params(bb, spec), moved)
    )


def test_speculative_tokens_per_step_follow_acceptance():
    assert Engine(spec_tokens=3, accept_rate=0.0).tokens_per_decode == 1.0
    assert Engine(spec_tokens=3, accept_rate=1.0).tokens_per_decode == 4.0
    assert Engine(spec_tokens=2, accept_rate=0.5).tokens_per_decode == pytest.approx(1.75)


def test_speculative_timeline_one_sequence():
    # Prompt 16, 5 output tokens, K = 1 draft always accepted: the prefill samples token 1, then
    # each decode step verifies 2 positions and gains 2 tokens: 1 -> 3 -> 5, three steps.
    s = Scheduler(Engine(kv_block_tokens=4, spec_tokens=1, accept_rate=1.0), kv_blocks=10)
    seq = Seq(0, 0.0, 16, 5)
    s.add(seq)
    batch, prefill = s.schedule()
    assert prefill and not s.finish_step(batch, 1.0, prefill)
    assert seq.out == 1 and seq.blocks == 4
    batch, prefill = s.schedule()
    shape = costs.batch_shape(batch, prefill, positions=2)
    assert shape.tokens == 2 and shape.logits == 2 and shape.attn_pairs == 2 * 17
    assert seq.blocks == 5  # 17 tokens + 1 draft need ceil(18 / 4) blocks
    assert not s.finish_step(batch, 2.0, prefill) and seq.out == 3
    batch, prefill = s.schedule()
    assert s.finish_step(batch, 3.0, prefill) == [seq] and seq.out == 5 and s.free_blocks == 10


def test_speculative_emission_is_whole_tokens_at_the_expected_rate():
    s = Scheduler(Engine(spec_tokens=2, accept_rate=0.5), kv_blocks=10)
    seq = Seq(0, 0.0, 4, 10**6)
    emitted = [s._accepted(seq) for _ in range(400)]
    assert set(emitted) <= {1, 2} and sum(emitted) == 700  # 1.75 per step


def chunk_shape(batch, chunks):
    return costs.mixed_shape(
        [len(q) for q in batch if q.id not in chunks], [(q.computed, chunks[q.id]) for q in batch if q.id in chunks]
    )


def test_chunked_prefill_timeline_mixes_chunks_with_decodes():
    # Budget 64 tokens: step 1 takes prompt 0 whole (50) and 14 of prompt 1; step 2 decodes
    # sequence 0 (1 token) and finishes prompt 1 (26); step 3 decodes both.
    s = ChunkedScheduler(Engine(max_num_batched_tokens=64, kv_block_tokens=16, chunked_prefill=True), kv_blocks=20)
    a, b = Seq(0, 0.0, 50, 3), Seq(1, 0.0, 40, 3)
    s.add(a)
    s.add(b)
    batch, _ = s.schedule()
    assert s.chunks == {0: 50, 1: 14}
    shape = chunk_shape(batch, s.chunks)
    assert shape.tokens == 64 and shape.kv_read_tokens == 0 and shape.logits == 2
    s.finish_step(batch, 1.0)
    assert (a.out, b.out, b.computed) == (1, 0, 14)
    batch, _ = s.schedule()
    assert [q.id for q in batch] == [0, 1] and s.chunks == {1: 26}
    shape = chunk_shape(batch, s.chunks)
    assert shape.tokens == 27 and shape.kv_read_tokens == 51 + 14
    s.finish_step(batch, 2.0)
    assert (a.out, b.out) == (2, 1)
    batch, _ = s.schedule()
    assert s.chunks == {} and len(batch) == 2


def test_chunked_prefill_serves_every_request():
    w = with_engine(tiny_workload(num_seqs=12, max_seqs=4), chunked_prefill=True, max_num_batched_tokens=80)
    report = simulate(scenario(w), [Placement("dram-copy")])
    assert report.baseline["output_tokens"] == report.runs[0].output_tokens > 0


@settings(max_examples=8, deadline=None)
@given(st.integers(0, 40), st.integers(1, 30), st.floats(0, 20))
def test_more_launches_are_never_faster(kernels, more, dispatch_us):
    eager = with_engine(tiny_workload(), kernels_per_layer=kernels, op_dispatch_s=dispatch_us * 1e-6)
    hw = with_gpu(load_hardware("h800"), kernel_launch_s=5e-6)
    few = simulate(scenario(eager, hw=hw), [Placement("dram-copy")])
    many = simulate(scenario(with_engine(eager, kernels_per_layer=kernels + more), hw=hw), [Placement("dram-copy")])
    assert many.baseline["makespan_s"] >= few.baseline["makespan_s"] - 1e-12
    assert many.runs[0].makespan_s >= few.runs[0].makespan_s - 1e-12


@settings(max_examples=8, deadline=None)
@given(st.integers(1, 4), st.floats(0, 1), st.floats(0, 1))
def test_higher_acceptance_never_lowers_throughput(k, a, b):
    """Higher acceptance never needs more steps. When it saves none (the longest sequence sets
    the count), its sequences' contexts grow faster, so each step reads a little more KV: a
    hypothesis search found 2 us in 73 ms (0.003%), which the 0.1% margin allows and no more."""
    lo, hi = sorted((a, b))
    w = with_engine(tiny_workload(out=(20, 40)), spec_tokens=k)
    slow = simulate(scenario(with_engine(w, accept_rate=lo)), [Placement("dram-copy")])
    fast = simulate(scenario(with_engine(w, accept_rate=hi)), [Placement("dram-copy")])
    assert fast.baseline["steps"] <= slow.baseline["steps"] and fast.runs[0].steps <= slow.runs[0].steps
    assert fast.baseline_tok_s >= slow.baseline_tok_s * (1 - 1e-3)
    assert fast.runs[0].throughput_tok_s >= slow.runs[0].throughput_tok_s * (1 - 1e-3)


def test_acceptance_that_saves_steps_raises_throughput():
    w = with_engine(tiny_workload(out=(20, 40)), spec_tokens=2)
    rates = [simulate(scenario(with_engine(w, accept_rate=a)), []).baseline_tok_s for a in (0.0, 0.5, 1.0)]
    assert rates[0] < rates[1] < rates[2]


def test_async_scheduling_hides_host_work_behind_the_gpu():
    sync = with_engine(tiny_workload(), step_host_s=1e-3)
    run_sync = simulate(scenario(sync), [])
    run_async = simulate(scenario(with_engine(sync, async_scheduling=True)), [])
    assert run_async.baseline["makespan_s"] < run_sync.baseline["makespan_s"]


def test_cuda_graph_decode_stages_cpu_gathered_rows_before_the_replay():
    # With graphs, a CPU-gathered fetch cannot overlap the layers before the Engram layer.
    eager = tiny_workload()
    graphs = with_engine(eager, decode_cuda_graphs=True)
    assert simulate(scenario(eager), [Placement("dram-copy")]).runs[0].stall_s == 0
    assert simulate(scenario(graphs), [Placement("dram-copy")]).runs[0].stall_s > 0
    # Piecewise graphs (vLLM) break at the Engram layer: the rows are awaited there instead.
    piecewise = with_engine(graphs, piecewise_graphs=True)
    assert simulate(scenario(piecewise), [Placement("dram-copy")]).runs[0].stall_s == 0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(8, 128),
    st.sampled_from([4, 16]),
    st.lists(st.tuples(st.integers(1, 60), st.integers(1, 20)), min_size=1, max_size=10),
    st.integers(1, 4),
)
def test_chunked_scheduling_finishes_every_sequence_and_frees_its_blocks(max_seqs, budget, block, lens, room):
    engine = Engine(max_num_seqs=max_seqs, max_num_batched_tokens=budget, kv_block_tokens=block, chunked_prefill=True)
    kv = room * max(-(-(p + o) // block) for p, o in lens)  # at least one whole sequence fits
    s = ChunkedScheduler(engine, kv)
    for i, (p, o) in enumerate(lens):
        s.add(Seq(i, 0.0, p, o))
    done = []
    for _ in range(10_000):
        batch, _ = s.schedule()
        assert sum(s.chunks.values()) + (len(batch) - len(s.chunks)) <= budget
        done += s.finish_step(batch, 0.0)
        if len(done) == len(lens):
            break
    assert sorted(q.out for q in done) == sorted(o for _, o in lens) and s.free_blocks == kv


def test_engine_presets_carry_how_steps_run_and_the_fitted_step_costs():
    nano, vllm = load_engine("nano-vllm"), load_engine("vllm")
    assert nano.steps.decode_cuda_graphs and not nano.steps.async_scheduling
    assert not nano.limits().chunked_prefill
    fitted = dict(nano.steps.fitted_step_host_s)
    assert set(fitted) == {"dense-4b-engram100b", "dense-8b-engram100b"}
    assert nano.limits().step_host_for("dense-8b-engram100b") == fitted["dense-8b-engram100b"]
    assert nano.limits().step_host_for("engram-27b") == nano.steps.step_host_s
    assert vllm.limits().chunked_prefill and vllm.limits().async_scheduling


def test_a_bad_fitted_step_cost_names_the_file_and_the_model(tmp_path):
    from engramsim.errors import UserError

    text = (load_engine("nano-vllm").source).read_text().replace("dense-8b-engram100b = ", "dense-8b-engram100b = -")
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=r"bad.toml \[fitted_step_host_us\]: 'dense-8b-engram100b'"):
        load_engine(path)


def test_a_slower_host_cpu_scales_the_engine_host_work():
    # One sequence, one output token: one prefill step whose host work is step_host_s times the
    # ratio of this host's hash call to the CPU the engine's costs were measured on.
    from tests.simkit import with_host

    w = with_engine(tiny_workload(num_seqs=1, out=(1, 1)), step_host_s=1e-3, ref_hash_call_s=20e-6)
    same = simulate(scenario(w, hw=with_host(load_hardware("h800"), hash_call_s=20e-6)), [])
    slower = simulate(scenario(w, hw=with_host(load_hardware("h800"), hash_call_s=60e-6)), [])
    assert slower.baseline["makespan_s"] - same.baseline["makespan_s"] == pytest.approx(2e-3, rel=1e-9)


def _step_s(sc, shape) -> float:
    """GPU time of one step of the baseline backbone, from the cost functions."""
    bb, model = sc.model.backbone, sc.model
    comp = costs.step_compute(sc.hw.gpu, bb, shape, 1, model.kv_bytes_per_token_per_rank(1) / bb.n_layers)
    return comp.layers_s(bb, 0, bb.n_layers) + comp.head_s


def test_speculative_steps_timeline_by_hand():
    # One request, prompt 16, 5 output tokens, K = 1 always accepted (no draft layers: dense-4b):
    # a prefill of 16 tokens, then decodes of 2 positions at lengths 17 and 19.
    w = with_engine(tiny_workload(num_seqs=1, inp=(16, 16), out=(5, 5)), spec_tokens=1, accept_rate=1.0)
    sc = scenario(w)
    report = simulate(sc, [])
    expected = (
        _step_s(sc, costs.batch_shape([[0] * 16], True))
        + _step_s(sc, costs.batch_shape([[0] * 17], False, positions=2))
        + _step_s(sc, costs.batch_shape([[0] * 19], False, positions=2))
    )
    assert report.baseline["steps"] == 3
    assert report.baseline["makespan_s"] == pytest.approx(expected, rel=1e-12)


def test_chunked_prefill_timeline_by_hand():
    # Budget 64, 3 output tokens each. Step 1: prompt 0 whole (50, samples) + 14 of prompt 1.
    # Step 2: decode sequence 0 (length 51) + the last 26 of prompt 1 (14 cached; samples).
    # Step 3: decode both (lengths 52 and 41; sequence 0 finishes). Step 4: decode sequence 1.
    w = with_engine(
        tiny_workload(num_seqs=2, inp=(40, 50), out=(3, 3)), chunked_prefill=True, max_num_batched_tokens=64
    )
    sc = scenario(w)
    requests = replace(w.requests(0), input_len=np.array([50, 40]))
    report = simulate(sc, [], requests=requests)
    expected = (
        _step_s(sc, costs.mixed_shape([], [(0, 50), (0, 14)]))
        + _step_s(sc, costs.mixed_shape([51], [(14, 26)]))
        + _step_s(sc, costs.mixed_shape([52, 41], []))
        + _step_s(sc, costs.mixed_shape([42], []))
    )
    assert report.baseline["steps"] == 4
    assert report.baseline["makespan_s"] == pytest.approx(expected, rel=1e-12)


def test_the_engine_host_costs_are_stated_for_the_cpu_the_committed_hash_profile_measured():
    # A check, not a fit: calibrating the committed hash profile gives the hash call that the
    # nano-vllm preset names as its reference CPU, so the h800 host runs its costs at scale 1.
    from engramsim.calibrate import hardware_from_profile
    from engramsim.presets import ROOT

    host = hardware_from_profile(ROOT / "profiles" / "vm-cpu-hash-2026-11-29.json", base="h800").host
    assert host.hash_call_s == pytest.approx(load_engine("nano-vllm").steps.ref_hash_call_s, rel=0.01)
    assert load_hardware("h800").host.hash_call_s == pytest.approx(host.hash_call_s, rel=0.01)


@pytest.mark.parametrize("seed", [0, 7])
def test_bench_py_lengths_are_pythons_random_draws(seed):
    # nano-vLLM bench.py: seed(s); per request randint(100, max_in) prompt ids of randint(0, 10000)
    # each; then every output length. The fast path must consume the generator identically.
    import random

    w = replace(tiny_workload(num_seqs=40, inp=(100, 1024), out=(100, 1024)), lengths_from="bench.py")
    r = random.Random(seed)
    inputs = []
    for _ in range(40):
        inputs.append(r.randint(100, 1024))
        for _ in range(inputs[-1]):
            r.randint(0, 10000)
    outputs = [r.randint(100, 1024) for _ in range(40)]
    got = w.requests(seed)
    assert list(got.input_len) == inputs and list(got.output_len) == outputs


def test_hashing_costs_a_call_plus_tokens_per_head():
    from tests.simkit import with_host

    host = with_host(load_hardware("h800"), hash_call_s=30e-6, hash_s_per_token=60e-9, hash_heads=16).host
    assert costs.hash_s(host, 1000, 2, heads=16) == pytest.approx(2 * (30e-6 + 1000 * 60e-9))
    assert costs.hash_s(host, 1000, 2, heads=24) == pytest.approx(2 * (30e-6 + 1000 * 90e-9))
