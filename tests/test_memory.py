"""The per-rank memory plan: hand-checked arithmetic, TP/DP/EP invariants, the InferenceX
startup-log figures it is checked against, device-reported capacities, and bad input."""

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim.capacity import Parallel, plan_memory, table_shard
from engramsim.engine import load_engine
from engramsim.errors import UserError
from engramsim.hardware import load_hardware
from engramsim.model import Backbone, EngramSpec, KVLayout, ModelSpec, load_model
from engramsim.presets import PRESET_DIRS, preset_names

GiB, MiB = 2.0**30, 2.0**20
ROOT = Path(__file__).resolve().parent.parent


def tiny_model(tp_shards_dense=True) -> ModelSpec:
    """2 layers, hidden 8, 4 heads, 1 KV head of 16 (window 2, ratios 1 and 2), 4 fp4 experts."""
    bb = Backbone(
        n_layers=2,
        hidden_size=8,
        vocab_size=10,
        n_heads=4,
        head_dim=16,
        n_kv_heads=1,
        attn_params_per_layer=100,
        n_routed_experts=4,
        n_active_experts=2,
        n_shared_experts=1,
        moe_intermediate_size=2,
        dtype="fp8",
        expert_dtype="mxfp4",
        embed_dtype="bf16",
        tp_shards_dense=tp_shards_dense,
        max_model_len=64,
    )
    kv = KVLayout(
        compress_ratios=(1, 2), entry_bytes=16, sliding_window=2, index_source_layer_ids=(0,), index_entry_bytes=4
    )
    engram = EngramSpec(
        layer_ids=(1,),
        max_ngram_size=3,
        n_head_per_ngram=2,
        engram_vocab_size=(10, 20),
        n_embed_per_ngram=8,
        dtype="fp8",
    )
    return ModelSpec("tiny", "", bb, engram, kv=kv)


def test_weights_of_a_tiny_model_by_hand():
    bb = tiny_model().backbone
    # experts: 2 layers x 4 x (3 x 8 x 2 = 48) = 384 params x (0.5 + 1/32) B = 204 B
    assert bb.routed_expert_params == 384
    # dense: 2 x 100 attention + 2 x 1 shared x 48 = 296 params x 1 B; embeddings 2 x 10 x 8 x 2 B = 320
    assert bb.dense_params == 296 and bb.embedding_params == 160
    assert bb.weight_bytes_per_rank(1) == pytest.approx(204 + 296 + 320)
    assert bb.weight_bytes_per_rank(2) == pytest.approx(102 + 148 + 160)
    assert bb.weight_bytes_per_rank(2, ep=4) == pytest.approx(51 + 148 + 160)
    replicated = tiny_model(tp_shards_dense=False).backbone
    assert replicated.weight_bytes_per_rank(2) == pytest.approx(102 + 296 + 320)


def test_expert_padding_and_replicated_attention_by_hand():
    bb = tiny_model().backbone
    # width 2 sliced over TP2 = 1, padded to 4: 2 layers x 4 experts x 3 x 8 x 4 x (0.5 + 1/32) B
    assert bb.routed_expert_bytes_per_rank(2, align=4) == pytest.approx(408)
    # EP2: whole experts (width 2 -> 4), half of them per rank
    assert bb.routed_expert_bytes_per_rank(2, ep=2, align=4) == pytest.approx(204)
    # 20 of the 100 attention weights per layer replicated: (296 - 40) / 2 + 40 dense bytes
    part = replace(bb, attn_replicated_params_per_layer=20)
    assert part.weight_bytes_per_rank(2) == pytest.approx(102 + 168 + 160)
    # hyper-connection mixers, fp32 and whole on every rank: 2 x (2 + 2) x 2 x (2 x 8) per layer
    assert replace(bb, hc_mult=2).weight_bytes_per_rank(2) - bb.weight_bytes_per_rank(2) == pytest.approx(2 * 256 * 4)
    with pytest.raises(UserError, match="exceeds the attention weights"):
        replace(bb, attn_replicated_params_per_layer=101)


def test_mtp_hidden_buffer_by_hand():
    from engramsim.capacity import model_buffer_bytes

    m = load_model("deepseek-v4.1-flash")
    eng = load_engine("vllm").with_overrides(max_num_batched_tokens=100)
    # [100 tokens, hc_mult 4 x hidden 5120] bf16
    assert model_buffer_bytes(m, eng) == 100 * 4 * 5120 * 2


