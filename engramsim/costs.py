"""Pure cost functions: how long a piece of work takes on given hardware.

Nothing here knows about time passing or about other work running; the simulator composes
these numbers and the shared-resource model (engramsim.sim.flows) divides bandwidth. Every
function takes all it needs as arguments and returns seconds, bytes, or a small breakdown.
"""

from __future__ import annotations

import math
from collections.abc import Sequence, Sized
from dataclasses import dataclass

import numpy as np

from engramsim.errors import UserError
from engramsim.hardware import GPU, SSD, Host, Link
from engramsim.model import Backbone, EngramSpec
from engramsim.topology import RDMA, Topology, table_sockets

CACHE_LINE_BYTES = 64
GPU_SECTOR_BYTES = 32


def roofline_s(gpu: GPU, flops: float, hbm_bytes: float) -> float:
    """A kernel is bound by whichever of math or memory takes longer at achievable rates."""
    return max(flops / (gpu.bf16_flops * gpu.matmul_efficiency), hbm_bytes / (gpu.hbm_bw_Bps * gpu.hbm_efficiency))


def matmul_s(gpu: GPU, rows: float, flops: float, weight_bytes: float, other_bytes: float = 0.0) -> float:
    """A matmul of `rows` rows against `weight_bytes` of weights (plus `other_bytes` read
    alongside): the roofline, or, for a CPU BLAS at up to `gpu.gemv_max_rows` rows, one
    matrix-vector product per row, each streaming all the weights; above, with
    `gpu.packed_serial`, packing the weights then multiplying, one after the other."""
    if 0 < rows <= gpu.gemv_max_rows:
        return rows * weight_bytes / gpu.gemv_Bps + other_bytes / (gpu.hbm_bw_Bps * gpu.hbm_efficiency)
    if gpu.packed_serial:
        return flops / (gpu.bf16_flops * gpu.matmul_efficiency) + (weight_bytes + other_bytes) / (
            gpu.hbm_bw_Bps * gpu.hbm_efficiency
        )
    return roofline_s(gpu, flops, weight_bytes + other_bytes)


def head_matmul_s(gpu: GPU, rows: float, flops: float, weight_bytes: float) -> float:
    """The LM head: `matmul_s`, unless the head has rates of its own (a CPU stand-in whose
    head's weights stream from memory: `GPU.head_weights_Bps`); then row by row up to
    `gpu.gemv_max_rows` rows (the BLAS's choice depends on rows, not on the matrix), else
    packing the weights then multiplying, one after the other."""
    if gpu.head_weights_Bps <= 0:
        return matmul_s(gpu, rows, flops, weight_bytes)
    if 0 < rows <= gpu.gemv_max_rows:
        return rows * weight_bytes / gpu.head_gemv_Bps
    return weight_bytes / gpu.head_weights_Bps + flops / gpu.head_flops


# BatchShape and StepCompute are built once per simulated step: plain slotted dataclasses, since
# a frozen one's __init__ (object.__setattr__ per field) took 0.76 us against 0.31 us; nothing
# changes them after they are built.
@dataclass(slots=True)
class BatchShape:
    """What one engine step computes: `tokens` new tokens for `seqs` sequences, attending over
    `attn_pairs` (query, key) pairs and reading `kv_read_tokens` cached tokens per layer."""

    tokens: int
    seqs: int
    attn_pairs: float
    kv_read_tokens: float
    prefill: bool
    logits: int = 0  # positions whose logits are computed (0: the last of each sequence)


def batch_shape(seqs: Sequence[Sized], prefill: bool, positions: int = 1) -> BatchShape:
    """The shape of one step over `seqs` (each one's len() is its tokens so far): a prefill
    step computes every prompt token with causal attention; a decode step `positions` per
    sequence (its last token plus any speculative drafts to verify), each attending over and
    reading its whole context, with logits at every one of them."""
    return lens_shape([len(q) for q in seqs], prefill, positions)


def lens_shape(lens: Sequence[int], prefill: bool, positions: int = 1) -> BatchShape:
    """batch_shape from the sequences' lengths."""
    if prefill:
        return BatchShape(
            tokens=sum(lens),
            seqs=len(lens),
            attn_pairs=sum(n * (n + 1) / 2 for n in lens),
            kv_read_tokens=0.0,
            prefill=True,
        )
    return decode_shape(sum(lens), len(lens), positions)


