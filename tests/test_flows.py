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


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 2), st.floats(0.1, 50), st.floats(0.5, 3), st.floats(0.5, 100)),
                min_size=1, max_size=6))
def test_bytes_are_conserved_and_capacity_respected(specs):
    finish, res, _ = run_flows(specs)
    assert res.units == pytest.approx(sum(a * c for _, a, c, _ in specs), rel=1e-6)
    # The resource can never carry more than capacity x elapsed time.
    assert res.units <= res.capacity * max(finish.values()) * (1 + 1e-9)
