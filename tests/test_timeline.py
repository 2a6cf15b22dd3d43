import json
from collections import defaultdict

import pytest

from engramsim.report.timeline import Timeline
from engramsim.sim.run import simulate
from engramsim.sim.tiers import Placement
from tests.clikit import run_cli as cli
from tests.simkit import scenario, tiny_workload

PLACEMENTS = [Placement("dram-copy"), Placement("ssd")]


def _scenario(**kw):
    # Two replicas, so the trace has two replica tracks per run; prefetch off, so SSD reads stall.
    return scenario(tiny_workload(num_seqs=12, out=(4, 12)), gpus=2, **kw)


@pytest.fixture(scope="module")
def traced():
    timeline = Timeline()
    report = simulate(_scenario(prefetch=False), PLACEMENTS, timeline=timeline)
    return report, json.loads(json.dumps(timeline.to_dict()))


def _by_pid(trace, ph):
    out = defaultdict(list)
    for e in trace["traceEvents"]:
        if e["ph"] == ph:
            out[e["pid"]].append(e)
    return out


def test_the_trace_names_one_process_per_run_and_a_thread_per_replica(traced):
    _, trace = traced
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert names == {1: "no-Engram baseline", 2: "dram-copy", 3: "ssd"}
    threads = {(e["pid"], e["tid"]) for e in trace["traceEvents"] if e["name"] == "thread_name"}
    assert threads == {(p, r) for p in (1, 2, 3) for r in (0, 1)}


def test_steps_are_in_microseconds_and_end_at_the_makespan(traced):
    report, trace = traced
    spans = _by_pid(trace, "X")
    makespans = [report.baseline["makespan_s"]] + [r.makespan_s for r in report.runs]
    steps = [report.baseline["steps"]] + [r.steps for r in report.runs]
    for pid, makespan, n_steps in zip((1, 2, 3), makespans, steps):
        step_spans = [e for e in spans[pid] if e["cat"] == "step"]
        assert len(step_spans) == n_steps
        assert max(e["ts"] + e["dur"] for e in step_spans) == pytest.approx(makespan * 1e6, abs=0.01)
        assert all(e["dur"] > 0 and e["args"]["batch_size"] >= 1 for e in step_spans)


def test_a_replicas_steps_follow_one_another_and_stalls_nest_inside_them(traced):
    _, trace = traced
    for events in _by_pid(trace, "X").values():
        for replica in (0, 1):
            steps = [e for e in events if e["tid"] == replica and e["cat"] == "step"]
            assert [e["ts"] for e in steps] == sorted(e["ts"] for e in steps)
            for a, b in zip(steps, steps[1:]):
                assert a["ts"] + a["dur"] <= b["ts"] + 1e-6
            for stall in (e for e in events if e["tid"] == replica and e["cat"] == "stall"):
                assert any(
                    s["ts"] <= stall["ts"] and stall["ts"] + stall["dur"] <= s["ts"] + s["dur"] + 1e-3 for s in steps
                )


def test_stall_spans_add_up_to_the_reported_stall_time(traced):
    report, trace = traced
    spans = _by_pid(trace, "X")
    for pid, run in zip((2, 3), report.runs):
        stalls = [e["dur"] for e in spans[pid] if e["cat"] == "stall"]
        # Each span is kept to the ns: the sum may differ by a ns per span.
        assert sum(stalls) / 1e6 == pytest.approx(run.stall_s, abs=1e-9 * len(stalls))
    assert report.runs[1].stall_s > 0  # synchronous SSD reads stall
    assert not [e for e in spans[1] if e["cat"] == "stall"]  # the baseline fetches nothing


def test_every_fetch_ends_after_it_begins_and_once(traced):
    report, trace = traced
    begins = {e["id"]: e for e in trace["traceEvents"] if e["ph"] == "b"}
    ends = [e for e in trace["traceEvents"] if e["ph"] == "e"]
    assert len(ends) == len(begins) > 0
    for e in ends:
        assert e["ts"] >= begins[e["id"]]["ts"] and e["name"] == begins[e["id"]]["name"] == "fetch L1"
    # Without prefetch, one fetch per Engram layer per step.
    for pid, run in zip((2, 3), report.runs):
        assert sum(1 for b in begins.values() if b["pid"] == pid) == run.steps


def test_counters_stay_in_their_ranges_and_in_time_order(traced):
    _, trace = traced
    for counters in _by_pid(trace, "C").values():
        ts = [c["ts"] for c in counters]
        assert ts == sorted(ts) and ts[0] >= 0
        for c in counters:
            if c["name"] == "utilization":
                assert all(0 <= v <= 1 + 1e-9 for v in c["args"].values())
            if c["name"].endswith("KV blocks used"):
                assert c["args"]["blocks"] >= 0
    ssd_util = [c["args"]["ssd_iops"] for c in _by_pid(trace, "C")[3] if c["name"] == "utilization"]
    assert max(ssd_util) > 0.5  # synchronous reads saturate the SSD's IOPS while they last
    ssd = scenario().hw.ssd
    in_flight = [c["args"]["reads"] for c in _by_pid(trace, "C")[3] if c["name"] == "SSD reads in flight"]
    # Little's law, capped as the IOPS resource is: never more reads than the queues hold.
    assert 0 < max(in_flight) <= ssd.devices * ssd.queue_depth * (1 + 1e-9)


def test_recording_changes_nothing_in_the_results():
    without = simulate(_scenario(), PLACEMENTS).to_dict()
    with_trace = simulate(_scenario(), PLACEMENTS, timeline=Timeline()).to_dict()
    assert with_trace == without


def test_simulate_timeline_writes_a_valid_trace(tmp_path):
    path = tmp_path / "run.json"
    r = cli(
        "simulate", "--workload", "fixed", "--max-seqs", "8", "--tier", "dram-uva", "--timeline", str(path), "--json"
    )
    assert r.returncode == 0, r.stderr
    trace = json.loads(path.read_text())
    assert {"prefill", "decode", "fetch L1"} <= {e["name"] for e in trace["traceEvents"]}
    assert trace["displayTimeUnit"] == "ms"
