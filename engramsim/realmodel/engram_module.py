"""The Engram module of the real model: exact hashed addressing and the reference gated fusion.

Addressing uses engramsim.engram (the exact NgramHashMapping of deepseek-ai/Engram): the
per-head indices of a token, plus each head table's offset in its layer's table, plus the
layer's offset in the one table that holds every Engram layer, give global row ids.

The fusion follows `Engram.forward` of engram_demo_v1.py with one hyper-connection branch
(hc_mult = 1, as in a plain residual stream):
  e = concat(rows)                                  memory vector, (N-1) * n_embed_per_ngram
  g = sigmoid(signed_sqrt(<RMSNorm(W_k e), RMSNorm(h)> / sqrt(d)))
  v = g * (W_v e)
  out = v + SiLU(causal depthwise conv(RMSNorm(v), kernel_size, dilation = max_ngram_size))
and the block adds `out` to the residual stream before attention.
"""

from __future__ import annotations

import math

import numpy as np

from engramsim.model import EngramSpec
from engramsim.realmodel._torch import torch

nn = torch.nn
F = torch.nn.functional


class EngramFusion(nn.Module):
    def __init__(self, hidden_size: int, memory_dim: int, kernel_size: int, dilation: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.key_proj = nn.Linear(memory_dim, hidden_size)
        self.value_proj = nn.Linear(memory_dim, hidden_size)
        self.key_norm = nn.RMSNorm(hidden_size)
        self.query_norm = nn.RMSNorm(hidden_size)
        self.conv_norm = nn.RMSNorm(hidden_size, eps=1e-5)
        # No padding: the caller's conv state is the causal left context (zeros at sequence start).
        self.conv = nn.Conv1d(hidden_size, hidden_size, kernel_size, groups=hidden_size, bias=False, dilation=dilation)
        self.state_len = (kernel_size - 1) * dilation

    def initial_state(self, batch: int):
        w = self.conv.weight  # on the module's device, in its dtype
        return torch.zeros(batch, self.state_len, self.hidden_size, device=w.device, dtype=w.dtype)

    def forward(self, hidden, memory, conv_state):
        """hidden [B,T,d], memory [B,T,memory_dim], conv_state [B,state_len,d] -> (out, new state)."""
        key = self.key_norm(self.key_proj(memory))
        query = self.query_norm(hidden)
        gate = (key * query).sum(dim=-1) / math.sqrt(self.hidden_size)
        gate = (gate.abs().clamp_min(1e-6).sqrt() * gate.sign()).sigmoid().unsqueeze(-1)
        value = gate * self.value_proj(memory)
        context = torch.cat([conv_state, self.conv_norm(value)], dim=1)
        conv = F.silu(self.conv(context.transpose(1, 2))).transpose(1, 2)
        return value + conv, context[:, -self.state_len :]


class Addressing:
    """Token ids -> global row ids of the one table that holds every Engram layer."""

    def __init__(self, spec: EngramSpec):
        from engramsim.engram import layer_rows, row_offsets

        self.spec = spec
        self.offsets: dict[int, np.ndarray] = {}
        self.total_rows = 0
        for layer in spec.layer_ids:  # layers follow each other in the one table
            self.offsets[layer] = self.total_rows + row_offsets(spec, layer)
            self.total_rows += layer_rows(spec, layer)

    def rows(self, token_ids: np.ndarray, layer_id: int, last_only: bool = False) -> np.ndarray:
        """token_ids [B,T] (compressed ids) -> int64 row ids [B*T, heads_per_layer]; with
        `last_only`, of the last position only ([B, heads]): a decode step's n-gram window."""
        from engramsim.engram import hash_ngrams

        hashed = np.asarray(hash_ngrams(token_ids, self.spec, layer_id), dtype=np.int64)
        if last_only:
            hashed = hashed[:, -1:]
        return (hashed + self.offsets[layer_id]).reshape(-1, self.spec.heads_per_layer)