def decode_shape(context: int, seqs: int, positions: int = 1) -> BatchShape:
    """A decode step's shape from its sequences' summed lengths (`context`) and count."""
    return BatchShape(
        tokens=seqs * positions,
        seqs=seqs,
        attn_pairs=context * positions,
        kv_read_tokens=context,
        prefill=False,
        logits=seqs * positions,
    )


def mixed_shape(decode_lens: Sequence[int], chunks: Sequence[tuple[int, int]], positions: int = 1) -> BatchShape:
    """A chunked-prefill step: decodes of sequences of `decode_lens` tokens, plus prompt chunks
    given as (tokens already cached, tokens computed now); a chunk attends causally over its
    own tokens and reads the cached ones, and samples at its last position."""
    context = sum(decode_lens)
    return BatchShape(
        tokens=len(decode_lens) * positions + sum(n for _, n in chunks),
        seqs=len(decode_lens) + len(chunks),
        attn_pairs=context * positions + sum(n * (done + (n + 1) / 2) for done, n in chunks),
        kv_read_tokens=context + sum(done for done, _ in chunks),
        prefill=False,
        logits=len(decode_lens) * positions + len(chunks),
    )


def experts_touched(n_experts: int, n_active: int, tokens: int) -> float:
    """Expected distinct routed experts hit by `tokens` tokens choosing `n_active` each
    (uniform routing): the weights a MoE layer must read from HBM."""
    if n_experts == 0:
        return 0.0
    return n_experts * -math.expm1(tokens * math.log1p(-n_active / n_experts))


@dataclass(slots=True)
class StepCompute:
    """Per-layer compute times of one step on one GPU of a `tp`-way tensor-parallel replica."""

    dense_layer_s: float
    moe_layer_s: float
    head_s: float

    def layers_s(self, bb: Backbone, start: int, stop: int) -> float:
        """Compute time of layers [start, stop)."""
        dense = max(0, min(stop, bb.n_dense_layers) - start) if bb.is_moe else stop - start
        return dense * self.dense_layer_s + (stop - start - dense) * self.moe_layer_s


def step_compute(
    gpu: GPU,
    bb: Backbone,
    shape: BatchShape,
    tp: int,
    kv_layer_bytes_per_rank: float | None = None,
    layer_kernels: int = 0,
    ep: int = 1,
) -> StepCompute:
    """`kv_layer_bytes_per_rank`: one token's KV at one layer as one rank stores and reads it
    (default: the backbone's uniform layout; a shared KV head or MLA latent is read whole on
    every rank, never divided by TP). Each layer's `layer_kernels` kernels add their fixed time
    (`kernels_fixed_s`). With expert parallelism over `ep` ranks (`ep` > `tp`: data-parallel
    replicas in one expert group, stepping together with batches of this shape), a MoE layer
    reads only the experts its rank owns that the whole group's tokens touch, and exchanges
    the tokens with the group (`ep_exchange_s`)."""
    wb = bb.weight_bytes_per_param
    if kv_layer_bytes_per_rank is None:
        kv_layer_bytes_per_rank = bb.kv_bytes_per_token_per_layer / bb.kv_shards(tp)
    attn_flops = 4.0 * bb.n_heads * bb.attn_dim * shape.attn_pairs
    kv_bytes_per_rank = (shape.kv_read_tokens + shape.tokens) * kv_layer_bytes_per_rank

    comm = 2 * allreduce_s(gpu, shape.tokens * bb.hidden_size * 2, tp)  # after attention and MLP

    def layer_s(mlp_active_params: float, mlp_read_bytes: float) -> float:
        flops = 2.0 * shape.tokens * (bb.attn_params + mlp_active_params) + attn_flops
        weights = bb.attn_params * wb + mlp_read_bytes
        matmul = matmul_s(gpu, shape.tokens, flops / tp, weights / tp, kv_bytes_per_rank)
        return gpu.layer_overhead_s + kernels_fixed_s(gpu, layer_kernels) + matmul + comm

    dense = layer_s(bb.dense_mlp_params, bb.dense_mlp_params * wb) if bb.n_dense_layers else 0.0
    moe = 0.0
    if bb.is_moe:
        shared = bb.n_shared_experts * bb.expert_params
        active = shared + bb.n_active_experts * bb.expert_params
        routed = routed_read_bytes(bb, shape.tokens, tp, ep)
        moe = layer_s(active, shared * wb + routed) + ep_exchange_s(gpu, shape.tokens, bb.hidden_size, tp, ep)
    # The LM head runs only on the last position of each sequence.
    head = head_matmul_s(
        gpu,
        shape.logits or shape.seqs,
        2.0 * (shape.logits or shape.seqs) * bb.hidden_size * bb.vocab_size / tp,
        bb.hidden_size * bb.vocab_size * wb / tp,
    )
    return StepCompute(dense, moe, head)


