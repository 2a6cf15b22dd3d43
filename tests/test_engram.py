"""The Engram hash against an independent transcription of deepseek-ai/Engram's NgramHashMapping."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim import engram
from engramsim.errors import UserError
from engramsim.model import EngramSpec

DEMO = EngramSpec(
    layer_ids=[1, 15],
    max_ngram_size=3,
    n_head_per_ngram=8,
    engram_vocab_size=[646400, 646400],
    seed=0,
    compressed_vocab_size=99546,
    compressed_pad_id=2,
)
# DeepSeek-V4.1-Flash-like: orders 2..4, 8 heads, 16M rows per head.
FOUR_GRAM = EngramSpec(
    layer_ids=[1, 14],
    max_ngram_size=4,
    n_head_per_ngram=8,
    engram_vocab_size=[16_000_000] * 3,
    seed=0,
    compressed_vocab_size=99546,
    compressed_pad_id=2,
    n_embed_per_ngram=2048,
)


def _trial_division_prime(n):
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def _reference_sizes(vocab_sizes, n_heads, layer_ids):
    """calculate_vocab_size_across_layers, transcribed with a naive primality test."""
    seen, out = set(), {}
    for layer in layer_ids:
        per_order = []
        for vocab in vocab_sizes:
            start, heads = vocab - 1, []
            for _ in range(n_heads):
                c = start + 1
                while not (_trial_division_prime(c) and c not in seen):
                    c += 1
                seen.add(c)
                heads.append(c)
                start = c
            per_order.append(heads)
        out[layer] = per_order
    return out


def _reference_hash(x, spec, layer_id, sizes):
    """_get_ngram_hashes, transcribed line by line (np.pad shifts, mix recomputed per order)."""
    x = np.asarray(x, dtype=np.int64)
    B, T = x.shape
    half_bound = max(1, (np.iinfo(np.int64).max // spec.compressed_vocab_size) // 2)
    g = np.random.default_rng(int(spec.seed + 10007 * int(layer_id)))
    mult = g.integers(low=0, high=half_bound, size=(spec.max_ngram_size,), dtype=np.int64) * 2 + 1

    def shift_k(k):
        if k == 0:
            return x
        return np.pad(x, ((0, 0), (k, 0)), mode="constant", constant_values=spec.compressed_pad_id)[:, :T]

    shifts = [shift_k(k) for k in range(spec.max_ngram_size)]
    out = []
    for n in range(2, spec.max_ngram_size + 1):
        mix = shifts[0] * mult[0]
        for k in range(1, n):
            mix = np.bitwise_xor(mix, shifts[k] * mult[k])
        for mod in sizes[layer_id][n - 2]:
            out.append((mix % int(mod)).astype(np.int64))
    return np.stack(out, axis=2)


@pytest.mark.parametrize("spec", [DEMO, FOUR_GRAM], ids=["demo", "four-gram"])
def test_table_sizes_match_reference(spec):
    assert engram.table_sizes(spec) == _reference_sizes(spec.engram_vocab_size, spec.n_head_per_ngram, spec.layer_ids)


def test_demo_first_primes_by_hand():
    # The first primes above 646,399 are 646,403 and 646,411 (trial division); order 3 of layer 1
    # starts its own search from 646,399 again but may not reuse order 2's primes.
    sizes = engram.table_sizes(DEMO)
    assert sizes[1][0][:2] == [646403, 646411]
    assert sizes[1][1][0] > sizes[1][0][-1]


@pytest.mark.parametrize("spec", [DEMO, FOUR_GRAM], ids=["demo", "four-gram"])
def test_prime_invariants(spec):
    sizes = engram.table_sizes(spec)
    flat = [p for layer in sizes.values() for order in layer for p in order]
    assert len(flat) == len(set(flat)), "a prime is reused"
    assert all(engram.is_prime(p) and _trial_division_prime(p) for p in flat)
    for layer in sizes.values():
        for vocab, heads in zip(spec.engram_vocab_size, layer):
            assert len(heads) == spec.n_head_per_ngram
            assert heads == sorted(heads) and heads[0] >= vocab


@pytest.mark.parametrize("spec", [DEMO, FOUR_GRAM], ids=["demo", "four-gram"])
def test_hash_matches_reference(spec):
    rng = np.random.default_rng(7)
    x = rng.integers(0, spec.compressed_vocab_size, size=(3, 41))
    x[0, :5] = spec.compressed_pad_id  # pads inside a row hash like any other id
    sizes = _reference_sizes(spec.engram_vocab_size, spec.n_head_per_ngram, spec.layer_ids)
    for layer in spec.layer_ids:
        got = engram.hash_ngrams(x, spec, layer)
        assert got.dtype == np.int64 and got.shape == (3, 41, spec.heads_per_layer)
        np.testing.assert_array_equal(got, _reference_hash(x, spec, layer, sizes))


def test_hash_is_below_head_sizes_and_layers_differ():
    x = np.arange(200, dtype=np.int64).reshape(2, 100) * 97 % DEMO.compressed_vocab_size
    a = engram.hash_ngrams(x, DEMO, 1)
    b = engram.hash_ngrams(x, DEMO, 15)
    assert np.all(a < engram.head_sizes(DEMO, 1)) and np.all(a >= 0)
    assert not np.array_equal(a, b)


def test_multipliers_are_odd_and_bounded():
    m = engram.layer_multipliers(DEMO, 1)
    half_bound = (np.iinfo(np.int64).max // DEMO.compressed_vocab_size) // 2
    assert len(m) == 3 and np.all(m % 2 == 1) and np.all(m < 2 * half_bound)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=5), st.integers(0, 2**31))
def test_stream_equals_per_sequence_hash(lengths, seed):
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(0, DEMO.compressed_vocab_size, size=n) for n in lengths]
    starts = np.concatenate([[0], np.cumsum(lengths[:-1])])
    got = engram.hash_stream(np.concatenate(seqs), starts, DEMO, 15)
    want = np.concatenate([engram.hash_ngrams(s[None], DEMO, 15)[0] for s in seqs])
    np.testing.assert_array_equal(got, want)


def test_row_ids_apply_offsets():
    x = np.array([5, 6, 7, 8], dtype=np.int64)
    rows = engram.row_ids(x, np.array([0]), DEMO, 1)
    idx = engram.hash_ngrams(x[None], DEMO, 1)[0]
    sizes = engram.head_sizes(DEMO, 1)
    np.testing.assert_array_equal(rows[:, 1] - idx[:, 1], sizes[0])
    assert rows.max() < engram.layer_rows(DEMO, 1) == sizes.sum()


@pytest.mark.parametrize("bad", [-1, DEMO.compressed_vocab_size])
def test_out_of_range_id_is_a_user_error(bad):
    with pytest.raises(UserError, match="out of range"):
        engram.hash_ngrams(np.array([[1, bad]]), DEMO, 1)


def test_unknown_layer_is_a_user_error():
    with pytest.raises(UserError, match="no Engram table"):
        engram.hash_ngrams(np.array([[1, 2]]), DEMO, 3)
