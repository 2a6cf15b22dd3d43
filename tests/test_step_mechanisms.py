"""What a DeepSeek-V4.1-style decode step costs beyond its roofline: the architecture's own kernel
count and the expert-parallel token exchange, on hand-computed values and as properties."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim import costs
from engramsim.hardware import load_hardware
from engramsim.model import load_model
from engramsim.sim.run import simulate
from engramsim.sim.tiers import Placement
from tests.simkit import scenario, tiny_workload

H200 = load_hardware("h200").gpu
V41 = load_model("deepseek-v4.1-flash").backbone


def test_the_exchange_is_two_collectives_of_the_other_ranks_tokens():
    # DP8 x TP1, EP8: all-gather then reduce-scatter, each 8 us + 7 ranks x 4 tokens x 5120 x 2 B
    # over 450 GB/s.
    one = 8e-6 + 7 * 4 * 5120 * 2 / 450e9
    assert costs.ep_exchange_s(H200, 4, 5120, tp=1, ep=8) == pytest.approx(2 * one)


def test_no_exchange_without_data_parallel_ranks_in_the_expert_group():
    assert costs.ep_exchange_s(H200, 64, 5120, tp=1, ep=1) == 0.0
    assert costs.ep_exchange_s(H200, 64, 5120, tp=8, ep=8) == 0.0  # TP-only EP: the all-reduces
    # TP2 x DP4 with EP8: four replicas exchange.
    assert costs.ep_exchange_s(H200, 64, 5120, tp=2, ep=8) == pytest.approx(2 * (8e-6 + 3 * 64 * 5120 * 2 / 450e9))


@settings(max_examples=40, deadline=None)
@given(tokens=st.integers(1, 4096), ep=st.sampled_from([2, 4, 8, 16, 32, 64]))
def test_more_expert_parallel_ranks_never_shrink_the_exchange(tokens, ep):
    assert costs.ep_exchange_s(H200, tokens, 5120, 1, 2 * ep) >= costs.ep_exchange_s(H200, tokens, 5120, 1, ep)
    assert costs.ep_exchange_s(H200, tokens, 5120, 1, ep) >= 2 * H200.allreduce_latency_s  # the latency floor


def test_a_rank_reads_only_its_own_experts_that_the_group_touches():
    # One token per rank, 8 ranks: 8 x 6 = 48 expert picks (uniform routing) over 384 experts,
    # of which a rank owns 48.
    whole = costs.routed_read_bytes(V41, 1, tp=1)
    per_expert = V41.expert_params * V41.expert_bytes_per_param
    assert whole == pytest.approx(costs.experts_touched(384, 6, 1) * per_expert)
    ep = costs.routed_read_bytes(V41, 1, tp=1, ep=8)
    assert ep == pytest.approx(costs.experts_touched(384, 6, 8) * per_expert / 8)
    # A large batch touches every expert: a rank reads its 48, not all 384.
    assert costs.routed_read_bytes(V41, 4096, tp=1, ep=8) == pytest.approx(48 * per_expert, rel=1e-6)
    # EP within TP (no data-parallel ranks in the group) reads as TP slicing does.
    assert costs.routed_read_bytes(V41, 64, tp=8, ep=8) == costs.routed_read_bytes(V41, 64, tp=8)


def test_the_architecture_kernel_count_is_paid_at_every_layer():
    shape = costs.decode_shape(1024, 1)
    plain = costs.step_compute(H200, V41, shape, 8, layer_kernels=12)
    v41 = costs.step_compute(H200, V41, shape, 8, layer_kernels=V41.kernels_per_layer)
    assert V41.kernels_per_layer == 76  # 350 - 2 x (141 - 4): vLLM #56503/#56506, mHC seams fused
    assert v41.moe_layer_s - plain.moe_layer_s == pytest.approx(64 * H200.kernel_fixed_s)
    # 40 layers x 76 kernels x 1.5 us: 4.56 ms of a decode step on Hopper.
    assert v41.layers_s(V41, 0, V41.n_layers) - plain.layers_s(V41, 0, V41.n_layers) == pytest.approx(40 * 64 * 1.5e-6)


def test_a_draft_layer_pays_its_kernels_too():
    plain = costs.draft_s(H200, V41, 4, 2, 8)
    counted = costs.draft_s(H200, V41, 4, 2, 8, layer_kernels=76)
    assert counted - plain == pytest.approx(2 * 76 * H200.kernel_fixed_s)  # two drafted tokens, one layer each


def test_a_model_kernel_count_replaces_the_engine_count_in_the_simulation():
    w = tiny_workload()
    w = replace(w, engine=replace(w.engine, kernels_per_layer=12))
    base = scenario(w)
    heavier = replace(base, model=replace(base.model, backbone=replace(base.model.backbone, kernels_per_layer=100)))
    light, heavy = (simulate(s, [Placement("dram-copy")]).runs[0] for s in (base, heavier))
    assert heavy.makespan_s > light.makespan_s


def test_an_engine_that_counts_no_kernels_is_not_given_the_model_count():
    w = tiny_workload()
    assert w.engine.kernels_per_layer == 0  # launches not modelled (the one-box engines)
    base = scenario(w)
    heavier = replace(base, model=replace(base.model, backbone=replace(base.model.backbone, kernels_per_layer=100)))
    same = [simulate(s, [Placement("dram-copy")]).runs[0].makespan_s for s in (base, heavier)]
    assert same[0] == same[1]


def test_dense_presets_keep_the_engine_count():
    for name in ("dense-4b-engram100b", "dense-8b-engram100b", "engram-27b"):
        assert load_model(name).backbone.kernels_per_layer == 0
