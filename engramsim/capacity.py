"""Does it fit? The per-rank HBM plan an engine computes at startup: weights and the buffers
the model allocates with them, the Engram table shard or hot-row cache, the reserves beside them (activation peak of the profiling run,
CUDA-graph pool, non-torch allocations, sparse-attention indexer buffer, Engram staging and module) and
the KV cache from what is left. Moving the table off the GPU frees HBM for the KV cache, which
is how offloading can *raise* throughput. Host copies of an off-GPU table decide host DRAM."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from engramsim import costs
from engramsim.engine import EngineSpec
from engramsim.errors import UserError
from engramsim.hardware import Hardware
from engramsim.model import EngramSpec, ModelSpec
from engramsim.topology import socket_table_bytes
from engramsim.units import GiB, MiB

ACT_BYTES = 2  # bf16 activations
LOGIT_BYTES = 4  # fp32 logits of the sampler


@dataclass(frozen=True)
class Parallel:
    """One replica spans `tp` ranks; `dp` replicas; routed experts divided across `ep` ranks."""

    tp: int = 1
    dp: int = 1
    ep: int = 1

    @property
    def ranks(self) -> int:
        return self.tp * self.dp


def check_parallel(model: ModelSpec, par: Parallel, gpus: int) -> None:
    """One clear error for a layout the model or the machine cannot take."""
    bb = model.backbone
    if min(par.tp, par.dp, par.ep) < 1:
        raise UserError("--tp, --dp and --ep must be at least 1")
    if par.ranks > gpus:
        raise UserError(f"DP x TP = {par.dp} x {par.tp} = {par.ranks} ranks exceed the {gpus} GPUs")
    if bb.n_heads % par.tp:
        raise UserError(f"TP {par.tp} does not divide the model's {bb.n_heads} attention heads")
    if bb.n_kv_heads > 1 and bb.n_kv_heads % par.tp and par.tp % bb.n_kv_heads:
        raise UserError(f"TP {par.tp} and the model's {bb.n_kv_heads} KV heads must divide one another")
    if par.ep > 1:
        if not bb.is_moe:
            raise UserError(f"EP {par.ep} needs a mixture-of-experts model; {model.name} has no routed experts")
        if par.ep > bb.n_routed_experts:
            raise UserError(f"EP {par.ep} exceeds the model's {bb.n_routed_experts} routed experts")
        if bb.n_routed_experts % par.ep:
            raise UserError(f"EP {par.ep} does not divide the model's {bb.n_routed_experts} routed experts")
        if par.ranks % par.ep:
            raise UserError(f"EP {par.ep} does not divide the DP x TP = {par.ranks} ranks")
    elif bb.is_moe and bb.moe_intermediate_size % par.tp:
        raise UserError(
            f"TP {par.tp} does not divide the expert width {bb.moe_intermediate_size} "
            "(use --ep to divide whole experts instead)"
        )


def activation_bytes(model: ModelSpec, engine: EngineSpec, tp: int) -> float:
    """Peak activations of the profiling run at max_num_batched_tokens plus the sampler's
    logits for max_num_seqs rows (coefficients: the engine preset)."""
    bb = model.backbone
    mlp = max(bb.intermediate_size, bb.moe_intermediate_size * max(1, bb.n_active_experts))
    per_token = (engine.act_hidden_copies * bb.hc_mult * bb.hidden_size + engine.act_mlp_copies * mlp / tp) * ACT_BYTES
    logits = engine.max_num_seqs * bb.vocab_size * LOGIT_BYTES / tp
    return engine.max_num_batched_tokens * per_token + logits


def indexer_bytes(model: ModelSpec, engine: EngineSpec, max_model_len: int) -> float:
    """The lightning indexer's logits buffer [max_num_batched_tokens, max_model_len], whole on
    every rank, when the engine's profiling run reserves it."""
    if not (model.kv and model.kv.has_indexer and engine.reserves_indexer_logits):
        return 0.0
    return engine.max_num_batched_tokens * max_model_len * model.kv.index_logit_bytes


def model_buffer_bytes(model: ModelSpec, engine: EngineSpec) -> float:
    """Persistent buffers the model allocates when it is built, which the engine's load step
    counts with the weights: the hidden-state stream handed to the MTP/draft layers,
    [max_num_batched_tokens, hc_mult x hidden] bf16, when the model carries draft layers (vLLM
    DeepSeek-V4.1 `DeepseekV4Model._mtp_hidden_buffer`)."""
    bb = model.backbone
    if not bb.n_mtp_layers:
        return 0.0
    return engine.max_num_batched_tokens * bb.hc_mult * bb.hidden_size * ACT_BYTES