def routed_read_bytes(bb: Backbone, tokens: int, tp: int, ep: int = 1) -> float:
    """Routed-expert weight bytes a MoE layer reads, `tp` times one rank's share (step_compute
    divides by tp): the experts the step's tokens touch (uniform routing). Under expert
    parallelism across data-parallel replicas (`ep` > `tp`), a rank owns 1/ep of the experts
    and reads those that the tokens of its group's ep/tp replicas touch."""
    if ep <= tp:
        return (
            experts_touched(bb.n_routed_experts, bb.n_active_experts, tokens)
            * bb.expert_params
            * bb.expert_bytes_per_param
        )
    touched = experts_touched(bb.n_routed_experts, bb.n_active_experts, tokens * (ep // tp))
    return touched * bb.expert_params * bb.expert_bytes_per_param * tp / ep


def ring_allgather_s(gpu: GPU, ranks: int, nbytes_per_rank: float, what: str) -> float:
    """A ring all-gather (or reduce-scatter: the same traffic) over `ranks` GPUs: each rank
    receives the other ranks' `nbytes_per_rank` over NVLink after a fixed latency
    (`allreduce_latency_us`, NCCL's small-message floor). 0 for one rank."""
    if ranks <= 1:
        return 0.0
    if gpu.nvlink_Bps <= 0:
        raise UserError(f"{gpu.name}: {what} needs nvlink_GBps in the hardware preset")
    return gpu.allreduce_latency_s + (ranks - 1) * nbytes_per_rank / gpu.nvlink_Bps


def ep_exchange_s(gpu: GPU, tokens: int, hidden: int, tp: int, ep: int) -> float:
    """Token exchange of one MoE layer across `ep` // `tp` data-parallel replicas of an expert
    group, as vLLM's default all-to-all (`AgRsAll2AllManager`): an all-gather of every rank's
    bf16 hidden states before the experts and a reduce-scatter of their outputs after, each a
    ring collective over NVLink. 0 without data parallelism inside the expert group (TP-only
    EP reduces through the all-reduces)."""
    ranks = ep // tp if ep > tp else 1
    return 2 * ring_allgather_s(gpu, ranks, tokens * hidden * 2, "expert parallelism")


# vLLM's n-gram hash ids are int32 (the EDP tests' hash tensors, vllm-project/vllm-ascend #17134).
HASH_ID_BYTES = 4


def engram_dp_ids_s(gpu: GPU, tokens: int, layers: int, heads: int, dp: int) -> float:
    """Engram DP sharding (vllm-project/vllm #56512, `gather_engram_hashes`): once per step,
    before the decoder layers, the node-local Engram DP group of `dp` replicas all-gathers
    every replica's n-gram ids for all Engram layers ("One gather feeds every layer sharing
    the DP-split table"), each replica padded to the largest one's `tokens`."""
    return ring_allgather_s(gpu, dp, tokens * layers * heads * HASH_ID_BYTES, "Engram DP sharding")


def engram_dp_rows_s(gpu: GPU, tokens: int, heads: int, head_dim: int, tp: int, dp: int) -> float:
    """Engram DP sharding's row exchange at one Engram layer (vllm-project/vllm #56512,
    `_gather_engram_rows`, on the main stream once the layer's lookup is done): each rank looked
    up its ceil(heads / (tp x dp)) heads for all dp x `tokens` gathered tokens, as bf16, and
    all-gathers that block over the `dp` replicas, keeping its own tokens' rows. An all-gather,
    not an all-to-all: each rank receives (dp - 1) whole blocks, dp times what it keeps."""
    local_heads = math.ceil(heads / (tp * dp))
    block_bytes = dp * tokens * local_heads * head_dim * 2
    return ring_allgather_s(gpu, dp, block_bytes, "Engram DP sharding")


def draft_s(gpu: GPU, bb: Backbone, seqs: int, spec_tokens: int, tp: int, layer_kernels: int = 0) -> float:
    """Drafting `spec_tokens` tokens per sequence with the model's MTP layers: one pass of one
    draft layer (and the LM head) per drafted token, sequentially, over one position per
    sequence, its `layer_kernels` kernels each paying their fixed time. A model without draft
    layers drafts for free (n-gram lookup)."""
    if not spec_tokens or not bb.n_mtp_layers:
        return 0.0
    comp = step_compute(gpu, bb, BatchShape(seqs, seqs, 0.0, 0.0, False), tp, layer_kernels=layer_kernels)
    layer = comp.moe_layer_s if bb.is_moe else comp.dense_layer_s
    return spec_tokens * (layer + comp.head_s)


def allreduce_s(gpu: GPU, nbytes: float, tp: int) -> float:
    """A ring all-reduce of `nbytes` across `tp` GPUs: each sends 2 (tp-1)/tp of the data."""
    if tp <= 1:
        return 0.0
    if gpu.nvlink_Bps <= 0:
        raise UserError(f"{gpu.name}: tensor parallelism needs nvlink_GBps in the hardware preset")
    return gpu.allreduce_latency_s + 2 * (tp - 1) / tp * nbytes / gpu.nvlink_Bps


def engram_module_params(bb: Backbone, spec: EngramSpec) -> int:
    """Weights of one Engram module: one value and `hc_mult` key projections of the memory
    vector to the hidden size, and the depthwise convolution over hc_mult x hidden channels."""
    hc = bb.hc_mult
    return (1 + hc) * spec.memory_dim * bb.hidden_size + spec.kernel_size * hc * bb.hidden_size


# Hidden-wide bf16 vectors each op of one Engram module reads and writes per token, counted from
# engram_demo_v1.py (`Engram.forward`, `ShortConv.forward`, `TransformerBlock.forward`) run
# eagerly: every op materialises its output in HBM.
ENGRAM_PASSES_PER_BRANCH = {  # once per hyper-connection branch
    "key projection (write)": 1,
    "key norm": 2,
    "query norm": 2,
    "gate: product (2 in, 1 out), sum": 4,
    "gate x value (write)": 1,
    "conv input norm": 2,
}
ENGRAM_PASSES_STREAM = {  # over the whole hc x hidden stream, counted per branch
    "concatenate normed branches": 2,
    "depthwise conv": 2,
    "SiLU": 2,
    "transpose back, contiguous": 2,
    "value + conv": 3,
    "residual add into the hidden state": 3,
}
ENGRAM_PASSES_SHARED = {"value projection (write)": 1, "gate x value (read value)": 1}


# The module's RMSNorms (key, query and conv input norm of each branch), counted above as one
# kernel reading and writing the vector once. PyTorch 2.4-2.8 runs torch.nn.RMSNorm on CUDA as
# aten::rms_norm's composite (aten/src/ATen/native/layer_norm.cpp): upcast to fp32 (reads 1
# bf16 vector, writes 2), pow (2, 2), mean (2), add eps and rsqrt (one value per token), mul by
# it (2, 2), mul by the weight (2, 2), back to bf16 (2, 1): 8 kernels and 20 bf16-vector passes.
ENGRAM_NORMS_PER_BRANCH = 3
RMSNORM_FUSED = {"kernels": 1, "passes": 2}
RMSNORM_COMPOSITE = {"kernels": 8, "passes": 20}


def _composite_norm_extra(hc_mult: int, fused_norms: bool, what: str) -> int:
    """What composite RMSNorms add to the module's count of `what` (kernels or passes)."""
    if fused_norms:
        return 0
    return hc_mult * ENGRAM_NORMS_PER_BRANCH * (RMSNORM_COMPOSITE[what] - RMSNORM_FUSED[what])


def engram_hidden_passes(hc_mult: int, fused_norms: bool = True) -> int:
    """Hidden-wide vectors one Engram module moves through HBM per token, eagerly."""
    per_branch = sum(ENGRAM_PASSES_PER_BRANCH.values()) + sum(ENGRAM_PASSES_STREAM.values())
    shared = sum(ENGRAM_PASSES_SHARED.values())
    return hc_mult * per_branch + shared + _composite_norm_extra(hc_mult, fused_norms, "passes")


def engram_module_s(gpu: GPU, bb: Backbone, spec: EngramSpec, tokens: int, tp: int, fused_norms: bool = True) -> float:
    """GPU time of the Engram fusion at one layer (deepseek-ai/Engram `Engram.forward`) as a
    roofline: the projections' FLOPs against their weights, the memory vector and the
    activations every eager op reads and writes (`engram_hidden_passes`). Its launches are
    counted by `engram_kernels`."""
    params = engram_module_params(bb, spec)
    flops = 2.0 * tokens * params
    passes = engram_hidden_passes(bb.hc_mult, fused_norms)
    hbm = params * bb.weight_bytes_per_param + tokens * (spec.memory_dim + passes * bb.hidden_size) * 2
    fixed = gpu.engram_module_overhead_s + tokens * gpu.engram_module_s_per_token
    return fixed + roofline_s(gpu, flops / tp, hbm / tp)


# Kernels eager PyTorch launches for one Engram module (engram_demo_v1.py `Engram.forward` and
# `ShortConv.forward`), a linear or an RMSNorm counted as one kernel each.
ENGRAM_KERNELS_PER_BRANCH = {  # once per hyper-connection branch
    "key projection": 1,
    "key norm": 1,
    "query norm": 1,
    "gate: product, sum, scale": 3,
    "gate: abs, clamp, sqrt, sign, multiply": 5,
    "gate: sigmoid": 1,
    "conv input norm": 1,
}
ENGRAM_KERNELS_SHARED = {  # once per module
    "row gather (hash offsets, embedding lookup)": 2,
    "stack gates": 1,
    "value projection": 1,
    "gate x value": 1,
    "depthwise conv": 1,
    "SiLU": 1,
    "residual add": 1,
}


def engram_kernels(hc_mult: int, fused_norms: bool = True) -> int:
    """Kernels one Engram module launches when run eagerly."""
    per_branch = hc_mult * sum(ENGRAM_KERNELS_PER_BRANCH.values())
    return per_branch + sum(ENGRAM_KERNELS_SHARED.values()) + _composite_norm_extra(hc_mult, fused_norms, "kernels")


def kernels_fixed_s(gpu: GPU, kernels: int) -> float:
    """GPU time `kernels` kernels take beyond their roofline (latency plus bandwidth: a kernel
    lasts its fixed time plus its bytes or FLOPs at the achievable rate). Replaying a CUDA graph
    saves the host's launches, not this."""
    return kernels * gpu.kernel_fixed_s


def launches_s(gpu: GPU, dispatch_s: float, kernels: int) -> float:
    """Host time to launch `kernels` kernels eagerly: the framework's dispatch plus the driver's
    launch each. The GPU runs them as they come, so a forward pass takes the longer of this and
    its GPU time."""
    return kernels * (dispatch_s + gpu.kernel_launch_s)


def host_work_s(step_s: float, seq_s: float, token_s: float, seqs: int, tokens: int) -> float:
    """An engine's host work for one step: fixed, per sequence and per token."""
    return step_s + seqs * seq_s + tokens * token_s


def index_copy_s(link: Link, tokens: int, heads: int) -> float:
    """Copy one step's int64 row indices to the GPU, for gathers that run there."""
    return link.latency_s + tokens * heads * 8 / link.h2d_Bps


def sm_contention_s(overlap_s: float, sm_share: float) -> float:
    """Compute time lost while a zero-copy gather kernel holds `sm_share` of the SMs for
    `overlap_s` of the compute it runs beside."""
    return overlap_s * sm_share


def hbm_gather_s(gpu: GPU, rows: float, row_bytes: int) -> float:
    """Gather `rows` random rows from an HBM-resident table: whole 32-byte sectors move."""
    moved = rows * math.ceil(row_bytes / GPU_SECTOR_BYTES) * GPU_SECTOR_BYTES
    return moved / (gpu.hbm_bw_Bps * gpu.gather_efficiency)


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
    per_row = (
        math.ceil(row_bytes / req) * link.packet_overhead_bytes
        + math.ceil(row_bytes / GPU_SECTOR_BYTES) * GPU_SECTOR_BYTES
    )
    bulk = (req + link.packet_overhead_bytes) / req
    return per_row / row_bytes / bulk


def zero_copy_cap_Bps(link: Link, row_bytes: int, extra_latency_s: float = 0.0) -> float:
    """Little's law: outstanding reads x payload / round trip caps one GPU's zero-copy rate."""
    in_flight_bytes = link.max_outstanding_reads * min(row_bytes, link.read_request_bytes)
    return in_flight_bytes / (link.read_round_trip_s + extra_latency_s)


def cpu_gather_rows_per_s(host: Host, latency_s: float) -> float:
    """Rows one CPU thread gathers per second from memory of the given latency."""
    return host.gather_mlp / latency_s


def hash_s(host: Host, tokens: int, engram_layers: int, heads: int = 0) -> float:
    """One hash call per Engram layer: a fixed cost plus a cost per token, the latter per hash
    head (one modulo each) relative to the heads the host's figure was measured with."""
    per_token = host.hash_s_per_token * (heads / host.hash_heads if heads and host.hash_heads else 1.0)
    return engram_layers * (host.hash_call_s + tokens * per_token)


# --- the ssd tier and its DRAM cache ---------------------------------------------------------


def ssd_iops(ssd: SSD) -> float:
    """Random reads per second of a host's SSDs: each device is bounded both by its rated IOPS
    and by the reads its queue keeps in flight over one read latency (Little's law)."""
    return ssd.devices * min(ssd.read_iops, ssd.queue_depth / ssd.latency_s)


def ssd_bw_Bps(ssd: SSD) -> float:
    """Sequential read bandwidth of a host's SSDs."""
    return ssd.devices * ssd.read_bw_Bps


def dram_cache_hit_rate(hbm_hit: float, both_hit: float) -> float:
    """Of the rows an HBM hot-row cache misses, the share a DRAM cache behind it holds. The
    DRAM cache keeps the rows ranked just after the HBM cache's, so the two together hit as one
    cache of both sizes would (`both_hit`)."""
    return (both_hit - hbm_hit) / (1 - hbm_hit) if hbm_hit < 1 else 0.0


# --- server topology: NUMA, address translation, RDMA ----------------------------------------


def remote_socket_share(topo: Topology, layout: str, consumer: int) -> float:
    """Share of a reader's rows that sit on another socket's DRAM under a table layout."""
    return sum(share for s, share in table_sockets(topo, layout, consumer) if s != consumer)


def host_read_latency_s(host: Host, topo: Topology, layout: str, consumer: int, table_bytes: float) -> float:
    """Mean latency of one random row read from host DRAM by a reader on socket `consumer`:
    local DRAM, plus the socket link for the remote share, plus page walks (translation_s)."""
    return (
        host.dram_latency_s
        + remote_socket_share(topo, layout, consumer) * topo.upi_latency_s
        + translation_s(topo, table_bytes)
    )


def translation_s(topo: Topology, table_bytes: float) -> float:
    """Mean page-walk time per random read of a table of `table_bytes`: a read misses the TLB
    with probability 1 - reach / table, reach = entries x page size (huge pages widen it)."""
    if not topo.sysmem_tlb_entries or table_bytes <= 0:
        return 0.0
    reach = topo.sysmem_tlb_entries * topo.table_page_bytes
    return max(0.0, 1.0 - reach / table_bytes) * topo.page_walk_s


def rdma_wire_factor(rdma: RDMA, row_bytes: int) -> float:
    """NIC bytes per useful byte: one read response per row, each with its headers."""
    return (row_bytes + rdma.header_bytes) / row_bytes


def rdma_cap(rdma: RDMA, row_bytes: int, gpus_per_nic: float) -> tuple[float, str]:
    """One GPU's RDMA read rate limit and what sets it: the NIC's outstanding reads (shared by
    the GPUs on that NIC) over one read round trip (Little's law), or the posting thread's
    doorbells (`doorbell_batch` reads per doorbell)."""
    in_flight = rdma.reads_in_flight / max(gpus_per_nic, 1.0) * row_bytes / rdma.read_latency_s
    posting = rdma.doorbell_batch / rdma.doorbell_s * row_bytes if rdma.doorbell_s else math.inf
    return (in_flight, "RDMA reads in flight") if in_flight <= posting else (posting, "RDMA doorbells")


def collective_lookup_s(gpu: GPU, rows: float, row_bytes: int, tokens: int, memory_dim: int, tp: int) -> float:
    """`collective`: a rank gathers the rows of its own shard for every token (`rows` / tp of
    the step's rows), then the ranks all-reduce the assembled bf16 embeddings (tokens x
    memory_dim) over NVLink, each rank contributing the heads it owns and zeros elsewhere."""
    return hbm_gather_s(gpu, rows / tp, row_bytes) + allreduce_s(gpu, tokens * memory_dim * 2.0, tp)


def peer_read_lookup_s(gpu: GPU, topo: Topology, rows: float, row_bytes: int, tp: int) -> float:
    """`peer_read`: every rank reads all `rows` it needs, (tp-1)/tp of them from peers' HBM over
    NVLink in whole sectors, at the NVLink bandwidth or what its loads in flight sustain over
    one peer round trip (Little's law), whichever is lower; the local share is an HBM gather."""
    if gpu.nvlink_Bps <= 0:
        raise UserError(f"{gpu.name}: peer reads need nvlink_GBps in the hardware preset")
    sector_bytes = math.ceil(row_bytes / GPU_SECTOR_BYTES) * GPU_SECTOR_BYTES
    remote = rows * (tp - 1) / tp * sector_bytes
    rate = min(gpu.nvlink_Bps, topo.peer_reads_in_flight * GPU_SECTOR_BYTES / topo.peer_read_latency_s)
    return hbm_gather_s(gpu, rows / tp, row_bytes) + topo.peer_read_latency_s + remote / rate


# --- how an engine reads rows from SSD (engramsim.iopolicy) ---------------------------------


def ssd_iops_at(ssd: SSD, queue_depth: float) -> float:
    """Random-read IOPS of one device with `queue_depth` reads in flight: log-log interpolation
    of the part's measured IOPS-by-depth points, flat beyond the last; without points, the
    lesser of rated IOPS and depth / latency (Little's law)."""
    q = max(queue_depth, 1e-9)
    if not ssd.iops_qd:
        return min(ssd.read_iops, q / ssd.latency_s)
    if q <= ssd.iops_qd[0]:
        return ssd.iops_at_qd[0] * q / ssd.iops_qd[0]
    iops = math.exp(np.interp(math.log(q), np.log(ssd.iops_qd), np.log(ssd.iops_at_qd)))
    return min(float(iops), ssd.read_iops)


@dataclass(frozen=True)
class ReadPlan:
    """What reading one missing row costs under an engine's I/O policy."""

    ssd_bytes: float  # bytes the SSD reads (a page, a read-around window, or the row's blocks)
    dram_bytes: float  # bytes landing in memory (page cache or the engine's buffer)
    cpu_s: float  # CPU time of the read on the thread that issues it
    in_flight: float  # reads in flight (math.inf: as many as the SSD queues take)
    op_s: float  # one read's time as its issuer sees it: device latency (+ CPU if blocking)

    @property
    def rows_per_s(self) -> float:
        """The rate the readers can sustain (Little's law), before device and CPU limits."""
        return self.in_flight / self.op_s

    def lead_s(self, rows: float) -> float:
        """The fixed delay before `rows` reads flow at `rows_per_s`, so that together they take
        max(1, rows / in_flight) read times: one read time when the readers cover them all at
        once, rows / in_flight of them when they come in waves. Unbounded readers: one read."""
        if math.isinf(self.in_flight):
            return self.op_s
        return self.op_s * max(0.0, 1.0 - rows / self.in_flight)


def ssd_read_plan(ssd: SSD, os, policy, row_bytes: int, rows: float) -> ReadPlan:
    """The cost of reading `rows` random rows under `policy` (an IOPolicy) on an OS (`os`,
    None: no OS costs known, page-granular reads as the SSD part's page)."""
    io = policy.io
    page = os.page_bytes if os else ssd.page_bytes
    if io == "mmap":
        window = 1 if policy.madvise_random or os is None else os.mmap_readahead_pages
        nbytes, cpu = page * window, os.fault_cpu_s if os else 0.0
    elif io == "pread":
        nbytes, cpu = page, os.pread_cpu_s if os else 0.0
    else:  # odirect, io_uring: the row's own device blocks, into the engine's buffer
        nbytes = math.ceil(row_bytes / ssd.page_bytes) * ssd.page_bytes
        cpu = (os.io_uring_cpu_s if io == "io_uring" else os.pread_cpu_s) if os else 0.0
    readers = policy.readers_for(rows)
    if readers == 0:
        return ReadPlan(nbytes, nbytes, cpu, math.inf, ssd.latency_s)
    in_flight = readers * (policy.io_depth if io == "io_uring" else 1)
    per_device = in_flight / ssd.devices
    latency = max(ssd.latency_s, per_device / ssd_iops_at(ssd, per_device))
    # A blocking read holds its thread for the CPU work and the device time in turn; io_uring
    # overlaps them, so its thread limits only by CPU.
    op_s = latency if io == "io_uring" else latency + cpu
    return ReadPlan(nbytes, nbytes, cpu, float(in_flight), op_s)
