"""Engine presets (engines/*.toml): how a serving engine schedules, how much HBM it lets itself
use, what it reserves beside weights and KV cache, and where its Engram fetch starts.

Every reserve is a formula of the model, the parallel layout and the engine's settings; the
coefficients live in the preset with their sources. `EngineSpec.limits()` gives the scheduler
limits the simulator runs with (a workload may override them in its [engine] table).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from engramsim.errors import UserError
from engramsim.iopolicy import IOPolicy, io_policy_from_table
from engramsim.presets import build, load_toml, resolve, spec
from engramsim.units import GiB, MiB
from engramsim.workload import Engine

SCHEDULING = ("whole-prompt", "chunked")
FETCH_STARTS = ("forward-entry", "engram-layer")
HOST_COPIES = ("per-node", "per-numa", "per-replica")


@dataclass(frozen=True)
class EngineSpec:
    name: str = spec("name", kind=str)
    # whole-prompt: a prefill step takes whole prompts (nano-vLLM); chunked: prompts are split
    # into chunks that share a step with decodes (vLLM V1, SGLang).
    scheduling: str = spec("scheduling", kind=str)
    max_num_seqs: int = spec("max_num_seqs", kind=int, hi=1e6)
    max_num_batched_tokens: int = spec("max_num_batched_tokens", kind=int, hi=1e7)
    block_size_tokens: int = spec("block_size_tokens", kind=int, hi=1e5)
    # Activation peak of the profiling (warm-up) run at max_num_batched_tokens, per token:
    # `act_hidden_copies` live copies of the (hc_mult x hidden) residual stream, replicated on
    # every rank, plus `act_mlp_copies` of the TP-sharded MLP width (top-k x expert width for
    # MoE), all bf16; plus fp32 logits for max_num_seqs rows of the vocabulary shard.
    act_hidden_copies: float = spec("act_hidden_copies", lo=0, lo_open=False, hi=100)
    act_mlp_copies: float = spec("act_mlp_copies", lo=0, lo_open=False, hi=100)
    # CUDA-graph pool: graphs captured up to this batch size (tokens), each captured token
    # costing `cuda_graph_MiB_per_token` of private pool (0: graphs fit the slack left by
    # memory_utilization and are not subtracted from the KV budget).
    max_capture_size: int = spec("max_capture_size", lo=0, lo_open=False, kind=int, hi=1e5, default=0)
    cuda_graph_MiB_per_token: float = spec("cuda_graph_MiB_per_token", lo=0, lo_open=False, hi=1e4, default=0.0)
    # The MoE kernel pads each rank's slice of the expert intermediate width up to a multiple of
    # this (vLLM's MXFP4 Marlin and FlashInfer-CUTLASS paths: 128; 1 = no padding).
    moe_intermediate_align: int = spec("moe_intermediate_align", lo=1, lo_open=False, kind=int, hi=4096, default=1)
    # Allocations outside the torch allocator: CUDA context, NCCL and cuBLAS workspaces.
    non_torch_GiB: float = spec("non_torch_GiB", lo=0, lo_open=False, hi=100, default=0.0)
    # Share of device memory the engine may use (vLLM gpu_memory_utilization, SGLang
    # mem_fraction_static): weights, reserves and KV cache all come out of it. 0: derived from
    # the static reserve below (SGLang's default).
    memory_utilization: float = spec("memory_utilization", lo=0, lo_open=False, hi=1.0, default=0.0)
    # SGLang-style static reserve, in MiB, left outside the memory fraction for activations and
    # graphs: base + per chunked-prefill token (at least `reserve_min_chunk_tokens`) + per
    # CUDA-graph batch entry + per TP rank / 8, floored at `reserve_floor_GiB` on GPUs with more
    # than `reserve_floor_above_GiB`.
    reserve_base_MiB: float = spec("reserve_base_MiB", lo=0, lo_open=False, hi=1e6, default=0.0)
    reserve_MiB_per_chunk_token: float = spec("reserve_MiB_per_chunk_token", lo=0, lo_open=False, hi=100, default=0.0)
    reserve_min_chunk_tokens: int = spec("reserve_min_chunk_tokens", lo=0, lo_open=False, kind=int, hi=1e7, default=0)
    reserve_MiB_per_graph_seq: float = spec("reserve_MiB_per_graph_seq", lo=0, lo_open=False, hi=1000, default=0.0)
    reserve_MiB_per_8_ranks: float = spec("reserve_MiB_per_8_ranks", lo=0, lo_open=False, hi=1e6, default=0.0)
    reserve_floor_GiB: float = spec("reserve_floor_GiB", lo=0, lo_open=False, hi=1000, default=0.0)
    reserve_floor_above_GiB: float = spec("reserve_floor_above_GiB", lo=0, lo_open=False, hi=1e4, default=0.0)
    # Does the profiling run allocate the sparse-attention indexer's logits buffer
    # [max_num_batched_tokens, max_model_len], so that the KV budget leaves room for it?
    reserves_indexer_logits: bool = spec("reserves_indexer_logits", kind=bool, default=True)
    # Engram rows of one step land in device buffers: max_num_batched_tokens x rows per token x
    # row bytes x Engram layers, times this many buffers (0: rows are consumed in place).
    engram_staging_buffers: int = spec("engram_staging_buffers", lo=0, lo_open=False, kind=int, hi=16, default=1)
    # forward-entry: the Engram fetch is issued on a side stream when the forward starts and
    # overlaps the layers before the Engram layer; engram-layer: fetched synchronously there.
    engram_fetch_start: str = spec("engram_fetch_start", kind=str, default="forward-entry")
    # Host copies of an off-GPU table: one per node, one per NUMA node, or one per replica.
    host_copies: str = spec("host_copies", kind=str, default="per-replica")
    # The node's DP replicas split one table set between all their ranks (vLLM's Engram DP
    # sharding: "Engram tables are sharded over 8 ranks (TP=1 x DP=8)"), so a rank holds
    # 1/(TP x local DP) of it and the node one copy. The per-step exchange of hash ids and rows
    # between the replicas is not modelled.
    engram_dp_sharding: bool = spec("engram_dp_sharding", kind=bool, default=False)
    max_prefill_seqs: int = spec("max_prefill_seqs", lo=0, lo_open=False, kind=int, hi=1e6, default=0)
    prefill_lookahead: bool = spec("prefill_lookahead", kind=bool, default=True)
    description: str = spec("description", kind=str, default="")
    # How the engine reads rows from SSD (the preset's [io] table; engramsim.iopolicy).
    io: IOPolicy = IOPolicy()
    source: Path | None = None
    # How steps run and what they cost on the host (CUDA graphs, async scheduling, host work per
    # step, sequence and token, launches): the preset's keys that `workload.Engine` defines.
    steps: Engine = field(default_factory=Engine)

    def __post_init__(self):
        if not (self.memory_utilization or self.reserve_base_MiB):
            raise UserError(f"engine {self.name}: give memory_utilization, or a static reserve (reserve_base_MiB ...)")
        for key, allowed in (
            ("scheduling", SCHEDULING),
            ("engram_fetch_start", FETCH_STARTS),
            ("host_copies", HOST_COPIES),
        ):
            if getattr(self, key) not in allowed:
                raise UserError(
                    f"engine {self.name}: {key} must be one of {', '.join(allowed)}, got '{getattr(self, key)}'"
                )

    def memory_fraction(self, hbm_bytes: float, tp: int) -> float:
        """The share of device memory for weights, reserves and KV: the preset's, or one minus
        the static reserve (SGLang server_args `_handle_gpu_memory_settings`)."""
        if self.memory_utilization:
            return self.memory_utilization
        reserve = (
            self.reserve_base_MiB
            + max(self.max_num_batched_tokens, self.reserve_min_chunk_tokens) * self.reserve_MiB_per_chunk_token
            + self.max_capture_size * self.reserve_MiB_per_graph_seq
            + tp / 8 * self.reserve_MiB_per_8_ranks
        ) * MiB
        if hbm_bytes > self.reserve_floor_above_GiB * GiB:
            reserve = max(reserve, self.reserve_floor_GiB * GiB)
        return max(0.0, 1.0 - reserve / hbm_bytes)

    @property
    def prefetch(self) -> bool:
        return self.engram_fetch_start == "forward-entry" and self.io.prefetch

    def limits(self, overrides: dict | None = None) -> Engine:
        """The scheduler limits, with a workload's [engine] overrides applied."""
        base = replace(
            self.steps,
            max_num_seqs=self.max_num_seqs,
            max_num_batched_tokens=self.max_num_batched_tokens,
            kv_block_tokens=self.block_size_tokens,
            prefetch=self.prefetch,
            max_prefill_seqs=self.max_prefill_seqs,
            prefill_lookahead=self.prefill_lookahead,
            chunked_prefill=self.scheduling == "chunked",
        )
        return replace(base, **(overrides or {}))

    def with_overrides(self, **changes) -> EngineSpec:
        """Command-line overrides (None = keep the preset's value)."""
        known = {f.name for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None and k in known})