def staging_bytes(spec: EngramSpec | None, engine: EngineSpec, tp: int) -> float:
    """Device buffers that receive one step's Engram rows for every Engram layer: this rank's
    hash heads (divided across TP), dequantized to bf16 (vLLM DeepSeek-V4.1 `Engram._init_staging`:
    [max_num_batched_tokens, heads / TP, head dim] bf16 per Engram layer)."""
    if spec is None:
        return 0.0
    heads = math.ceil(spec.heads_per_layer / tp)
    head_dim = spec.n_embed_per_ngram // spec.n_head_per_ngram
    values = engine.max_num_batched_tokens * heads * head_dim * len(spec.layer_ids)
    return engine.engram_staging_buffers * values * ACT_BYTES


def engram_module_bytes(model: ModelSpec, engine: EngineSpec, tp: int) -> float:
    """What the Engram modules add to the peak that sizes the KV cache (nano-vLLM
    `allocate_kv_cache`: usable - peak allocated): their weights, and their activations at
    max_num_batched_tokens where they rise above the backbone's peak. Live at the module's
    peak: the residual stream and hidden state (hc x hidden each), the memory vector, and ~4
    hc x hidden temporaries (key, normed key and query, value)."""
    bb, spec = model.backbone, model.engram
    if spec is None:
        return 0.0
    weights = len(spec.layer_ids) * costs.engram_module_params(bb, spec) * bb.weight_bytes_per_param / tp
    module_peak = engine.max_num_batched_tokens * (spec.memory_dim + 6 * bb.hc_mult * bb.hidden_size) * ACT_BYTES / tp
    return weights + max(0.0, module_peak - activation_bytes(model, engine, tp))


def table_shard(spec: EngramSpec, tp: int) -> tuple[float, str]:
    """Bytes of the Engram tables one TP rank holds, and how they are split.

    By head: each layer has (orders x heads) separate tables; rank r holds tables r, r+tp, ...
    (the largest share counts). Row-wise when ranks outnumber tables or do not divide them."""
    tables = [v for v in spec.engram_vocab_size for _ in range(spec.n_head_per_ngram)]
    scale = spec.table_bytes / (sum(tables) * len(spec.layer_ids) * spec.row_bytes)
    if tp <= len(tables) and len(tables) % tp == 0:
        largest = max(sum(tables[r::tp]) for r in range(tp))
        return largest * len(spec.layer_ids) * spec.row_bytes * scale, "head"
    return math.ceil(spec.table_bytes / tp), "row"


def engram_shard_ranks(hw: Hardware, engine: EngineSpec, par: Parallel) -> int:
    """The ranks one table set is split between: a replica's TP ranks, or with DP sharding
    every rank of the node's replicas."""
    if not engine.engram_dp_sharding:
        return par.tp
    return max(par.tp, min(hw.gpus_per_host, par.ranks))


def host_copies_per_node(hw: Hardware, engine: EngineSpec, par: Parallel) -> int:
    """Copies of an off-GPU table in one node's memory (the engines' shared-memory options)."""
    if engine.host_copies == "per-node" or engine.engram_dp_sharding:
        return 1
    if engine.host_copies == "per-numa":
        return hw.host.numa_nodes
    ranks_on_node = min(hw.gpus_per_host, par.ranks)
    return max(1, ranks_on_node // par.tp)


@dataclass(frozen=True)
class MemoryPlan:
    tier: str
    fits: bool
    usable_GiB: float
    per_rank_GiB: dict
    kv_tokens_per_rank: int
    kv_blocks_per_rank: int
    max_concurrency: int
    context_tokens: int
    host_GiB_per_node: float
    # What vLLM logs as "Available KV cache memory": negative when the reserves do not fit.
    kv_budget_GiB: float = 0.0
    table_split: str = ""
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "tier": self.tier,
            "fits": self.fits,
            "usable_GiB": self.usable_GiB,
            "per_rank_GiB": dict(self.per_rank_GiB),
            "kv_tokens_per_rank": self.kv_tokens_per_rank,
            "max_concurrency": self.max_concurrency,
            "context_tokens": self.context_tokens,
            "host_GiB_per_node": self.host_GiB_per_node,
            "kv_budget_GiB": self.kv_budget_GiB,
            "table_split": self.table_split,
            "problems": list(self.problems),
        }


