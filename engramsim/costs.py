"""Pure cost functions: how long a piece of work takes on given hardware.

Nothing here knows about time passing or about other work running; the simulator composes
these numbers and the shared-resource model (engramsim.sim.flows) divides bandwidth. Every
function takes all it needs as arguments and returns seconds, bytes, or a small breakdown.
"""
from __future__ import annotations

import math
from collections.abc import Sequence, Sized
from dataclasses import dataclass

from engramsim.errors import UserError
from engramsim.hardware import GPU, SSD, Host, Link
from engramsim.model import Backbone, EngramSpec

CACHE_LINE_BYTES = 64
GPU_SECTOR_BYTES = 32


def roofline_s(gpu: GPU, flops: float, hbm_bytes: float) -> float:
    """A kernel is bound by whichever of math or memory takes longer at achievable rates."""
    return max(flops / (gpu.bf16_flops * gpu.matmul_efficiency),
               hbm_bytes / (gpu.hbm_bw_Bps * gpu.hbm_efficiency))


@dataclass(frozen=True)
class BatchShape:
    """What one engine step computes: `tokens` new tokens for `seqs` sequences, attending over
    `attn_pairs` (query, key) pairs and reading `kv_read_tokens` cached tokens per layer."""
    tokens: int
    seqs: int
    attn_pairs: float
    kv_read_tokens: float
    prefill: bool


def batch_shape(seqs: Sequence[Sized], prefill: bool) -> BatchShape:
    """The shape of one step over `seqs` (each one's len() is its tokens so far): a prefill
    step computes every prompt token with causal attention; a decode step one token per
    sequence, attending over and reading its whole context."""
    lens = [len(q) for q in seqs]
    if prefill:
        return BatchShape(tokens=sum(lens), seqs=len(lens), attn_pairs=sum(n * (n + 1) / 2 for n in lens),
                          kv_read_tokens=0.0, prefill=True)
    context = sum(lens)
    return BatchShape(tokens=len(lens), seqs=len(lens), attn_pairs=context, kv_read_tokens=context, prefill=False)


def experts_touched(n_experts: int, n_active: int, tokens: int) -> float:
    """Expected distinct routed experts hit by `tokens` tokens choosing `n_active` each
    (uniform routing): the weights a MoE layer must read from HBM."""
    if n_experts == 0:
        return 0.0
    return n_experts * -math.expm1(tokens * math.log1p(-n_active / n_experts))


@dataclass(frozen=True)
class StepCompute:
    """Per-layer compute times of one step on one GPU of a `tp`-way tensor-parallel replica."""
    dense_layer_s: float
    moe_layer_s: float
    head_s: float

    def layers_s(self, bb: Backbone, start: int, stop: int) -> float:
        """Compute time of layers [start, stop)."""
        dense = max(0, min(stop, bb.n_dense_layers) - start) if bb.is_moe else stop - start
        return dense * self.dense_layer_s + (stop - start - dense) * self.moe_layer_s


def step_compute(gpu: GPU, bb: Backbone, shape: BatchShape, tp: int,
                 kv_layer_bytes_per_rank: float | None = None) -> StepCompute:
    """`kv_layer_bytes_per_rank`: one token's KV at one layer as one rank stores and reads it
    (default: the backbone's uniform layout; a shared KV head or MLA latent is read whole on
    every rank, never divided by TP)."""
    wb = bb.weight_bytes_per_param
    if kv_layer_bytes_per_rank is None:
        kv_layer_bytes_per_rank = bb.kv_bytes_per_token_per_layer / bb.kv_shards(tp)
    attn_flops = 4.0 * bb.n_heads * bb.attn_dim * shape.attn_pairs
    kv_bytes_per_rank = (shape.kv_read_tokens + shape.tokens) * kv_layer_bytes_per_rank

    comm = 2 * allreduce_s(gpu, shape.tokens * bb.hidden_size * 2, tp)  # after attention and MLP

    def layer_s(mlp_active_params: float, mlp_read_bytes: float) -> float:
        flops = 2.0 * shape.tokens * (bb.attn_params + mlp_active_params) + attn_flops
        weights = bb.attn_params * wb + mlp_read_bytes
        return gpu.layer_overhead_s + roofline_s(gpu, flops / tp, weights / tp + kv_bytes_per_rank) + comm

    dense = layer_s(bb.dense_mlp_params, bb.dense_mlp_params * wb) if bb.n_dense_layers else 0.0
    moe = 0.0
    if bb.is_moe:
        shared = bb.n_shared_experts * bb.expert_params
        active = shared + bb.n_active_experts * bb.expert_params
        touched = experts_touched(bb.n_routed_experts, bb.n_active_experts, shape.tokens) * bb.expert_params
        moe = layer_s(active, shared * wb + touched * bb.expert_bytes_per_param)
    # The LM head runs only on the last position of each sequence.
    head = roofline_s(gpu, 2.0 * shape.seqs * bb.hidden_size * bb.vocab_size / tp,
                      bb.hidden_size * bb.vocab_size * wb / tp)
    return StepCompute(dense, moe, head)


