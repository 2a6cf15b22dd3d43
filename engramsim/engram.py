"""Exact Engram addressing: n-gram hashing and table geometry.

This reproduces `NgramHashMapping` of deepseek-ai/Engram (`engram_demo_v1.py`) bit for bit:

* per-layer odd multipliers `2*r + 1`, `r = default_rng(seed + 10007*layer_id).integers(0,
  half_bound, size=max_ngram_size, dtype=int64)` with
  `half_bound = max(1, (int64_max // compressed_vocab_size) // 2)`;
* one prime table size per (layer, order, head): walking layers in order, then orders 2..N,
  then heads, take the next prime above a running start that is not yet used anywhere in the
  model. The start resets to `engram_vocab_size[n-2] - 1` for each (layer, order) and then
  follows the last prime found;
* the order-n mix is the XOR over k < n of `shift_k(ids) * multiplier_k`, where `shift_k`
  moves ids right by k and fills with the compressed pad id;
* head j of order n reads index `mix % prime[layer][n-2][j]`; heads are laid out order-major,
  head-minor, and `MultiHeadEmbedding` adds the running sum of the primes as an offset to make
  a row id within the layer's single table (`row_offsets`).

Everything is numpy. The hash takes compressed token ids (see engramsim.tokenize).
"""

from __future__ import annotations

import functools

import numpy as np

from engramsim.errors import UserError
from engramsim.model import EngramSpec

LAYER_SEED_PRIME = 10007  # PRIME_1 in the reference
INT64_MAX = np.iinfo(np.int64).max
# Deterministic Miller-Rabin bases: exact for every n < 3.3e24, far beyond any table size.
_MR_BASES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)


def is_prime(n: int) -> bool:
    """Exact primality (the reference uses sympy.isprime; this gives the same answers)."""
    if n < 2:
        return False
    for p in _MR_BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in _MR_BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def find_next_prime(start: int, seen: set[int]) -> int:
    """The smallest prime > start not in `seen` (reference: find_next_prime)."""
    candidate = start + 1
    while not (is_prime(candidate) and candidate not in seen):
        candidate += 1
    return candidate


@functools.lru_cache(maxsize=64)
def _table_sizes(spec: EngramSpec) -> tuple[tuple[tuple[int, ...], ...], ...]:
    seen: set[int] = set()
    per_layer = []
    for _layer in spec.layer_ids:
        orders = []
        for vocab in spec.engram_vocab_size:
            start, heads = vocab - 1, []
            for _ in range(spec.n_head_per_ngram):
                prime = find_next_prime(start, seen)
                seen.add(prime)
                heads.append(prime)
                start = prime
            orders.append(tuple(heads))
        per_layer.append(tuple(orders))
    return tuple(per_layer)


def table_sizes(spec: EngramSpec) -> dict[int, list[list[int]]]:
    """{layer_id: [[prime per head] per order 2..N]}, exactly as the reference computes them."""
    return {layer: [list(heads) for heads in orders] for layer, orders in zip(spec.layer_ids, _table_sizes(spec))}


def head_sizes(spec: EngramSpec, layer_id: int) -> np.ndarray:
    """Prime size of each of the layer's (N-1)*K head tables, order-major, head-minor."""
    return np.array([p for heads in _table_sizes(spec)[_layer_index(spec, layer_id)] for p in heads], dtype=np.int64)


def row_offsets(spec: EngramSpec, layer_id: int) -> np.ndarray:
    """First row of each head table inside the layer's one embedding table
    (reference: MultiHeadEmbedding.offsets)."""
    sizes = head_sizes(spec, layer_id)
    return np.concatenate([[0], np.cumsum(sizes[:-1])]).astype(np.int64)


def layer_rows(spec: EngramSpec, layer_id: int) -> int:
    """Exact rows of one layer's table: the sum of its head primes."""
    return int(head_sizes(spec, layer_id).sum())


