"""`vllm bench serve`'s figures from a hand-checkable set of finished sequences."""

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim.results import _inter_token_s, summarize_run, vllm_bench_names
from engramsim.sim.scheduler import Scheduler
from engramsim.workload import Engine


def _seq(arrival, prompt, token_times):
    return SimpleNamespace(
        arrival_s=arrival,
        prompt_len=prompt,
        out=len(token_times),
        first_token_s=token_times[0],
        finish_s=token_times[-1],
        token_s=list(token_times),
    )


def test_hand_checked_figures():
    # Request A arrives at 0, tokens at 1, 2, 4; request B arrives at 1, one token at 3.
    raw = SimpleNamespace(makespan_s=4.0, seqs=[_seq(0.0, 10, [1.0, 2.0, 4.0]), _seq(1.0, 6, [3.0])])
    b = summarize_run(raw)["bench"]
    assert b["duration"] == 4.0 and b["completed"] == 2
    assert b["request_throughput"] == 0.5 and b["output_throughput"] == 1.0
    assert b["total_input_tokens"] == 16 and b["total_token_throughput"] == 5.0
    assert b["mean_ttft_ms"] == 1500.0 and b["median_ttft_ms"] == 1500.0  # TTFTs 1 s and 2 s
    assert b["mean_tpot_ms"] == 1500.0  # only A: (4 - 1) / 2
    assert b["mean_itl_ms"] == 1500.0 and b["median_itl_ms"] == 1500.0  # gaps 1 s and 2 s
    assert b["p99_itl_ms"] == pytest.approx(1990.0)  # np.percentile, linear
    assert b["mean_e2el_ms"] == 3000.0  # 4 s and 2 s


def test_scheduler_records_inter_token_gaps():
    from engramsim.sim.scheduler import Seq

    sched = Scheduler(Engine(), kv_blocks=1)
    seq = Seq(0, 0.0, 4, 3)
    sched.add(seq)
    assert sched.schedule() == ([seq], True)  # admitted
    for now in (1.0, 1.5, 3.0):
        sched.finish_step([seq], now)
    assert seq.itl_s == [0.5, 1.5] and seq.finish_s == 3.0
    assert vllm_bench_names(SimpleNamespace(makespan_s=3.0, seqs=[seq]), [1.0], [1.0], 3)["median_itl_ms"] == 1000.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1e4, allow_nan=False), max_size=6).map(sorted), max_size=8))
def test_inter_token_gaps_equal_a_diff_per_request(token_times):
    # One diff over all token times, less the joins, gives each request's gaps float for float.
    seqs = [SimpleNamespace(token_s=t) for t in token_times]
    per_request = np.concatenate([np.diff(t) for t in token_times] or [np.zeros(0)])
    assert _inter_token_s(seqs).tobytes() == per_request.tobytes()


def test_without_inter_token_latencies_every_other_figure_is_the_same():
    """A sweep summarizes without ITL (its rows have none): the ITL figures are None, the rest equal."""
    seqs = [SimpleNamespace(token_s=[1.0, 1.5, 3.0], arrival_s=0.0, finish_s=3.0, prompt_len=4, out=3)]
    raw = SimpleNamespace(makespan_s=3.0, seqs=seqs)
    full, lean = vllm_bench_names(raw, [1.0], [1.0], 3), vllm_bench_names(raw, [1.0], [1.0], 3, itl=False)
    itl_keys = {"mean_itl_ms", "median_itl_ms", "p99_itl_ms"}
    assert full["median_itl_ms"] == 1000.0 and all(lean[k] is None for k in itl_keys)
    assert {k: v for k, v in full.items() if k not in itl_keys} == {k: v for k, v in lean.items() if k not in itl_keys}
