"""Model presets: a transformer backbone plus the Engram memory it reads.

`EngramSpec` keeps the field names of deepseek-ai/Engram's `EngramConfig` (`layer_ids`,
`max_ngram_size`, `n_head_per_ngram`, `engram_vocab_size`, `seed`, `n_embed_per_ngram`,
`kernel_size`) and adds what a memory-system model needs: the bytes of one row, the dtype, the
size of the compressed vocabulary and the compressed pad id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from engramsim.errors import UserError
from engramsim.presets import build, load_toml, resolve, spec
from engramsim.tokenize import PACKAGED_TOKENIZERS


@dataclass(frozen=True)
class DType:
    """A storage format: bits per value plus `scale_bytes` of block scale per `block_values`."""

    bits: int
    block_values: int = 1
    scale_bytes: float = 0.0

    @property
    def bytes_per_value(self) -> float:
        return self.bits / 8 + self.scale_bytes / self.block_values


# Block scales as the formats define them:
# - fp8-b32: 32x32 weight blocks with one ue8m0 byte (DeepSeek-V4.1-Flash quantization_config:
#   weight_block_size [32, 32], scale_fmt ue8m0).
# - fp8-b128: 128x128 blocks with an fp32 scale (DeepSeek-V3 checkpoints).
# - fp4 / mxfp4: OCP Microscaling MXFP4, E2M1 values in blocks of 32 with one E8M0 byte (the
#   DeepSeek-V4 "fp4" experts are MXFP4: vLLM's MXFP4 path loads them).
# - nvfp4: E2M1 in blocks of 16 with one E4M3 byte (NVIDIA NVFP4; the per-tensor fp32 is negligible).
# - int4 / int2: group-wise integer quantization with a bf16 scale per 128 values (AWQ/GPTQ's
#   default group size 128; int2 assumed to use the same grouping).
DTYPES = {
    "fp32": DType(32),
    "bf16": DType(16),
    "fp16": DType(16),
    "fp8": DType(8),
    "fp8-b32": DType(8, 32 * 32, 1),
    "fp8-b128": DType(8, 128 * 128, 4),
    "fp4": DType(4, 32, 1),
    "mxfp4": DType(4, 32, 1),
    "nvfp4": DType(4, 16, 1),
    "int4": DType(4, 128, 2),
    "int2": DType(2, 128, 2),
    # Table rows quantized along the row, as one-box engines store them:
    # - int4-g64 / int2-g64: MLX affine quantization (mx.quantize, default group_size 64): a bf16
    #   scale and a bf16 bias per 64 values. A 2-bit 256-value row is 64 + 16 = 80 B; the 2-bit
    #   DeepSeek-V4.1 tables of raullenchai/Rapid-MLX PR #3338 free 61.17 GB for 768M rows = 79.6 B.
    # - q2_k / q3_k / q4_k: llama.cpp k-quant super-blocks of 256 values, 84 / 110 / 144 bytes
    #   (ggml block_q2_K; "110 bytes at Q3_K, 144 at Q4_K", ggml-org/llama.cpp PR #28696).
    "int4-g64": DType(4, 64, 4),
    "int2-g64": DType(2, 64, 4),
    "q2_k": DType(2, 256, 20),
    "q3_k": DType(3, 256, 14),
    "q4_k": DType(4, 256, 16),
}
FP32_BYTES = 4
ROW_DTYPES = ("fp8", "fp4", "int4", "int2", "int4-g64", "int2-g64", "q2_k", "q3_k", "q4_k")
# Kept for callers that need whole bytes of an unscaled format.
DTYPE_BYTES = {name: d.bits // 8 for name, d in DTYPES.items() if d.bits >= 8}


def _dtype_bytes(dtype: str, where: str) -> float:
    if dtype not in DTYPES:
        raise UserError(f"{where}: unknown dtype '{dtype}' (allowed: {', '.join(DTYPES)})")
    return DTYPES[dtype].bytes_per_value


# Upper bounds (`hi`): the largest models today have ~128 layers, hidden 16,384, vocabularies of
# ~256k ids (2**24 leaves 64x room), a few hundred routed experts and 1-2M rows per head table
# (V4.1-Flash: ~384M rows per layer). Layers are bounded at 1,024, widths and expert counts at
# 2**20-2**24, table rows at 1e12 per head and a row at 1 MiB.
@dataclass(frozen=True)
class EngramSpec:
    layer_ids: tuple[int, ...] = spec("layer_ids", kind=list, hi=1023)
    max_ngram_size: int = spec("max_ngram_size", lo=2, lo_open=False, hi=16, kind=int)
    n_head_per_ngram: int = spec("n_head_per_ngram", kind=int, hi=1024)
    # Rows per head table, one entry per n-gram order 2..max_ngram_size (as in EngramConfig).
    engram_vocab_size: tuple[int, ...] = spec("engram_vocab_size", kind=list, hi=1e12)
    seed: int = spec("seed", lo=0, lo_open=False, kind=int, default=0, hi=2**32 - 1)
    # DeepSeek-V3 tokenizer vocabulary is 129,280; compression shrinks it (paper: by 23%).
    compressed_vocab_size: int = spec("compressed_vocab_size", kind=int, default=129280, hi=2**24)
    compressed_pad_id: int = spec("compressed_pad_id", lo=0, lo_open=False, kind=int, default=2, hi=2**24)
    n_embed_per_ngram: int = spec("n_embed_per_ngram", kind=int, default=512, hi=2**20)
    kernel_size: int = spec("kernel_size", kind=int, default=4, hi=1024)
    dtype: str = spec("dtype", kind=str, default="bf16")
    # Bytes of one fetched row. 0 derives it: n_embed_per_ngram / n_head_per_ngram values of
    # `dtype`. fp8 tables carry block scales, so their presets give it explicitly.
    row_bytes: int = spec("row_bytes", lo=0, lo_open=False, kind=int, default=0, hi=2**20)
    # Rows of each Engram layer's tables as the checkpoint declares them (config.json
    # `engram_num_embeddings`: the sum of the heads' prime sizes). Empty: vocab sizes x heads.
    num_embeddings: tuple[int, ...] = spec("num_embeddings", kind=list, default=(), hi=1e13)
    # The model's own tokenizer when a package ships it (engramsim.tokenize.PACKAGED_TOKENIZERS);
    # "" hashes text with the built-in word-level tokenizer.
    tokenizer: str = spec("tokenizer", kind=str, default="")

    def __post_init__(self):
        for name in ("layer_ids", "engram_vocab_size", "num_embeddings"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        where = "EngramSpec"
        if not self.layer_ids or min(self.layer_ids) < 0 or len(set(self.layer_ids)) != len(self.layer_ids):
            raise UserError(f"{where}: layer_ids must be distinct non-negative layer indices")
        if len(self.engram_vocab_size) != self.max_ngram_size - 1:
            raise UserError(
                f"{where}: engram_vocab_size needs one entry per order 2..{self.max_ngram_size} "
                f"({self.max_ngram_size - 1}), got {len(self.engram_vocab_size)}"
            )
        if min(self.engram_vocab_size) < 2 or self.n_head_per_ngram < 1:
            raise UserError(f"{where}: engram_vocab_size entries must be >= 2 and n_head_per_ngram >= 1")
        if self.compressed_pad_id >= self.compressed_vocab_size:
            raise UserError(f"{where}: compressed_pad_id must be below compressed_vocab_size")
        if self.n_embed_per_ngram % self.n_head_per_ngram:
            raise UserError(f"{where}: n_embed_per_ngram must be a multiple of n_head_per_ngram")
        if self.tokenizer and self.tokenizer not in PACKAGED_TOKENIZERS:
            raise UserError(
                f"{where}: unknown tokenizer '{self.tokenizer}' (known: {', '.join(sorted(PACKAGED_TOKENIZERS))})"
            )
        if self.num_embeddings and len(self.num_embeddings) != len(self.layer_ids):
            raise UserError(f"{where}: num_embeddings needs one entry per Engram layer ({len(self.layer_ids)})")
        values_bytes = self.n_embed_per_ngram // self.n_head_per_ngram * _dtype_bytes(self.dtype, where)
        if self.row_bytes == 0:
            object.__setattr__(self, "row_bytes", int(values_bytes))
        elif self.row_bytes < values_bytes:
            raise UserError(
                f"{where}: row_bytes {self.row_bytes} cannot hold {self.n_embed_per_ngram // self.n_head_per_ngram} "
                f"{self.dtype} values ({values_bytes:g} bytes)"
            )

    @property
    def orders(self) -> range:
        return range(2, self.max_ngram_size + 1)

    @property
    def heads_per_layer(self) -> int:
        """Rows one token reads at one Engram layer: (N-1) orders x K heads."""
        return (self.max_ngram_size - 1) * self.n_head_per_ngram

    @property
    def memory_dim(self) -> int:
        """Width of the concatenated memory vector e_t fed to the gated fusion."""
        return (self.max_ngram_size - 1) * self.n_embed_per_ngram

    @property
    def rows_per_layer(self) -> int:
        """Rows of one layer's tables (each head's prime size is just above its vocab size);
        the mean over layers when the checkpoint gives each layer's count."""
        if self.num_embeddings:
            return round(sum(self.num_embeddings) / len(self.num_embeddings))
        return sum(v * self.n_head_per_ngram for v in self.engram_vocab_size)

    @property
    def table_bytes_per_layer(self) -> int:
        return self.rows_per_layer * self.row_bytes

    @property
    def table_bytes(self) -> int:
        rows = sum(self.num_embeddings) if self.num_embeddings else self.rows_per_layer * len(self.layer_ids)
        return rows * self.row_bytes

    def module_params(self, hidden_size: int, hc_mult: int) -> int:
        """Weights of the Engram fusion at one layer (deepseek-ai/Engram `Engram.__init__`): one
        value and `hc_mult` key projections of the memory vector to the hidden size, plus the
        depthwise convolution over hc_mult x hidden channels."""
        return (1 + hc_mult) * self.memory_dim * hidden_size + self.kernel_size * hc_mult * hidden_size