def layer_multipliers(spec: EngramSpec, layer_id: int) -> np.ndarray:
    """The layer's odd multipliers, one per position k < max_ngram_size."""
    half_bound = max(1, (int(INT64_MAX) // spec.compressed_vocab_size) // 2)
    rng = np.random.default_rng(int(spec.seed + LAYER_SEED_PRIME * int(layer_id)))
    r = rng.integers(low=0, high=half_bound, size=(spec.max_ngram_size,), dtype=np.int64)
    return r * 2 + 1


def _layer_index(spec: EngramSpec, layer_id: int) -> int:
    if layer_id not in spec.layer_ids:
        raise UserError(f"layer {layer_id} has no Engram table (Engram layers: {list(spec.layer_ids)})")
    return spec.layer_ids.index(layer_id)


def check_ids(ids: np.ndarray, spec: EngramSpec) -> None:
    """Compressed ids must lie in [0, compressed_vocab_size): larger ids would overflow the
    int64 products the multipliers are sized for."""
    if ids.size and (ids.min() < 0 or ids.max() >= spec.compressed_vocab_size):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise UserError(f"compressed token id {bad} out of range [0, {spec.compressed_vocab_size})")


def _mix_to_indices(shifts: list[np.ndarray], spec: EngramSpec, layer_id: int) -> np.ndarray:
    """XOR-mix the shifted ids per order and reduce modulo each head's prime.
    `shifts[k]` holds ids shifted right by k (pad-filled); returns shape shifts[0].shape + (H,)."""
    mult = layer_multipliers(spec, layer_id)
    sizes = head_sizes(spec, layer_id).reshape(spec.max_ngram_size - 1, spec.n_head_per_ngram)
    out = np.empty(shifts[0].shape + (spec.heads_per_layer,), dtype=np.int64)
    mix = shifts[0] * mult[0]
    K = spec.n_head_per_ngram
    for n in range(2, spec.max_ngram_size + 1):
        # The order-n mix extends the order-(n-1) mix by one term: XOR is associative, so this
        # equals the reference's recomputation from scratch.
        mix = np.bitwise_xor(mix, shifts[n - 1] * mult[n - 1])
        o = n - 2
        np.remainder(mix[..., None], sizes[o], out=out[..., o * K : (o + 1) * K])
    return out


def hash_ngrams(compressed_ids, spec: EngramSpec, layer_id: int) -> np.ndarray:
    """Per-head table indices (before offsets) of every token: int64 [B, T, (N-1)*K].

    Each row of `compressed_ids` ([B, T]) is one sequence; positions before its start read the
    compressed pad id, exactly as the reference's `_get_ngram_hashes`.
    """
    x = np.asarray(compressed_ids, dtype=np.int64)
    if x.ndim != 2:
        raise UserError(f"compressed_ids must be 2-D [B, T], got shape {x.shape}")
    check_ids(x, spec)
    _layer_index(spec, layer_id)
    T = x.shape[1]
    shifts = [x]
    for k in range(1, spec.max_ngram_size):
        s = np.full_like(x, spec.compressed_pad_id)
        s[:, k:] = x[:, : T - k] if k < T else s[:, k:]
        shifts.append(s)
    return _mix_to_indices(shifts, spec, layer_id)


def hash_stream(ids: np.ndarray, seq_starts: np.ndarray, spec: EngramSpec, layer_id: int) -> np.ndarray:
    """`hash_ngrams` for many sequences of different lengths concatenated into one 1-D stream.

    `seq_starts` are the offsets where sequences begin (first must be 0). Same result as hashing
    each sequence as its own row, without padding them to one length. Returns int64 [T, H].
    """
    x = np.asarray(ids, dtype=np.int64)
    check_ids(x, spec)
    _layer_index(spec, layer_id)
    pos = position_in_sequence(len(x), seq_starts)
    shifts = [x]
    for k in range(1, spec.max_ngram_size):
        s = np.empty_like(x)
        s[k:] = x[:-k] if k < len(x) else s[k:]
        s[pos < k] = spec.compressed_pad_id  # n-grams never reach back into the previous sequence
        shifts.append(s)
    return _mix_to_indices(shifts, spec, layer_id)


def position_in_sequence(n_tokens: int, seq_starts: np.ndarray) -> np.ndarray:
    """Index of each token inside its sequence, for a stream split at `seq_starts`."""
    starts = np.asarray(seq_starts, dtype=np.int64)
    if n_tokens and (len(starts) == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0) or starts[-1] >= n_tokens):
        raise UserError("sequence starts must begin at 0 and increase strictly inside the stream")
    lengths = np.diff(np.append(starts, n_tokens))
    return np.arange(n_tokens, dtype=np.int64) - np.repeat(starts, lengths)


def row_ids(ids: np.ndarray, seq_starts: np.ndarray, spec: EngramSpec, layer_id: int) -> np.ndarray:
    """Row ids within the layer's table (head index + head offset) of a stream: int64 [T, H]."""
    return hash_stream(ids, seq_starts, spec, layer_id) + row_offsets(spec, layer_id)
