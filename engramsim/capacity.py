"""Does it fit? HBM holds weights, activations, the KV cache and any HBM-resident Engram rows;
host DRAM, CXL or SSD hold the table otherwise. Moving the table off the GPU frees HBM for the
KV cache, which is how offloading can *raise* throughput."""
from __future__ import annotations

from dataclasses import dataclass, field

from engramsim.hardware import Hardware
from engramsim.model import ModelSpec
from engramsim.workload import Workload

GiB = 2.0**30


@dataclass(frozen=True)
class MemoryPlan:
    fits: bool
    kv_tokens_per_replica: int
    kv_blocks_per_replica: int
    hbm_GiB: dict = field(default_factory=dict)   # per GPU: usable, weights, table, cache, activations, kv
    problems: tuple[str, ...] = ()


def activation_bytes(model: ModelSpec, workload: Workload, tp: int) -> float:
    """Peak activations of the largest prefill plus the logits of a full decode batch, which
    nano-vLLM reserves by a warm-up pass (estimate: hidden + 2 x MLP width per token, bf16)."""
    bb, eng = model.backbone, workload.engine
    mlp = max(bb.intermediate_size, bb.moe_intermediate_size * max(1, bb.n_active_experts))
    per_token = (4 * bb.hidden_size + 2 * mlp) * 2 / tp
    logits = eng.max_num_seqs * bb.vocab_size * 4 / tp
    return eng.max_num_batched_tokens * per_token + logits


def kv_bytes_per_token_per_gpu(model: ModelSpec, tp: int) -> float:
    bb = model.backbone
    # GQA shards KV heads across ranks; an MLA latent is replicated on every rank.
    shards = 1 if bb.kv_lora_rank else min(tp, bb.n_kv_heads)
    return bb.kv_bytes_per_token / shards


def plan_memory(hw: Hardware, model: ModelSpec, workload: Workload, tp: int,
                tier_memory: str | None, hbm_cache_bytes: float, dram_cache_bytes: float = 0.0) -> MemoryPlan:
    """`tier_memory` is where the table lives (hbm, dram, cxl, ssd), or None for no Engram."""
    problems = []
    usable = hw.gpu.hbm_bytes * hw.gpu.memory_utilization
    weights = model.backbone.weight_bytes / tp
    table = model.engram.table_bytes if model.engram and tier_memory else 0.0
    on_gpu_table = table / tp if tier_memory == "hbm" else 0.0
    cache = hbm_cache_bytes if tier_memory and tier_memory != "hbm" else 0.0
    acts = activation_bytes(model, workload, tp)
    kv_free = usable - weights - on_gpu_table - cache - acts
    per_token = kv_bytes_per_token_per_gpu(model, tp)
    block = workload.engine.kv_block_tokens
    blocks = max(0, int(kv_free // (per_token * block)))
    kv_tokens = blocks * block
    if kv_tokens < workload.max_seq_len:
        problems.append(f"HBM: {usable / GiB:.1f} GiB usable per GPU - weights {weights / GiB:.1f} - "
                        f"table {on_gpu_table / GiB:.1f} - cache {cache / GiB:.1f} - activations {acts / GiB:.1f} "
                        f"leaves KV for {kv_tokens} tokens < one {workload.max_seq_len}-token sequence")
    problems += _table_capacity_problems(hw, table, tier_memory)
    if dram_cache_bytes > hw.host.dram_bytes:
        problems.append(f"DRAM: hot-row cache {dram_cache_bytes / GiB:.1f} GiB > {hw.host.dram_bytes / GiB:.1f} GiB of DRAM")
    hbm = {"usable": usable / GiB, "weights": weights / GiB, "table": on_gpu_table / GiB,
           "cache": cache / GiB, "activations": acts / GiB, "kv": max(kv_free, 0) / GiB}
    return MemoryPlan(not problems, kv_tokens, blocks, hbm, tuple(problems))


def _table_capacity_problems(hw: Hardware, table: float, tier_memory: str | None) -> list[str]:
    if not table or tier_memory in (None, "hbm"):
        return []
    capacity = {"dram": hw.host.dram_bytes,
                "cxl": hw.cxl.devices * hw.cxl.device_bytes if hw.cxl else 0.0,
                "ssd": hw.ssd.devices * hw.ssd.device_bytes if hw.ssd else 0.0}[tier_memory]
    if capacity == 0:
        return [f"{tier_memory.upper()}: this hardware has no {tier_memory} tier"]
    if table > capacity:
        return [f"{tier_memory.upper()}: table {table / GiB:.1f} GiB > {capacity / GiB:.1f} GiB of {tier_memory}"]
    return []
