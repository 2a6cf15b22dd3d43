"""A small decoder-only transformer with Engram modules: RMSNorm, GQA attention with RoPE and a
KV cache, gated MLP. Every computation is real and of the configured size.

The forward pass takes the Engram rows from a callable (`memory(layer_id)`), so the same
weights run with the table in any placement; `timer` splits the step into the components the
simulator models (see `StepTimer`).
"""

from __future__ import annotations

import copy
import time

from engramsim.realmodel._torch import torch
from engramsim.realmodel.config import RealModelConfig
from engramsim.realmodel.engram_module import EngramFusion

nn = torch.nn
F = torch.nn.functional


BUCKETS = ("hash", "pre", "gather", "fusion", "rest", "head")


class StepTimer:
    """Adds the time since the previous mark to a named bucket. Buckets follow the forward pass:
    "pre" until the first Engram layer, then "gather"/"fusion" at Engram layers, else "rest";
    "head" is the final norm and LM head alone (its one large matmul has a cost regime of its
    own on a CPU, `validate.fit_head`)."""

    def __init__(self):
        self.buckets = dict.fromkeys(BUCKETS, 0.0)
        self._last = time.perf_counter()

    def mark(self, bucket: str) -> None:
        now = time.perf_counter()
        self.buckets[bucket] += now - self._last
        self._last = now


class _NoTimer:
    def mark(self, bucket: str) -> None:
        pass


class KVCache:
    """K and V of every layer for the running batch, padded to the longest sequence.
    Row r of the batch is cache row r; `keep` compacts the batch when sequences finish."""

    def __init__(self, cfg: RealModelConfig, n_seqs: int, max_len: int, like=None):
        """`like`: a tensor whose device and dtype the cache takes (CPU fp32 when None)."""
        shape = (n_seqs, cfg.n_kv_heads, max_len, cfg.head_dim)
        opts = {} if like is None else {"device": like.device, "dtype": like.dtype}
        self.k = [torch.zeros(shape, **opts) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, **opts) for _ in range(cfg.n_layers)]

    def keep(self, rows: torch.Tensor) -> None:
        rows = rows.to(self.k[0].device)
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]


def _rope_tables(head_dim: int, max_len: int, theta: float = 10000.0):
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def _rotate(x, cos, sin):
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: RealModelConfig):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.hidden_size, (self.nh + 2 * self.nkv) * self.hd, bias=False)
        self.o = nn.Linear(self.nh * self.hd, cfg.hidden_size, bias=False)

    def forward(
        self, x, positions, rope, cache: KVCache, layer: int, prefill_row: int | None, decode_ctx: int | None = None
    ):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split([self.nh * self.hd, self.nkv * self.hd, self.nkv * self.hd], dim=-1)
        q = q.view(B, T, self.nh, self.hd).transpose(1, 2)
        k = k.view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = v.view(B, T, self.nkv, self.hd).transpose(1, 2)
        cos, sin = rope[0][positions].unsqueeze(1), rope[1][positions].unsqueeze(1)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        if prefill_row is not None:
            # One whole prompt: causal self-attention; its K/V seed the cache for decode.
            cache.k[layer][prefill_row, :, :T] = k[0]
            cache.v[layer][prefill_row, :, :T] = v[0]
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            # One new token per running sequence, attending to its own cached context only.
            pos = positions[:, 0]
            rows = torch.arange(B, device=x.device)
            cache.k[layer][rows, :, pos] = k[:, :, 0]
            cache.v[layer][rows, :, pos] = v[:, :, 0]
            # The caller knows the context length on the host: reading it off a GPU tensor
            # would stall the host at every layer.
            ctx = decode_ctx if decode_ctx is not None else int(pos.max()) + 1
            mask = (torch.arange(ctx, device=x.device)[None, :] <= pos[:, None])[:, None, None, :]
            out = F.scaled_dot_product_attention(
                q, cache.k[layer][:, :, :ctx], cache.v[layer][:, :, :ctx], attn_mask=mask, enable_gqa=True
            )
        return self.o(out.transpose(1, 2).reshape(B, T, self.nh * self.hd))


class GatedMLP(nn.Module):
    def __init__(self, cfg: RealModelConfig):
        super().__init__()
        self.gate_up = nn.Linear(cfg.hidden_size, 2 * cfg.intermediate_size, bias=False)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: RealModelConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.hidden_size, eps=1e-5)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.hidden_size, eps=1e-5)
        self.mlp = GatedMLP(cfg)

    def forward(self, x, positions, rope, cache, layer, prefill_row, decode_ctx=None):
        x = x + self.attn(self.attn_norm(x), positions, rope, cache, layer, prefill_row, decode_ctx)
        return x + self.mlp(self.mlp_norm(x))


class EngramLM(nn.Module):
    """The backbone, plus an Engram fusion before the attention of each Engram layer (as in the
    reference TransformerBlock). `with_engram=False` is the no-Engram baseline."""

    def __init__(self, cfg: RealModelConfig, max_len: int, with_engram: bool = True):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.hidden_size, eps=1e-5)
        self.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        # Built last, so the backbone's weights are the same draws with or without Engram.
        memory_dim = (cfg.max_ngram_size - 1) * cfg.n_embed_per_ngram
        self.engram = nn.ModuleDict()
        if with_engram:
            for layer in cfg.engram_layer_ids:
                self.engram[str(layer)] = EngramFusion(
                    cfg.hidden_size, memory_dim, cfg.kernel_size, dilation=cfg.max_ngram_size
                )
        # Buffers, so `.to(device, dtype)` moves them with the weights; not saved with them.
        cos, sin = _rope_tables(cfg.head_dim, max_len)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def without_engram(self) -> EngramLM:
        """The no-Engram baseline on this model's own backbone: every weight and buffer is the
        same tensor, not an equal copy. Two copies sit at different addresses, and on a CPU
        that alone moved the backbone's step time by up to 3-4% between the two models, fixed
        for a whole validation run (pages, cache sets), which no round-to-round CI sees."""
        base = copy.copy(self)  # shallow: shares the modules, parameters and buffers
        base._modules = {**self._modules, "engram": nn.ModuleDict()}
        return base

    @property
    def rope(self):
        return self.rope_cos, self.rope_sin

    @property
    def engram_layers(self) -> list[int]:
        return sorted(int(k) for k in self.engram)

    def forward(
        self,
        tokens,
        positions,
        cache: KVCache,
        conv_state: dict,
        memory,
        prefill_row: int | None = None,
        timer=None,
        decode_ctx: int | None = None,
    ):
        """Logits of the last position of each row. `memory(layer)` returns that layer's gathered
        rows as [B*T, memory_dim]; `conv_state[layer]` carries the short conv across steps;
        `decode_ctx` is a decode step's longest context (max position + 1)."""
        timer = timer or _NoTimer()
        B, T = tokens.shape
        x = self.embed(tokens)
        first_engram = min(self.cfg.engram_layer_ids)  # the split holds for the baseline too
        for layer, block in enumerate(self.blocks):
            if layer == first_engram:
                timer.mark("pre")
            fusion = self.engram[str(layer)] if str(layer) in self.engram else None
            if fusion is not None:
                timer.mark("rest")
                rows = memory(layer).view(B, T, -1)
                timer.mark("gather")
                out, conv_state[layer] = fusion(x, rows, conv_state[layer])
                x = x + out
                timer.mark("fusion")
            x = block(x, positions, self.rope, cache, layer, prefill_row, decode_ctx)
        timer.mark("rest")
        logits = self.head(self.norm(x[:, -1]))
        timer.mark("head")
        return logits