def plan_memory(
    hw: Hardware,
    model: ModelSpec,
    engine: EngineSpec,
    par: Parallel,
    tier_memory: str | None,
    hbm_cache_bytes: float = 0.0,
    dram_cache_bytes: float = 0.0,
    context_tokens: int = 0,
    max_model_len: int = 0,
) -> MemoryPlan:
    """`tier_memory` is where the table lives (hbm, dram, cxl, ssd), or None for no Engram.
    `context_tokens`: the sequence length concurrency is counted at; `max_model_len`: the
    server's limit (default: the model's, else the context)."""
    max_model_len = max_model_len or model.backbone.max_model_len or context_tokens
    spec = model.engram if tier_memory else None
    table, split = (
        table_shard(spec, engram_shard_ranks(hw, engine, par)) if spec and tier_memory == "hbm" else (0.0, "")
    )
    reserves = {
        "weights": model.weight_bytes_per_rank(par.tp, par.ep, engine.moe_intermediate_align),
        "model_buffers": model_buffer_bytes(model, engine),
        "engram_table": table,
        "hot_cache": hbm_cache_bytes if spec and tier_memory != "hbm" else 0.0,
        # One pool: the SSD tier's "DRAM" row cache takes the memory the KV cache would.
        "row_cache": dram_cache_bytes if hw.unified else 0.0,
        "activations": activation_bytes(model, engine, par.tp),
        "cuda_graphs": engine.max_capture_size * engine.cuda_graph_MiB_per_token * MiB,
        "non_torch": engine.non_torch_GiB * GiB,
        "indexer": indexer_bytes(model, engine, max_model_len),
        "engram_staging": staging_bytes(spec, engine, par.tp),
        "engram_module": engram_module_bytes(model, engine, par.tp) if spec else 0.0,
    }
    device = hw.gpu.hbm_bytes - (hw.os.reserved_bytes if hw.unified and hw.os else 0.0)
    usable = device * engine.memory_fraction(device, par.tp)
    kv = usable - sum(reserves.values())
    per_token = model.kv_bytes_per_token_per_rank(par.tp)
    block = engine.block_size_tokens
    blocks = max(0, int(kv // (per_token * block)))
    kv_tokens = blocks * block
    per_seq = context_tokens * per_token + model.kv_bytes_per_seq_per_rank()
    concurrency = max(0, int(kv // per_seq)) if context_tokens else 0
    copies = host_copies_per_node(hw, engine, par)
    host = spec.table_bytes * copies if spec and tier_memory == "dram" else 0.0
    problems = _hbm_problems(usable, reserves, kv, kv_tokens, context_tokens)
    # A remote store (rdma) holds one copy that every replica addresses.
    stored = spec.table_bytes * (1 if tier_memory == "rdma" else copies) if spec else 0.0
    problems += _table_capacity_problems(hw, stored, tier_memory)
    if dram_cache_bytes + host > hw.host.dram_bytes and not hw.unified:
        problems.append(
            f"DRAM: {(dram_cache_bytes + host) / GiB:.1f} GiB of tables and caches per node > "
            f"{hw.host.dram_bytes / GiB:.1f} GiB of DRAM"
        )
    per_rank = {k: v / GiB for k, v in reserves.items()} | {"kv": max(kv, 0.0) / GiB}
    return MemoryPlan(
        tier_memory or "none",
        not problems,
        usable / GiB,
        per_rank,
        kv_tokens,
        blocks,
        concurrency,
        context_tokens,
        host / GiB,
        kv / GiB,
        split,
        tuple(problems),
    )


def _hbm_problems(usable: float, reserves: dict, kv: float, kv_tokens: int, context_tokens: int) -> list[str]:
    if kv_tokens >= max(context_tokens, 1):
        return []
    parts = " - ".join(f"{k} {v / GiB:.1f}" for k, v in reserves.items() if v)
    return [
        f"HBM: {usable / GiB:.1f} GiB usable per rank - {parts} leaves {kv / GiB:.1f} GiB: KV for "
        f"{kv_tokens} tokens < one {context_tokens}-token sequence"
    ]


def _table_capacity_problems(hw: Hardware, table: float, tier_memory: str | None) -> list[str]:
    if not table or tier_memory in (None, "hbm", "dram"):  # dram: checked with the DRAM caches
        return []
    capacity = {
        "dram": hw.host.dram_bytes,
        "cxl": hw.cxl.devices * hw.cxl.device_bytes if hw.cxl else 0.0,
        "ssd": hw.ssd.devices * hw.ssd.device_bytes if hw.ssd else 0.0,
        "rdma": hw.rdma.remote_hosts * hw.rdma.remote_host_bytes if hw.rdma else 0.0,
    }[tier_memory]
    if capacity == 0:
        return [f"{tier_memory.upper()}: this hardware has no {tier_memory} tier"]
    if table > capacity:
        return [
            f"{tier_memory.upper()}: table copies {table / GiB:.1f} GiB > {capacity / GiB:.1f} GiB of {tier_memory}"
        ]
    return []


def with_socket_checks(
    plan: MemoryPlan, hw: Hardware, table: float, tier_memory: str | None, layout: str, copies: int = 1
) -> MemoryPlan:
    """A host-DRAM table must fit each socket's DRAM under its NUMA layout: one full copy per
    socket (per-numa), a 1/sockets share of one copy (interleave), or all of it on socket 0,
    for each of the `copies` that replicas keep of their own."""
    if tier_memory not in ("dram", "ssd") or not table:
        return plan
    topo = hw.topo
    if tier_memory == "ssd" or topo.sockets == 1:
        return plan
    problems = [
        f"DRAM: socket {s} holds {need / GiB:.1f} GiB of the table ({layout}) > its {have:.1f} GiB"
        for s, (need, have) in enumerate(zip(socket_table_bytes(topo, layout, table, copies), topo.socket_dram_GiB))
        if need > have * GiB
    ]
    if not problems:
        return plan
    return replace(plan, fits=False, problems=plan.problems + tuple(problems))