@dataclass(frozen=True)
class Backbone:
    """Transformer shapes from which weights, FLOPs and KV-cache bytes are derived."""

    n_layers: int = spec("n_layers", kind=int, hi=1024)
    hidden_size: int = spec("hidden_size", kind=int, hi=2**20)
    vocab_size: int = spec("vocab_size", kind=int, hi=2**24)
    n_heads: int = spec("n_heads", kind=int, hi=4096)
    head_dim: int = spec("head_dim", kind=int, hi=4096)
    dtype: str = spec("dtype", kind=str, default="bf16")
    kv_dtype: str = spec("kv_dtype", kind=str, default="bf16")
    # GQA attention: KV cache holds K and V per KV head. MLA: a latent of kv_lora_rank + rope dims.
    n_kv_heads: int = spec("n_kv_heads", lo=0, lo_open=False, kind=int, default=0, hi=4096)
    kv_lora_rank: int = spec("kv_lora_rank", lo=0, lo_open=False, kind=int, default=0, hi=65536)
    qk_rope_head_dim: int = spec("qk_rope_head_dim", lo=0, lo_open=False, kind=int, default=0, hi=4096)
    # Attention weights per layer; 0 derives the GQA count from the shapes above.
    attn_params_per_layer: int = spec("attn_params_per_layer", lo=0, lo_open=False, kind=int, default=0, hi=1e12)
    # The part of attn_params_per_layer every TP rank holds whole; the rest is divided across TP
    # (vLLM DeepSeek-V4/V4.1: the fused wq_a|wkv projection is replicated, wq_b/wo_a column-
    # and wo_b row-parallel).
    attn_replicated_params_per_layer: int = spec(
        "attn_replicated_params_per_layer", lo=0, lo_open=False, kind=int, default=0, hi=1e12
    )
    intermediate_size: int = spec("intermediate_size", lo=0, lo_open=False, kind=int, default=0, hi=2**24)
    # Mixture of experts: the first `first_dense_layers` use the dense MLP.
    n_routed_experts: int = spec("n_routed_experts", lo=0, lo_open=False, kind=int, default=0, hi=2**20)
    n_active_experts: int = spec("n_active_experts", lo=0, lo_open=False, kind=int, default=0, hi=2**20)
    n_shared_experts: int = spec("n_shared_experts", lo=0, lo_open=False, kind=int, default=0, hi=1024)
    moe_intermediate_size: int = spec("moe_intermediate_size", lo=0, lo_open=False, kind=int, default=0, hi=2**24)
    first_dense_layers: int = spec("first_dense_layers", lo=0, lo_open=False, kind=int, default=0, hi=1024)
    tie_embeddings: bool = spec("tie_embeddings", kind=bool, default=False)
    # Hyper-connection branches (deepseek-ai/Engram BackBoneConfig.hc_mult; 1 = none). The
    # Engram fusion has one key projection, norm pair and conv group per branch.
    hc_mult: int = spec("hc_mult", kind=int, default=1, hi=64)
    # Kernels one layer of this architecture runs per forward pass, where it needs more than an
    # engine's generic count (the engine preset's `kernels_per_layer`, a plain decoder layer);
    # 0 = the engine's. Each pays the GPU's fixed kernel time, in CUDA graphs too.
    kernels_per_layer: int = spec("kernels_per_layer", lo=0, lo_open=False, kind=int, default=0, hi=1e5)
    # Storage of the routed experts and of the embeddings / LM head ("" = `dtype`).
    expert_dtype: str = spec("expert_dtype", kind=str, default="")
    embed_dtype: str = spec("embed_dtype", kind=str, default="")
    # Multi-token-prediction / draft layers shipped with the model: attention plus a MoE with
    # `mtp_routed_experts` experts (0 = n_routed_experts), or a dense MLP for dense models.
    n_mtp_layers: int = spec("n_mtp_layers", lo=0, lo_open=False, kind=int, default=0, hi=64)
    mtp_routed_experts: int = spec("mtp_routed_experts", lo=0, lo_open=False, kind=int, default=0, hi=2**20)
    # Small weights of every layer not counted above (router gate, KV compressors,
    # sparse-attention indexers), averaged over layers, stored as `dtype`, and
    # held whole by every TP rank (vLLM builds them as replicated linears or plain parameters:
    # the compressed KV and indexer keys of a single shared KV head are computed on every rank).
    extra_params_per_layer: int = spec("extra_params_per_layer", lo=0, lo_open=False, kind=int, default=0, hi=1e12)
    # Does the engine shard non-expert weights (attention less its replicated part, shared
    # experts, embeddings) across tensor-parallel ranks? False: every rank holds a full copy and
    # only experts are divided.
    tp_shards_dense: bool = spec("tp_shards_dense", kind=bool, default=True)
    # Longest context the model supports (config max_position_embeddings; 0 = no limit known).
    max_model_len: int = spec("max_position_embeddings", lo=0, lo_open=False, kind=int, default=0, hi=2**31)

    def __post_init__(self):
        where = "backbone"
        for dtype in (self.dtype, self.kv_dtype, self.expert_dtype or self.dtype, self.embed_dtype or self.dtype):
            _dtype_bytes(dtype, where)
        if (self.n_kv_heads > 0) == (self.kv_lora_rank > 0):
            raise UserError(f"{where}: give exactly one of n_kv_heads (GQA) or kv_lora_rank (MLA)")
        if self.kv_lora_rank and not self.attn_params_per_layer:
            raise UserError(f"{where}: MLA backbones must give attn_params_per_layer")
        if self.is_moe and not (self.n_active_experts and self.moe_intermediate_size):
            raise UserError(f"{where}: MoE needs n_active_experts and moe_intermediate_size")
        if self.attn_replicated_params_per_layer > self.attn_params:
            raise UserError(f"{where}: attn_replicated_params_per_layer exceeds the attention weights")
        if self.n_active_experts > self.n_routed_experts:
            raise UserError(f"{where}: n_active_experts must not exceed n_routed_experts")
        if not self.intermediate_size and self.first_dense_layers + (0 if self.is_moe else self.n_layers):
            raise UserError(f"{where}: dense MLP layers need intermediate_size")

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def weight_bytes_per_param(self) -> float:
        return DTYPES[self.dtype].bytes_per_value

    @property
    def expert_bytes_per_param(self) -> float:
        return DTYPES[self.expert_dtype or self.dtype].bytes_per_value

    @property
    def embed_bytes_per_param(self) -> float:
        return DTYPES[self.embed_dtype or self.dtype].bytes_per_value

    @property
    def attn_params(self) -> int:
        if self.attn_params_per_layer:
            return self.attn_params_per_layer
        q = self.n_heads * self.head_dim
        kv = 2 * self.n_kv_heads * self.head_dim
        return self.hidden_size * (q + kv) + q * self.hidden_size

    @property
    def dense_mlp_params(self) -> int:
        return 3 * self.hidden_size * self.intermediate_size  # gated MLP: gate, up, down

    @property
    def expert_params(self) -> int:
        return 3 * self.hidden_size * self.moe_intermediate_size

    @property
    def n_dense_layers(self) -> int:
        return self.n_layers if not self.is_moe else self.first_dense_layers

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)

    @property
    def routed_expert_params(self) -> int:
        """Routed-expert weights of all MoE and MTP layers: what expert parallelism divides."""
        if not self.is_moe:
            return 0
        per_mtp = self.mtp_routed_experts or self.n_routed_experts
        moe_layers = self.n_layers - self.n_dense_layers
        return (moe_layers * self.n_routed_experts + self.n_mtp_layers * per_mtp) * self.expert_params

    @property
    def dense_params(self) -> int:
        """Every non-expert, non-embedding weight: attention, dense MLPs, shared experts, extras."""
        layers = self.n_layers + self.n_mtp_layers
        mlp_layers = self.n_dense_layers if self.is_moe else layers
        shared = (layers - mlp_layers) * self.n_shared_experts * self.expert_params
        return layers * (self.attn_params + self.extra_params_per_layer) + mlp_layers * self.dense_mlp_params + shared

    @property
    def hc_mixer_params_per_layer(self) -> int:
        """Hyper-connection mixers of one layer: attention and FFN each mix (2 + hc) x hc
        coefficients from the hc x hidden stream (vLLM DeepSeek-V4/V4.1 `hc_attn_fn`,
        `hc_ffn_fn`: [(2 + hc) x hc, hc x hidden], float32, on every rank)."""
        hc = self.hc_mult
        return 2 * (2 + hc) * hc * hc * self.hidden_size if hc > 1 else 0

    @property
    def replicated_params(self) -> int:
        """The part of dense_params every TP rank holds whole even when dense weights are sharded."""
        layers = self.n_layers + self.n_mtp_layers
        return layers * (self.attn_replicated_params_per_layer + self.extra_params_per_layer)

    @property
    def total_params(self) -> int:
        return self.routed_expert_params + self.dense_params + self.embedding_params

    def routed_expert_bytes_per_rank(self, tp: int = 1, ep: int = 1, align: int = 1) -> float:
        """Routed experts one rank holds, as vLLM's FusedMoE lays them out: without EP every rank
        holds every expert with its intermediate width sliced across TP; with EP whole experts
        are divided across the EP ranks (a TP wider than EP slices them further). The MoE kernel
        pads each rank's slice of the width up to a multiple of `align` (the engine's)."""
        if not self.is_moe:
            return 0.0
        slices = max(1, tp // ep)
        width = -(-math.ceil(self.moe_intermediate_size / slices) // align) * align
        per_mtp = self.mtp_routed_experts or self.n_routed_experts
        moe_layers = self.n_layers - self.n_dense_layers
        experts = moe_layers * math.ceil(self.n_routed_experts / ep) + self.n_mtp_layers * math.ceil(per_mtp / ep)
        return experts * 3 * self.hidden_size * width * self.expert_bytes_per_param

    def weight_bytes_per_rank(self, tp: int = 1, ep: int = 1, align: int = 1) -> float:
        """Weights one rank holds: routed experts as `routed_expert_bytes_per_rank`; the rest
        divided across the TP ranks when the engine shards it (less its replicated part), else
        replicated."""
        dense_shards = tp if self.tp_shards_dense else 1
        replicated = self.replicated_params if self.tp_shards_dense else 0
        mixers = (self.n_layers + self.n_mtp_layers) * self.hc_mixer_params_per_layer * FP32_BYTES
        return (
            self.routed_expert_bytes_per_rank(tp, ep, align)
            + ((self.dense_params - replicated) / dense_shards + replicated) * self.weight_bytes_per_param
            + self.embedding_params * self.embed_bytes_per_param / dense_shards
            + mixers
        )

    @property
    def weight_bytes(self) -> float:
        return self.weight_bytes_per_rank(1, 1)

    @property
    def kv_bytes_per_token_per_layer(self) -> float:
        """Bytes of one token's KV at one layer of a uniform layout (all ranks together)."""
        b = DTYPES[self.kv_dtype].bytes_per_value
        if self.kv_lora_rank:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * b
        return 2 * self.n_kv_heads * self.head_dim * b

    def kv_shards(self, tp: int) -> int:
        """GQA divides KV heads across ranks; an MLA latent or a single shared KV head is
        replicated on every rank (each rank reads and stores it whole)."""
        return 1 if self.kv_lora_rank else min(tp, self.n_kv_heads)

    @property
    def attn_dim(self) -> int:
        """Per-head width that attention scores and values read (MLA absorbs into the latent)."""
        return self.kv_lora_rank + self.qk_rope_head_dim if self.kv_lora_rank else self.head_dim


@dataclass(frozen=True)
class KVLayout:
    """KV cache per layer type, for attention that keeps a sliding window plus compressed KV
    (DeepSeek-V4 style). `compress_ratios` has one entry per layer (MTP layers included):
    0 = the sliding window only; r > 0 = one cached entry per r tokens. Layers listed in
    `kv_source_layer_ids` store that compressed KV and the layers after them reuse it (empty:
    every layer stores its own); `index_source_layer_ids` keep sparse-attention indexer keys at
    their layer's ratio. A single shared KV head: every TP rank holds it whole."""

    compress_ratios: tuple[int, ...] = spec("compress_ratios", lo=0, lo_open=False, hi=1e6, kind=list)
    entry_bytes: int = spec("entry_bytes", kind=int, hi=2**20)
    sliding_window: int = spec("sliding_window", lo=0, lo_open=False, kind=int, default=0, hi=2**24)
    kv_source_layer_ids: tuple[int, ...] = spec(
        "kv_source_layer_ids", lo=0, lo_open=False, kind=list, default=(), hi=1023
    )
    index_source_layer_ids: tuple[int, ...] = spec(
        "index_source_layer_ids", lo=0, lo_open=False, kind=list, default=(), hi=1023
    )
    index_entry_bytes: int = spec("index_entry_bytes", lo=0, lo_open=False, kind=int, default=0, hi=2**20)
    # The lightning indexer scores every query token against the whole context: a logits
    # buffer of [batched tokens, max_model_len] values of this dtype.
    index_logits_dtype: str = spec("index_logits_dtype", kind=str, default="fp8")

    def __post_init__(self):
        for name in ("compress_ratios", "kv_source_layer_ids", "index_source_layer_ids"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        _dtype_bytes(self.index_logits_dtype, "[kv]")
        n = len(self.compress_ratios)
        if min(self.compress_ratios) < 0 or any(
            not 0 <= i < n for i in self.kv_source_layer_ids + self.index_source_layer_ids
        ):
            raise UserError("[kv]: ratios must be >= 0 and source layer ids within compress_ratios")

    def bytes_per_token(self) -> float:
        """Cached bytes per token of context (one rank, window excluded)."""
        kv_layers = self.kv_source_layer_ids or range(len(self.compress_ratios))
        kv = sum(self.entry_bytes / self.compress_ratios[i] for i in kv_layers if self.compress_ratios[i])
        index = sum(
            self.index_entry_bytes / self.compress_ratios[i]
            for i in self.index_source_layer_ids
            if self.compress_ratios[i]
        )
        return kv + index

    def bytes_per_seq(self) -> float:
        """The sliding window every layer keeps for each running sequence."""
        return len(self.compress_ratios) * self.sliding_window * self.entry_bytes

    @property
    def has_indexer(self) -> bool:
        return bool(self.index_source_layer_ids)

    @property
    def index_logit_bytes(self) -> float:
        return DTYPES[self.index_logits_dtype].bytes_per_value


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    backbone: Backbone
    engram: EngramSpec | None
    source: Path | None = field(default=None, compare=False)
    kv: KVLayout | None = None
    # What a Hugging Face config.json could not say or map, one line each (engramsim.hfconfig).
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self):
        if self.engram and max(self.engram.layer_ids) >= self.backbone.n_layers:
            raise UserError(f"{self.name}: engram layer_ids must be below n_layers ({self.backbone.n_layers})")
        layers = self.backbone.n_layers + self.backbone.n_mtp_layers
        if self.kv and len(self.kv.compress_ratios) != layers:
            raise UserError(f"{self.name}: [kv] compress_ratios needs one entry per layer incl. MTP ({layers})")

    def kv_bytes_per_token_per_rank(self, tp: int) -> float:
        if self.kv:
            return self.kv.bytes_per_token()
        bb = self.backbone
        return bb.kv_bytes_per_token_per_layer * bb.n_layers / bb.kv_shards(tp)

    def kv_bytes_per_seq_per_rank(self) -> float:
        return self.kv.bytes_per_seq() if self.kv else 0.0

    def weight_bytes_per_rank(self, tp: int = 1, ep: int = 1, align: int = 1) -> float:
        """Backbone weights plus the Engram fusion modules, whole on every rank (vLLM's
        DeepSeek-V4.1 `Engram.wkv` is a replicated linear; the reference is not TP-sharded).
        `align`: the MoE kernel's padding of each rank's expert width (engine preset)."""
        bb = self.backbone
        engram = 0.0
        if self.engram:
            params = self.engram.module_params(bb.hidden_size, bb.hc_mult) * len(self.engram.layer_ids)
            engram = params * bb.weight_bytes_per_param
        return bb.weight_bytes_per_rank(tp, ep, align) + engram


def load_model(name_or_path: str | Path) -> ModelSpec:
    """A preset name, a models/*.toml-style file, or a Hugging Face config.json (a file, or a
    model directory holding one): see engramsim.hfconfig."""
    path = model_path(name_or_path)
    data, notes = model_tables(path)
    return model_from_dict(data, str(path), path, notes)


def model_path(name_or_path: str | Path) -> Path:
    """The file a model is read from: a preset, a TOML file, a config.json or a directory with one."""
    if Path(name_or_path).is_dir() and (Path(name_or_path) / "config.json").is_file():
        name_or_path = Path(name_or_path) / "config.json"
    return resolve("model", name_or_path)


def model_tables(path: Path) -> tuple[dict, tuple[str, ...]]:
    """A model file's preset tables ([backbone], [engram], [kv]) and the notes of mapping a
    config.json onto them (a sweep edits these tables before building the model)."""
    if path.suffix != ".json":
        return load_toml(path), ()
    from engramsim.hfconfig import map_config, read_config

    name = path.parent.name if path.name == "config.json" else path.stem
    mapped = map_config(read_config(path), str(path), name)
    tables = {**mapped.tables, "name": name, "description": f"{mapped.architecture} config.json ({path})"}
    return tables, tuple(mapped.notes)


def model_from_dict(data: dict, where: str, path: Path | None = None, notes: tuple[str, ...] = ()) -> ModelSpec:
    """A ModelSpec from a models/*.toml-style dict (a sweep edits one before building it)."""
    unknown = sorted(set(data) - {"name", "description", "backbone", "engram", "kv"})
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (allowed: name, description, backbone, engram, kv)")
    if "backbone" not in data:
        raise UserError(f"{where}: missing table [backbone]")
    return model_from_tables(data, where, path, notes)


def model_from_tables(data: dict, where: str, path: Path, notes: tuple[str, ...] = ()) -> ModelSpec:
    """A ModelSpec from preset tables ([backbone], optional [engram] and [kv]), validated."""
    backbone = _with_where(lambda: build(Backbone, data["backbone"], f"{where} [backbone]"), f"{where} [backbone]")
    engram = None
    if "engram" in data:
        engram = _with_where(lambda: build(EngramSpec, data["engram"], f"{where} [engram]"), f"{where} [engram]")
    kv = None
    if "kv" in data:
        kv = _with_where(lambda: build(KVLayout, data["kv"], f"{where} [kv]"), f"{where} [kv]")
    return _with_where(
        lambda: ModelSpec(
            name=str(data.get("name", path.stem)),
            description=str(data.get("description", "")),
            backbone=backbone,
            engram=engram,
            source=path,
            kv=kv,
            notes=notes,
        ),
        where,
    )


def _with_where(make, where: str):
    """Prefix validation errors raised inside __post_init__ with the file and table."""
    try:
        return make()
    except UserError as e:
        msg = str(e)
        raise UserError(msg if msg.startswith(where.split(" ")[0]) else f"{where}: {msg}") from None


def with_row_dtype(model: ModelSpec, dtype: str) -> ModelSpec:
    """`model` with its Engram table rows stored as `dtype` (`simulate --row-dtype`): the row's
    values at that format's bits plus its scale bytes."""
    if dtype not in ROW_DTYPES:
        raise UserError(f"unknown row dtype '{dtype}' (known: {', '.join(ROW_DTYPES)})")
    if model.engram is None:
        raise UserError(f"model {model.name} has no Engram table")
    return replace(model, engram=replace(model.engram, dtype=dtype, row_bytes=0))