def test_kv_per_layer_type_by_hand():
    m = tiny_model()
    # layer 0 every token (16 B), layer 1 every 2nd (8 B), indexer on layer 0 (4 B); replicated on TP
    assert m.kv_bytes_per_token_per_rank(1) == m.kv_bytes_per_token_per_rank(4) == 28
    # window: 2 layers x 2 tokens x 16 B
    assert m.kv_bytes_per_seq_per_rank() == 64


def test_plan_arithmetic_by_hand():
    m, hw = tiny_model(), replace(load_hardware("h800"), gpu=replace(load_hardware("h800").gpu, hbm_bytes=1 * MiB))
    eng = replace(
        load_engine("vllm"),
        memory_utilization=0.5,
        max_num_batched_tokens=4,
        max_num_seqs=2,
        max_capture_size=2,
        cuda_graph_MiB_per_token=0.01,
        non_torch_GiB=0.0,
        block_size_tokens=4,
        act_hidden_copies=1,
        act_mlp_copies=1,
    )
    plan = plan_memory(hw, m, eng, Parallel(1), "hbm", context_tokens=16)
    # activations: 4 tokens x (1 x 8 + 1 x 4) x 2 B + 2 x 10 x 4 B logits = 176 B
    assert plan.per_rank_GiB["activations"] * GiB == pytest.approx(176)
    # indexer: 4 tokens x max_model_len 64 x 1 B (fp8)
    assert plan.per_rank_GiB["indexer"] * GiB == pytest.approx(256)
    assert plan.per_rank_GiB["cuda_graphs"] * GiB == pytest.approx(2 * 0.01 * MiB)
    # staging: 4 tokens x 4 heads x 4 values (8 per order / 2 heads) x 2 B (bf16) x 1 layer;
    # table: (2x10 + 2x20) rows x 4 B; no draft layers, so no MTP hidden-state buffer
    assert plan.per_rank_GiB["engram_staging"] * GiB == pytest.approx(128)
    assert plan.per_rank_GiB["model_buffers"] == 0
    assert plan.per_rank_GiB["engram_table"] * GiB == pytest.approx(240)
    used = sum(v for k, v in plan.per_rank_GiB.items() if k != "kv") * GiB
    kv = 0.5 * MiB - used
    assert plan.per_rank_GiB["kv"] * GiB == pytest.approx(kv)
    assert plan.kv_tokens_per_rank == int(kv // (28 * 4)) * 4
    assert plan.max_concurrency == int(kv // (16 * 28 + 64))


def test_table_sharded_by_head_then_by_row():
    spec = tiny_model().engram  # 4 tables: 10, 10, 20, 20 rows of 4 B
    assert table_shard(spec, 2) == (pytest.approx(120), "head")  # {10, 20} on each rank
    assert table_shard(spec, 4) == (pytest.approx(80), "head")  # the largest share, 20 rows
    assert table_shard(spec, 8) == (30, "row")  # more ranks than tables


def test_host_copies_decide_dram_per_node():
    m, hw = load_model("deepseek-v4.1-flash"), load_hardware("h200")
    eng = replace(load_engine("vllm"), engram_dp_sharding=False)  # sharding keeps one copy anyway
    plans = {
        c: plan_memory(hw, m, replace(eng, host_copies=c), Parallel(tp=2, dp=4), "dram", context_tokens=1024)
        for c in ("per-node", "per-numa", "per-replica")
    }
    table = m.engram.table_bytes / GiB
    assert plans["per-node"].host_GiB_per_node == pytest.approx(table)
    assert plans["per-numa"].host_GiB_per_node == pytest.approx(2 * table)
    assert plans["per-replica"].host_GiB_per_node == pytest.approx(4 * table)


def test_engram_dp_sharding_splits_the_table_over_the_nodes_ranks():
    """vLLM's Engram DP sharding at DP8 x TP1 (the B300 post's log: "sharded over 8 ranks",
    23.6 GiB per rank, 188.8 GiB per node): an eighth of the table per rank, one host copy."""
    m, hw = load_model("deepseek-v4.1-flash"), load_hardware("b200")
    eng = load_engine("vllm")
    par = Parallel(tp=1, dp=8, ep=8)
    table = m.engram.table_bytes / GiB
    plain = plan_memory(hw, m, replace(eng, engram_dp_sharding=False), par, "hbm", context_tokens=2048)
    sharded = plan_memory(hw, m, replace(eng, engram_dp_sharding=True), par, "hbm", context_tokens=2048)
    assert plain.per_rank_GiB["engram_table"] == pytest.approx(table)
    assert sharded.per_rank_GiB["engram_table"] == pytest.approx(table / 8, rel=0.01)
    host = plan_memory(hw, m, replace(eng, engram_dp_sharding=True), par, "dram", context_tokens=2048)
    assert host.host_GiB_per_node == pytest.approx(table)


@settings(max_examples=40, deadline=None)
@given(tp=st.sampled_from([1, 2, 4, 8]), dp=st.sampled_from([1, 2]), ep_exp=st.integers(0, 4))
def test_parallel_invariants(tp, dp, ep_exp):
    """More TP or EP never adds weights per rank; KV per token per rank never grows with TP;
    DP changes nothing per rank; the plan's parts add up to the usable HBM."""
    m, hw, eng = load_model("deepseek-v4.1-flash"), load_hardware("b200"), load_engine("vllm")
    ep = min(2**ep_exp, tp * dp)
    if (tp * dp) % ep:
        return
    w = m.weight_bytes_per_rank(tp, ep)
    assert m.weight_bytes_per_rank(2 * tp, ep) <= w and m.weight_bytes_per_rank(tp, 2 * ep) <= w
    assert m.kv_bytes_per_token_per_rank(2 * tp) <= m.kv_bytes_per_token_per_rank(tp)
    one = plan_memory(hw, m, eng, Parallel(tp, 1, min(ep, tp)), "dram", context_tokens=1024)
    many = plan_memory(hw, m, eng, Parallel(tp, dp, min(ep, tp)), "dram", context_tokens=1024)
    assert one.per_rank_GiB == many.per_rank_GiB
    assert sum(many.per_rank_GiB.values()) == pytest.approx(many.usable_GiB) or many.per_rank_GiB["kv"] == 0


def test_gqa_kv_divides_and_shared_head_replicates():
    dense = load_model("dense-4b-engram100b")
    bb = dense.backbone
    assert dense.kv_bytes_per_token_per_rank(2) == pytest.approx(
        dense.kv_bytes_per_token_per_rank(1) / min(2, bb.n_kv_heads)
    )
    v41 = load_model("deepseek-v4.1-flash")
    assert v41.kv_bytes_per_token_per_rank(8) == v41.kv_bytes_per_token_per_rank(1)


# --- Figures from engine startup logs (SemiAnalysisAI/InferenceX). Checks, not fits: nothing in
# the presets was set from them except the CUDA-graph pool (calibrated on the 22 GiB figure). ---


def v41_plan(hw, tp, capture):
    eng = load_engine("vllm").with_overrides(max_capture_size=capture)
    return plan_memory(
        load_hardware(hw), load_model("deepseek-v4.1-flash"), eng, Parallel(tp), "dram", context_tokens=1048576
    )


def loaded_GiB(plan):
    """What vLLM logs as model loading memory: everything allocated while the model is built
    and loaded (weights, the MTP hidden-state buffer, the Engram staging rows)."""
    g = plan.per_rank_GiB
    return g["weights"] + g["model_buffers"] + g["engram_staging"]


def test_inferencex_3310_h200_tp8_weights():
    assert loaded_GiB(v41_plan("h200", 8, 8)) == pytest.approx(49.6, rel=0.03)


def test_inferencex_3310_h200_tp8_kv():
    # c1 run: capture sizes up to 8 (the script's smallest power of two >= concurrency x 6)
    assert v41_plan("h200", 8, 8).per_rank_GiB["kv"] == pytest.approx(66.0, rel=0.10)


@pytest.mark.xfail(
    strict=True,
    reason="80.05 GiB predicted vs 66.56 quoted (+20%). The figure's provenance does not "
    "hold: #3320 cites run 35307253872 'from #3247', which is the MI325X PR, and "
    "says 'on a 256 GiB GPU' (MI325X's capacity; a GB200 reports 185 GiB); the "
    "same checkpoint at the same TP4 logs 81.57 GiB on GB300",
)
def test_inferencex_3320_gb200_tp4_weights():
    assert loaded_GiB(v41_plan("gb200", 4, 8)) == pytest.approx(66.56, rel=0.03)


def test_inferencex_3321_gb300_tp4_weights():
    assert loaded_GiB(v41_plan("gb300", 4, 8)) == pytest.approx(81.57, rel=0.03)


def test_inferencex_gb200_tp2_weights_approx():
    # "~145 GiB per GPU" at TP2 (#3320, first sweep; approximate, so a looser check)
    assert loaded_GiB(v41_plan("gb200", 2, 8)) == pytest.approx(145, rel=0.05)


@pytest.mark.xfail(
    strict=True,
    reason="an fp8 [16384, 1M] buffer is 16 GiB; the PRs say 32 GiB, which their own "
    "TP8 KV figure (66 GiB) cannot accommodate",
)
def test_inferencex_indexer_buffer_at_16384_tokens():
    eng = load_engine("vllm").with_overrides(max_num_batched_tokens=16384)
    plan = plan_memory(
        load_hardware("h200"), load_model("deepseek-v4.1-flash"), eng, Parallel(8), "dram", context_tokens=1048576
    )
    assert plan.per_rank_GiB["indexer"] == pytest.approx(32.0, rel=0.03)


def test_graph_pool_at_1024_is_the_calibration():
    assert v41_plan("h200", 8, 1024).per_rank_GiB["cuda_graphs"] == pytest.approx(22.0)


# --- Device-reported capacities: each GPU preset cites the figure it uses. ---


@pytest.mark.parametrize("name", preset_names("hardware"))
def test_hbm_matches_its_cited_device_figure(name):
    text = (PRESET_DIRS["hardware"] / f"{name}.toml").read_text()
    source = re.search(r"# hbm_MiB source: (.*)", text)
    assert source, f"{name}: hbm_MiB needs a '# hbm_MiB source:' line"
    cited = {int(n.replace(",", "")) for n in re.findall(r"\b\d{1,3}(?:,\d{3})+\b|\b\d{5,6}\b", source.group(1))}
    assert load_hardware(name).gpu.hbm_bytes / MiB in cited


# --- Bad input: one line, exit 2. ---


def cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["memory", "--tp", "3"], "does not divide the model's 64 attention heads"),
        (
            ["memory", "--ep", "512", "--tp", "8", "--dp", "64", "--gpus", "512"],
            "exceeds the model's 384 routed experts",
        ),
        (["memory", "--ep", "5", "--tp", "5", "--dp", "1", "--model", "deepseek-v4-flash"], "TP 5 does not divide"),
        (["memory", "--ep", "5", "--tp", "4", "--dp", "5", "--gpus", "20"], "EP 5 does not divide the model's 384"),
        (["memory", "--tp", "8", "--dp", "2", "--gpus", "8"], "ranks exceed the 8 GPUs"),
        (["memory", "--context", "2000000"], "exceeds the model's maximum"),
        (["memory", "--model", "dense-4b-engram100b", "--ep", "2", "--tp", "2"], "needs a mixture-of-experts"),
        (["simulate", "--tp", "2", "--dp", "2", "--gpus", "2"], "ranks exceed the 2 GPUs"),
    ],
)
def test_bad_layouts_are_one_line(args, message):
    r = cli(*args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_dtype_the_model_cannot_hold(tmp_path):
    text = (PRESET_DIRS["model"] / "deepseek-v4.1-flash.toml").read_text().replace("row_bytes = 264", "row_bytes = 200")
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(UserError, match="cannot hold 256 fp8 values"):
        load_model(path)
    path.write_text(
        text.replace("row_bytes = 200", "row_bytes = 264").replace('expert_dtype = "fp4"', 'expert_dtype = "fp3"')
    )
    with pytest.raises(UserError, match="unknown dtype 'fp3'"):
        load_model(path)


def test_memory_json_has_the_plan_shape():
    import json

    r = cli("memory", "--hw", "h200", "--tp", "8", "--tier", "dram", "--tier", "hbm", "--json")
    assert r.returncode == 0, r.stderr
    plans = json.loads(r.stdout)["plans"]
    assert [p["tier"] for p in plans] == ["dram", "hbm"]
    keys = {"weights", "engram_table", "kv", "activations", "cuda_graphs", "non_torch", "indexer"}
    assert all(
        keys <= set(p["per_rank_GiB"]) and {"fits", "kv_tokens_per_rank", "host_GiB_per_node", "problems"} <= set(p)
        for p in plans
    )
    assert (
        plans[1]["per_rank_GiB"]["engram_table"] > 20
        and plans[1]["per_rank_GiB"]["kv"] < plans[0]["per_rank_GiB"]["kv"]
    )


def test_workload_overrides_the_engine_limits(tmp_path):
    from engramsim.workload import load_workload, with_engine

    path = tmp_path / "w.toml"
    path.write_text((PRESET_DIRS["workload"] / "fixed.toml").read_text() + "\n[engine]\nmax_num_seqs = 7\n")
    engine = load_engine("vllm")
    limits = with_engine(load_workload(path), engine).engine
    assert limits.max_num_seqs == 7  # the workload's override
    assert limits.max_num_batched_tokens == engine.max_num_batched_tokens == 8192  # the engine's
    assert with_engine(load_workload("fixed"), engine).engine.max_num_seqs == engine.max_num_seqs


def test_engine_decides_where_the_fetch_starts_and_the_kv_budget():
    from engramsim.sim.run import simulate
    from engramsim.sim.tiers import Placement
    from tests.simkit import scenario

    sync = replace(load_engine("nano-vllm"), engram_fetch_start="engram-layer")
    assert not sync.prefetch and load_engine("vllm").prefetch
    small = replace(load_engine("nano-vllm"), memory_utilization=0.5)
    full = simulate(scenario(), [Placement("dram-copy")]).runs[0].kv_tokens_per_rank
    half = simulate(scenario(engine=small), [Placement("dram-copy")]).runs[0].kv_tokens_per_rank
    assert half < full


def test_kv_reads_of_a_shared_head_are_whole_on_every_rank():
    """A decode step dominated by KV reads: TP divides a GQA model's KV reads, but not those of
    a single shared KV head (read whole on every rank)."""
    from engramsim import costs

    gpu = replace(load_hardware("h200").gpu, allreduce_latency_s=0.0, layer_overhead_s=0.0)
    shape = costs.BatchShape(tokens=1, seqs=1, attn_pairs=0.0, kv_read_tokens=1e9, prefill=False)

    def layer_s(model, tp):
        bb = model.backbone
        step = costs.step_compute(gpu, bb, shape, tp, model.kv_bytes_per_token_per_rank(tp) / bb.n_layers)
        return step.moe_layer_s if bb.is_moe else step.dense_layer_s

    v41 = load_model("deepseek-v4.1-flash")
    assert layer_s(v41, 8) == pytest.approx(layer_s(v41, 1), rel=1e-2)  # only the weights shrink
    dense = load_model("dense-4b-engram100b")
    assert layer_s(dense, 2) == pytest.approx(layer_s(dense, 1) / 2, rel=1e-2)


def test_low_bit_dtypes_carry_their_block_scales():
    from engramsim.model import DTYPES

    assert DTYPES["fp4"].bytes_per_value == DTYPES["mxfp4"].bytes_per_value == 0.5 + 1 / 32
    assert DTYPES["nvfp4"].bytes_per_value == 0.5 + 1 / 16
    assert DTYPES["int4"].bytes_per_value == 0.5 + 2 / 128
    assert DTYPES["int2"].bytes_per_value == 0.25 + 2 / 128
    assert DTYPES["fp8-b32"].bytes_per_value == 1 + 1 / 1024
    assert DTYPES["fp8-b128"].bytes_per_value == 1 + 4 / 16384


def test_sglang_fraction_follows_its_static_reserve():
    """mem_fraction_static = 1 - (512 + 8192 x 1.5 + 256 x 2 + tp/8 x 1024) MiB / GPU memory,
    at least 10 GiB reserved above 60 GiB (SGLang server_args)."""
    eng, hbm = load_engine("sglang"), 143771 * MiB
    assert eng.memory_fraction(hbm, 8) == pytest.approx(1 - (512 + 12288 + 512 + 1024) / 143771)
    assert eng.memory_fraction(hbm, 1) == pytest.approx(1 - (512 + 12288 + 512 + 128) / 143771)
    small = replace(eng, max_num_batched_tokens=1024, max_capture_size=8)
    assert small.memory_fraction(hbm, 1) == pytest.approx(1 - 10240 / 143771)  # the 10 GiB floor
    assert replace(eng, memory_utilization=0.7).memory_fraction(hbm, 8) == 0.7
