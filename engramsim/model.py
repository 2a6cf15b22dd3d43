"""Model presets: a transformer backbone plus the Engram memory it reads.

`EngramSpec` keeps the field names of deepseek-ai/Engram's `EngramConfig` (`layer_ids`,
`max_ngram_size`, `n_head_per_ngram`, `engram_vocab_size`, `seed`, `n_embed_per_ngram`,
`kernel_size`) and adds what a memory-system model needs: the bytes of one row, the dtype, the
size of the compressed vocabulary and the compressed pad id.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engramsim.errors import UserError
from engramsim.presets import build, load_toml, resolve, spec

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


def _dtype_bytes(dtype: str, where: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise UserError(f"{where}: unknown dtype '{dtype}' (allowed: {', '.join(DTYPE_BYTES)})")
    return DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class EngramSpec:
    layer_ids: tuple[int, ...] = spec("layer_ids", kind=list)
    max_ngram_size: int = spec("max_ngram_size", lo=2, lo_open=False, hi=16, kind=int)
    n_head_per_ngram: int = spec("n_head_per_ngram", kind=int)
    # Rows per head table, one entry per n-gram order 2..max_ngram_size (as in EngramConfig).
    engram_vocab_size: tuple[int, ...] = spec("engram_vocab_size", kind=list)
    seed: int = spec("seed", lo=0, lo_open=False, kind=int, default=0)
    # DeepSeek-V3 tokenizer vocabulary is 129,280; compression shrinks it (paper: by 23%).
    compressed_vocab_size: int = spec("compressed_vocab_size", kind=int, default=129280)
    compressed_pad_id: int = spec("compressed_pad_id", lo=0, lo_open=False, kind=int, default=2)
    n_embed_per_ngram: int = spec("n_embed_per_ngram", kind=int, default=512)
    kernel_size: int = spec("kernel_size", kind=int, default=4)
    dtype: str = spec("dtype", kind=str, default="bf16")
    # Bytes of one fetched row. 0 derives it: n_embed_per_ngram / n_head_per_ngram values of
    # `dtype`. fp8 tables carry block scales, so their presets give it explicitly.
    row_bytes: int = spec("row_bytes", lo=0, lo_open=False, kind=int, default=0)

    def __post_init__(self):
        for name in ("layer_ids", "engram_vocab_size"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        where = "EngramSpec"
        if not self.layer_ids or min(self.layer_ids) < 0 or len(set(self.layer_ids)) != len(self.layer_ids):
            raise UserError(f"{where}: layer_ids must be distinct non-negative layer indices")
        if len(self.engram_vocab_size) != self.max_ngram_size - 1:
            raise UserError(f"{where}: engram_vocab_size needs one entry per order 2..{self.max_ngram_size} "
                            f"({self.max_ngram_size - 1}), got {len(self.engram_vocab_size)}")
        if min(self.engram_vocab_size) < 2 or self.n_head_per_ngram < 1:
            raise UserError(f"{where}: engram_vocab_size entries must be >= 2 and n_head_per_ngram >= 1")
        if self.compressed_pad_id >= self.compressed_vocab_size:
            raise UserError(f"{where}: compressed_pad_id must be below compressed_vocab_size")
        if self.n_embed_per_ngram % self.n_head_per_ngram:
            raise UserError(f"{where}: n_embed_per_ngram must be a multiple of n_head_per_ngram")
        if self.row_bytes == 0:
            derived = self.n_embed_per_ngram // self.n_head_per_ngram * _dtype_bytes(self.dtype, where)
            object.__setattr__(self, "row_bytes", derived)

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
        """Rows of one layer's tables (each head's prime size is just above its vocab size)."""
        return sum(v * self.n_head_per_ngram for v in self.engram_vocab_size)

    @property
    def table_bytes_per_layer(self) -> int:
        return self.rows_per_layer * self.row_bytes

    @property
    def table_bytes(self) -> int:
        return self.table_bytes_per_layer * len(self.layer_ids)


@dataclass(frozen=True)
class Backbone:
    """Transformer shapes from which weights, FLOPs and KV-cache bytes are derived."""
    n_layers: int = spec("n_layers", kind=int)
    hidden_size: int = spec("hidden_size", kind=int)
    vocab_size: int = spec("vocab_size", kind=int)
    n_heads: int = spec("n_heads", kind=int)
    head_dim: int = spec("head_dim", kind=int)
    dtype: str = spec("dtype", kind=str, default="bf16")
    kv_dtype: str = spec("kv_dtype", kind=str, default="bf16")
    # GQA attention: KV cache holds K and V per KV head. MLA: a latent of kv_lora_rank + rope dims.
    n_kv_heads: int = spec("n_kv_heads", lo=0, lo_open=False, kind=int, default=0)
    kv_lora_rank: int = spec("kv_lora_rank", lo=0, lo_open=False, kind=int, default=0)
    qk_rope_head_dim: int = spec("qk_rope_head_dim", lo=0, lo_open=False, kind=int, default=0)
    # Attention weights per layer; 0 derives the GQA count from the shapes above.
    attn_params_per_layer: int = spec("attn_params_per_layer", lo=0, lo_open=False, kind=int, default=0)
    intermediate_size: int = spec("intermediate_size", lo=0, lo_open=False, kind=int, default=0)
    # Mixture of experts: the first `first_dense_layers` use the dense MLP.
    n_routed_experts: int = spec("n_routed_experts", lo=0, lo_open=False, kind=int, default=0)
    n_active_experts: int = spec("n_active_experts", lo=0, lo_open=False, kind=int, default=0)
    n_shared_experts: int = spec("n_shared_experts", lo=0, lo_open=False, kind=int, default=0)
    moe_intermediate_size: int = spec("moe_intermediate_size", lo=0, lo_open=False, kind=int, default=0)
    first_dense_layers: int = spec("first_dense_layers", lo=0, lo_open=False, kind=int, default=0)
    tie_embeddings: bool = spec("tie_embeddings", kind=bool, default=False)
    # Hyper-connection branches (deepseek-ai/Engram BackBoneConfig.hc_mult; 1 = none). The
    # Engram fusion has one key projection, norm pair and conv group per branch.
    hc_mult: int = spec("hc_mult", kind=int, default=1)

    def __post_init__(self):
        where = "backbone"
        _dtype_bytes(self.dtype, where)
        _dtype_bytes(self.kv_dtype, where)
        if (self.n_kv_heads > 0) == (self.kv_lora_rank > 0):
            raise UserError(f"{where}: give exactly one of n_kv_heads (GQA) or kv_lora_rank (MLA)")
        if self.kv_lora_rank and not self.attn_params_per_layer:
            raise UserError(f"{where}: MLA backbones must give attn_params_per_layer")
        if self.is_moe and not (self.n_active_experts and self.moe_intermediate_size):
            raise UserError(f"{where}: MoE needs n_active_experts and moe_intermediate_size")
        if self.n_active_experts > self.n_routed_experts:
            raise UserError(f"{where}: n_active_experts must not exceed n_routed_experts")
        if not self.intermediate_size and self.first_dense_layers + (0 if self.is_moe else self.n_layers):
            raise UserError(f"{where}: dense MLP layers need intermediate_size")

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    @property
    def weight_bytes_per_param(self) -> int:
        return DTYPE_BYTES[self.dtype]

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
    def total_params(self) -> int:
        moe_layers = self.n_layers - self.n_dense_layers
        per_moe = (self.n_routed_experts + self.n_shared_experts) * self.expert_params
        return (self.n_layers * self.attn_params + self.n_dense_layers * self.dense_mlp_params
                + moe_layers * per_moe + self.embedding_params)

    @property
    def weight_bytes(self) -> int:
        return self.total_params * self.weight_bytes_per_param

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        b = DTYPE_BYTES[self.kv_dtype]
        if self.kv_lora_rank:
            return (self.kv_lora_rank + self.qk_rope_head_dim) * b
        return 2 * self.n_kv_heads * self.head_dim * b

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv_bytes_per_token_per_layer * self.n_layers

    @property
    def attn_dim(self) -> int:
        """Per-head width that attention scores and values read (MLA absorbs into the latent)."""
        return self.kv_lora_rank + self.qk_rope_head_dim if self.kv_lora_rank else self.head_dim


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    backbone: Backbone
    engram: EngramSpec | None
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.engram and max(self.engram.layer_ids) >= self.backbone.n_layers:
            raise UserError(f"{self.name}: engram layer_ids must be below n_layers ({self.backbone.n_layers})")


def load_model(name_or_path: str | Path) -> ModelSpec:
    path = resolve("model", name_or_path)
    data = load_toml(path)
    where = str(path)
    unknown = sorted(set(data) - {"name", "description", "backbone", "engram"})
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (allowed: name, description, backbone, engram)")
    if "backbone" not in data:
        raise UserError(f"{where}: missing table [backbone]")
    backbone = _with_where(lambda: build(Backbone, data["backbone"], f"{where} [backbone]"), f"{where} [backbone]")
    engram = None
    if "engram" in data:
        engram = _with_where(lambda: build(EngramSpec, data["engram"], f"{where} [engram]"), f"{where} [engram]")
    return ModelSpec(name=str(data.get("name", path.stem)), description=str(data.get("description", "")),
                     backbone=backbone, engram=engram, source=path)


def _with_where(make, where: str):
    """Prefix validation errors raised inside __post_init__ with the file and table."""
    try:
        return make()
    except UserError as e:
        msg = str(e)
        raise UserError(msg if msg.startswith(where.split(" ")[0]) else f"{where}: {msg}") from None
