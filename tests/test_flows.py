import math

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim.sim.flows import FlowNetwork, Resource


def run_flows(specs, capacity=10.0):
    """specs: (start_s, amount, coef, cap); returns finish times and the resource."""
    env = simpy.Environment()
    net = FlowNetwork(env)
    res = Resource("host0.link", capacity)
    finish = {}

    def go(i, start, amount, coef, cap):
        yield env.timeout(start)
        yield net.transfer(amount, [(res, coef)], cap=cap)
        finish[i] = env.now

    for i, spec in enumerate(specs):
        env.process(go(i, *spec))
    env.run()
    return finish, res, net


def test_two_flows_share_then_one_speeds_up():
    # a, b share 10 B/s from t=0; c joins at 0.5 s; hand-computed in the module docstring terms.
    finish, res, _ = run_flows([(0, 10, 1, math.inf), (0, 10, 1, math.inf), (0.5, 5, 1, math.inf)])
    assert finish[2] == pytest.approx(2.0)
    assert finish[0] == pytest.approx(2.5) and finish[1] == pytest.approx(2.5)
    assert res.units == pytest.approx(25.0)


def test_private_cap_leaves_bandwidth_to_others():
    # Flow 0 is capped at 2 B/s; flow 1 takes the remaining 8 B/s.
    finish, _, net = run_flows([(0, 4, 1, 2.0), (0, 16, 1, math.inf)])
    assert finish[0] == pytest.approx(2.0)
    assert finish[1] == pytest.approx(2.0)
    assert set(net.limited_s) == {"cap", "link"}


def test_coefficient_scales_resource_load():
    # A flow loading the resource twice per unit gets half the rate.
    finish, res, _ = run_flows([(0, 10, 2.0, math.inf)])
    assert finish[0] == pytest.approx(2.0)
    assert res.units == pytest.approx(20.0)


def test_latency_delays_start():
    env = simpy.Environment()
    net = FlowNetwork(env)
    res = Resource("x.link", 1.0)
    ev = net.transfer(3.0, [(res, 1.0)], latency_s=2.0)
    env.run(ev)
    assert env.now == pytest.approx(5.0)


def test_flow_without_resource_or_cap_is_rejected():
    with pytest.raises(ValueError):
        FlowNetwork(simpy.Environment()).transfer(1.0, [])


@settings(deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(0, 2), st.floats(0.1, 50), st.floats(0.5, 3), st.floats(0.5, 100)), min_size=1, max_size=6
    )
)
def test_bytes_are_conserved_and_capacity_respected(specs):
    finish, res, _ = run_flows(specs)
    assert res.units == pytest.approx(sum(a * c for _, a, c, _ in specs), rel=1e-6)
    # The resource can never carry more than capacity x elapsed time.
    assert res.units <= res.capacity * max(finish.values()) * (1 + 1e-9)


def processor_sharing_finish(start_s, capacity, coef, amounts):
    """Exact finish times of flows that start together on one resource with no caps: they share
    it equally, so the k-th smallest finishes after sum over j <= k of (a_j - a_{j-1}) x flows
    still running x coef / capacity."""
    order = sorted(range(len(amounts)), key=lambda i: amounts[i])
    finish, t, done_amount = {}, 0.0, 0.0
    for rank, i in enumerate(order):
        t += (amounts[i] - done_amount) * (len(amounts) - rank) * coef / capacity
        done_amount = amounts[i]
        finish[i] = start_s + t
    return finish


def magnitudes(lo, hi):
    """Positive floats spread evenly over orders of magnitude 10**lo .. 10**hi."""
    return st.floats(lo, hi).map(lambda e: 10.0**e)


# Groups of flows, each on its own resource; a group is (capacity, coefficient, amounts).
flow_groups = st.lists(
    st.tuples(magnitudes(-6, 6), magnitudes(-2, 2), st.lists(magnitudes(-6, 6), min_size=1, max_size=4)),
    min_size=1,
    max_size=3,
)


@settings(deadline=None)
@given(st.one_of(st.just(0.0), magnitudes(-3, 7)), flow_groups)
def test_flows_finish_correctly_at_any_clock_and_scale(start_s, groups):
    """Clocks up to 1e7 s, capacities and amounts over 12 orders of magnitude: every flow ends,
    after a bounded number of events, at its exact processor-sharing time, bytes conserved."""
    env = simpy.Environment(initial_time=start_s)
    net = FlowNetwork(env)
    finish, resources, expected = {}, [], {}

    def go(key, amount, res, coef):
        yield net.transfer(amount, [(res, coef)])
        finish[key] = env.now

    n_flows = 0
    for g, (capacity, coef, amounts) in enumerate(groups):
        res = Resource(f"r{g}.link", capacity)
        resources.append((res, coef * sum(amounts)))
        for i, amount in enumerate(amounts):
            env.process(go((g, i), amount, res, coef))
            n_flows += 1
        expected.update({(g, i): t for i, t in processor_sharing_finish(start_s, capacity, coef, amounts).items()})
    # Each flow costs a process start, a transfer start and a finish; each finish replans once.
    budget = 10 * n_flows + 10
    events = 0
    while env.peek() < math.inf:
        env.step()
        events += 1
        assert events <= budget, "the flow network keeps rescheduling itself"
    assert finish.keys() == expected.keys()
    for key, t in expected.items():
        assert finish[key] == pytest.approx(t, rel=1e-9, abs=1e-12)
    for res, carried in resources:
        assert res.units == pytest.approx(carried, rel=1e-9)


@pytest.mark.parametrize("start_s", [1e4, 1e7])
def test_a_tiny_remainder_at_a_large_clock_finishes(start_s):
    # At 1e7 s one clock tick is ~2e-9 s: a 1e-12 s transfer used to reschedule forever.
    env = simpy.Environment(initial_time=start_s)
    net = FlowNetwork(env)
    res = Resource("x.link", 1e9)
    first = net.transfer(1e-3, [(res, 1.0)])
    second = net.transfer(1e9, [(res, 1.0)])
    env.run(simpy.AllOf(env, [first, second]))
    assert env.now == pytest.approx(start_s + 1.0, rel=1e-12)
    assert res.units == pytest.approx(1e9 + 1e-3, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(
    caps=st.lists(st.floats(1e-3, 1e12), min_size=0, max_size=4),
    coefs=st.lists(st.floats(1e-3, 1e3), min_size=4, max_size=4),
    cap=st.one_of(st.just(math.inf), st.floats(1e-3, 1e12)),
    kinds=st.lists(st.sampled_from(["link", "dram", "ssd_iops"]), min_size=4, max_size=4),
)
def test_a_lone_flow_gets_the_rate_and_limit_the_general_filling_gives(caps, coefs, cap, kinds):
    """The lone-flow shortcut of _fill_rates is exact: same float rate, same limit."""
    from engramsim.sim.flows import Flow, _fill_one, _fill_rounds

    if not caps and math.isinf(cap):
        return
    resources = [Resource(f"host{i}.{kind}", c) for i, (c, kind) in enumerate(zip(caps, kinds))]
    loads = list(zip(resources, coefs))
    fast, slow = (Flow(1.0, loads, cap, "cap", None) for _ in range(2))
    assert _fill_one(fast)
    _fill_rounds([slow])
    assert (fast.rate, fast.limit) == (slow.rate, slow.limit)


def test_a_flow_naming_a_resource_twice_takes_the_general_path():
    from engramsim.sim.flows import Flow, _fill_one

    link = Resource("host0.link", 10.0)
    assert not _fill_one(Flow(1.0, [(link, 1.0), (link, 1.0)], math.inf, "cap", None))
