"""Hot-row cache policies on tiny hand-checked traces, and the LRU stack-distance curve."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim import cache
from engramsim.errors import UserError


def test_stack_distances_by_hand():
    # a b c a b b d a : distances -1 -1 -1 2 2 0 -1 2
    trace = np.array([0, 1, 2, 0, 1, 1, 3, 0])
    np.testing.assert_array_equal(cache.stack_distances(trace), [-1, -1, -1, 2, 2, 0, -1, 2])


def test_lru_by_hand():
    trace = [0, 1, 2, 0, 1, 1, 3, 0]
    # C=1: only the repeated b hits. C=2: b b. C=3: a, b, b, and the last a (d is 3rd distinct).
    np.testing.assert_allclose(cache.hit_rate_curve(trace, [0, 1, 2, 3, 4], "lru"), np.array([0, 1, 1, 4, 4]) / 8)


def test_lfu_by_hand():
    # C=2: a a b c a : after a a (count 2), b fills, c evicts b (count 1 < 2), a hits.
    trace = [0, 0, 1, 2, 0]
    np.testing.assert_allclose(cache.hit_rate_curve(trace, [1, 2], "lfu"), [1 / 5, 2 / 5])
    # LFU keeps the frequent row where LRU loses it: a a a b c a with C=2.
    t2 = [0, 0, 0, 1, 2, 0]
    assert cache.lfu_hits(t2, 2) == 3 and cache.lru_hits(t2, 2) == 2


def test_static_topk_by_hand():
    # Train half: a a a b b c -> ranks a, b, c. Eval half: a b d a c d.
    trace = [0, 0, 0, 1, 1, 2, 0, 1, 3, 0, 2, 3]
    np.testing.assert_allclose(
        cache.hit_rate_curve(trace, [0, 1, 2, 3, 10], "static-topk"), np.array([0, 2, 3, 4, 4]) / 6
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=300), st.lists(st.integers(0, 40), min_size=1, max_size=6))
def test_lru_curve_equals_direct_simulation(trace, caps):
    curve = cache.hit_rate_curve(trace, caps, "lru")
    want = [cache.lru_hits(trace, c) / len(trace) for c in caps]
    np.testing.assert_allclose(curve, want)


def test_lru_curve_equals_direct_simulation_on_zipf():
    rng = np.random.default_rng(3)
    trace = rng.zipf(1.2, 30000) % 2000
    caps = [1, 7, 64, 300, 1999, 5000]
    np.testing.assert_allclose(
        cache.hit_rate_curve(trace, caps, "lru"), [cache.lru_hits(trace, c) / trace.size for c in caps]
    )


@settings(max_examples=40, deadline=None)
@given(st.permutations(list(range(40))))
def test_count_earlier_smaller_brute_force(perm):
    v = np.array(perm)
    want = [sum(v[j] < v[i] for j in range(i)) for i in range(len(v))]
    np.testing.assert_array_equal(cache.count_earlier_smaller(v), want)


@pytest.mark.parametrize("policy", cache.POLICIES)
def test_curves_are_monotone_and_bounded(policy):
    rng = np.random.default_rng(1)
    trace = rng.zipf(1.3, 4000) % 500
    caps = [0, 1, 4, 16, 64, 256, 1024]
    curve = cache.hit_rate_curve(trace, caps, policy)
    assert curve[0] == 0 and np.all(np.diff(curve) >= 0) and curve[-1] <= 1


def test_bad_input():
    with pytest.raises(UserError, match="empty"):
        cache.hit_rate_curve([], [1], "lru")
    with pytest.raises(UserError, match="unknown cache policy"):
        cache.hit_rate_curve([1, 2], [1], "fifo")
    with pytest.raises(UserError, match=">= 0"):
        cache.hit_rate_curve([1, 2], [-1], "lru")
