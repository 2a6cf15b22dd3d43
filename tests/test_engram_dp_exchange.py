"""Engram DP sharding's per-step exchange (vllm-project/vllm #56512): one all-gather of the
n-gram ids per step and one all-gather of looked-up rows per Engram layer, over the node-local
replicas; hand-checked values, properties, and where the simulator applies it."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim import costs
from engramsim.engine import load_engine
from engramsim.hardware import load_hardware
from engramsim.sim.run import simulate
from engramsim.sim.tiers import Placement
from tests.simkit import scenario, tiny_workload

H200 = load_hardware("h200").gpu


def test_row_gather_by_hand():
    # DSv4.1-Flash at DP8 x TP1, 32 tokens per replica: a rank holds 24 / 8 = 3 heads of 256
    # values, looks them up for 8 x 32 tokens (bf16: 393,216 B) and all-gathers that block:
    # 8 us + 7 blocks over 450 GB/s.
    block = 8 * 32 * 3 * 256 * 2
    assert costs.engram_dp_rows_s(H200, 32, 24, 256, tp=1, dp=8) == pytest.approx(8e-6 + 7 * block / 450e9)
    # TP2 x DP4: ceil(24 / 8) = 3 heads a rank, 4 x 32 tokens, 3 blocks received.
    assert costs.engram_dp_rows_s(H200, 32, 24, 256, tp=2, dp=4) == pytest.approx(
        8e-6 + 3 * (4 * 32 * 3 * 256 * 2) / 450e9
    )


def test_id_gather_by_hand():
    # One gather a step for every Engram layer: 32 tokens x 2 layers x 24 int32 ids per replica.
    assert costs.engram_dp_ids_s(H200, 32, 2, 24, dp=8) == pytest.approx(8e-6 + 7 * 32 * 2 * 24 * 4 / 450e9)


def test_nothing_to_exchange_with_one_replica():
    assert costs.engram_dp_rows_s(H200, 4096, 24, 256, tp=8, dp=1) == 0.0
    assert costs.engram_dp_ids_s(H200, 4096, 2, 24, dp=1) == 0.0


@settings(max_examples=40, deadline=None)
@given(tokens=st.integers(1, 8192), dp=st.sampled_from([2, 4, 8]), tp=st.sampled_from([1, 2, 4]))
def test_more_tokens_or_replicas_never_exchange_faster(tokens, dp, tp):
    rows = costs.engram_dp_rows_s(H200, tokens, 24, 256, tp, dp)
    assert costs.engram_dp_rows_s(H200, tokens + 1, 24, 256, tp, dp) >= rows
    assert costs.engram_dp_rows_s(H200, tokens, 24, 256, tp, 2 * dp) >= rows
    assert rows >= H200.allreduce_latency_s  # the latency floor
    ids = costs.engram_dp_ids_s(H200, tokens, 2, 24, dp)
    assert costs.engram_dp_ids_s(H200, tokens + 1, 2, 24, dp) >= ids
    assert costs.engram_dp_ids_s(H200, tokens, 2, 24, 2 * dp) >= ids


def test_a_gpu_without_nvlink_cannot_shard_over_replicas():
    from engramsim.errors import UserError

    with pytest.raises(UserError, match="Engram DP sharding needs nvlink_GBps"):
        costs.engram_dp_rows_s(replace(H200, nvlink_Bps=0.0), 32, 24, 256, tp=1, dp=8)


def _exchange(sharded: bool, gpus: int):
    engine = replace(load_engine("vllm"), engram_dp_sharding=sharded, host_copies="per-replica")
    return simulate(scenario(tiny_workload(), gpus=gpus, engine=engine), [Placement("dram-copy")]).runs[0]


def test_the_simulator_times_the_exchange_only_when_sharding_over_several_replicas():
    plain, one_replica, sharded = _exchange(False, 8), _exchange(True, 1), _exchange(True, 8)
    assert plain.engram_time_s["DP exchange"] == 0.0
    assert one_replica.engram_time_s["DP exchange"] == 0.0
    assert sharded.engram_time_s["DP exchange"] > 0.0
    assert sharded.makespan_s > plain.makespan_s


def test_a_host_table_the_replicas_share_is_not_exchanged():
    # vLLM's dp_shared_memory (host_copies per-node) sets the Engram DP size to 1: each replica
    # reads its own tokens' rows from the shared copy.
    engine = replace(load_engine("vllm"), engram_dp_sharding=True, host_copies="per-node")
    shared = simulate(scenario(tiny_workload(), gpus=8, engine=engine), [Placement("dram-copy")]).runs[0]
    assert shared.engram_time_s["DP exchange"] == 0.0


def test_the_vllm_preset_follows_vllm_defaults():
    eng = load_engine("vllm")
    assert eng.engram_dp_sharding and eng.host_copies == "per-node"