def allreduce_s(gpu: GPU, nbytes: float, tp: int) -> float:
    """A ring all-reduce of `nbytes` across `tp` GPUs: each sends 2 (tp-1)/tp of the data."""
    if tp <= 1:
        return 0.0
    if gpu.nvlink_Bps <= 0:
        raise UserError(f"{gpu.name}: tensor parallelism needs nvlink_GBps in the hardware preset")
    return gpu.allreduce_latency_s + 2 * (tp - 1) / tp * nbytes / gpu.nvlink_Bps


def engram_module_s(gpu: GPU, bb: Backbone, spec: EngramSpec, tokens: int, tp: int) -> float:
    """The Engram fusion at one layer (deepseek-ai/Engram `Engram.forward`): one value and
    `hc_mult` key projections of the memory vector to the hidden size, the RMSNorm'd scalar
    gates, and the depthwise causal convolution over hc_mult x hidden channels."""
    hc = bb.hc_mult
    params = (1 + hc) * spec.memory_dim * bb.hidden_size + spec.kernel_size * hc * bb.hidden_size
    flops = 2.0 * tokens * params
    # Activations: the memory vector in, and ~6 passes over tokens x hc x hidden (norms, gate, conv).
    hbm = params * bb.weight_bytes_per_param + tokens * (spec.memory_dim + 6 * hc * bb.hidden_size) * 2
    fixed = gpu.engram_module_overhead_s + tokens * gpu.engram_module_s_per_token
    return fixed + gpu.kernel_launch_s + roofline_s(gpu, flops / tp, hbm / tp)


def hbm_gather_s(gpu: GPU, rows: float, row_bytes: int) -> float:
    """Gather `rows` random rows from an HBM-resident table: whole 32-byte sectors move."""
    moved = rows * math.ceil(row_bytes / GPU_SECTOR_BYTES) * GPU_SECTOR_BYTES
    return gpu.kernel_launch_s + moved / (gpu.hbm_bw_Bps * gpu.gather_efficiency)


def lines_per_row_bytes(row_bytes: int) -> float:
    """DRAM bytes a CPU or device read of one random row really moves (whole cache lines)."""
    return math.ceil(row_bytes / CACHE_LINE_BYTES) * CACHE_LINE_BYTES / row_bytes


def zero_copy_wire_factor(link: Link, row_bytes: int) -> float:
    """Link bytes per useful byte for zero-copy row reads, relative to a bulk DMA copy.

    Each row is split into read requests of `read_request_bytes`, each completion carrying
    packet overhead; a bulk copy (which achieves `h2d_Bps`) uses full-size packets too, so the
    ratio of the two overheads is what zero-copy loses on the wire.
    """
    req = link.read_request_bytes
    per_row = math.ceil(row_bytes / req) * link.packet_overhead_bytes + math.ceil(row_bytes / GPU_SECTOR_BYTES) * GPU_SECTOR_BYTES
    bulk = (req + link.packet_overhead_bytes) / req
    return per_row / row_bytes / bulk


def zero_copy_cap_Bps(link: Link, row_bytes: int, extra_latency_s: float = 0.0) -> float:
    """Little's law: outstanding reads x payload / round trip caps one GPU's zero-copy rate."""
    in_flight_bytes = link.max_outstanding_reads * min(row_bytes, link.read_request_bytes)
    return in_flight_bytes / (link.read_round_trip_s + extra_latency_s)


def cpu_gather_rows_per_s(host: Host, latency_s: float) -> float:
    """Rows one CPU thread gathers per second from memory of the given latency."""
    return host.gather_mlp / latency_s


def hash_s(host: Host, tokens: int, engram_layers: int) -> float:
    """One hash call per Engram layer: a fixed cost plus a cost per token."""
    return engram_layers * (host.hash_call_s + tokens * host.hash_s_per_token)


# --- the ssd tier and its DRAM cache ---------------------------------------------------------

def ssd_iops(ssd: SSD) -> float:
    """Random reads per second of a host's SSDs: each device is bounded both by its rated IOPS
    and by the reads its queue keeps in flight over one read latency (Little's law)."""
    return ssd.devices * min(ssd.read_iops, ssd.queue_depth / ssd.latency_s)


def ssd_bw_Bps(ssd: SSD) -> float:
    """Sequential read bandwidth of a host's SSDs."""
    return ssd.devices * ssd.read_bw_Bps


@dataclass(frozen=True)
class PageRead:
    """What reading one row from SSD loads: rows are far smaller than a page and random, so
    every missing row costs one whole-page read, which lands in host DRAM."""
    ops: float
    ssd_bytes: float
    dram_bytes: float


def ssd_row_read(ssd: SSD) -> PageRead:
    return PageRead(ops=1.0, ssd_bytes=float(ssd.page_bytes), dram_bytes=float(ssd.page_bytes))


def dram_cache_hit_rate(hbm_hit: float, both_hit: float) -> float:
    """Of the rows an HBM hot-row cache misses, the share a DRAM cache behind it holds. The
    DRAM cache keeps the rows ranked just after the HBM cache's, so the two together hit as one
    cache of both sizes would (`both_hit`)."""
    return (both_hit - hbm_hit) / (1 - hbm_hit) if hbm_hit < 1 else 0.0