def load_engine(name_or_path: str | Path) -> EngineSpec:
    path = resolve("engine", name_or_path)
    data = load_toml(path)
    data.setdefault("name", path.stem)
    return engine_from_dict(data, str(path), path)


def engine_from_dict(data: dict, where: str, path: Path | None = None) -> EngineSpec:
    """An engine preset from its TOML table: the keys of `workload.Engine` (how steps run and
    their host costs) and the [fitted_step_host_us] table go to `steps`, the rest to EngineSpec."""
    data = dict(data)
    io = io_policy_from_table(data.pop("io", {}), where)
    fitted = fitted_step_host(data.pop("fitted_step_host_us", {}), f"{where} [fitted_step_host_us]")
    own = {f.metadata["key"] for f in fields(EngineSpec) if "key" in f.metadata}
    step_keys = {f.metadata["key"] for f in fields(Engine) if "key" in f.metadata} - own
    steps = {k: data.pop(k) for k in list(data) if k in step_keys}
    try:
        steps = replace(build(Engine, steps, where), fitted_step_host_s=fitted)
        return replace(build(EngineSpec, data, where), source=path, steps=steps, io=io)
    except UserError as e:
        msg = str(e)
        raise UserError(msg if msg.startswith(where) else f"{where}: {msg}") from None


def fitted_step_host(table, where: str) -> tuple:
    """(model, seconds) pairs from a table of model name = microseconds."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table of model name = microseconds")
    for model, us in table.items():
        if isinstance(us, bool) or not isinstance(us, (int, float)) or not 0 <= us < 1e6:
            raise UserError(f"{where}: '{model}' must be a number of microseconds in [0, 1e6), got {us!r}")
    return tuple(sorted((model, us * 1e-6) for model, us in table.items()))
