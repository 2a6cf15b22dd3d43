"""The validation's statistics and noise guards, on synthetic data with known answers."""

import numpy as np
import pytest

from engramsim.realmodel.noise import (
    CpuTimes,
    NoiseLimits,
    noise_between,
    parse_cpu_times,
    pin_this_thread,
    pinning_plan,
)
from engramsim.realmodel.stats import (
    Estimate,
    StepSample,
    batch_bucket,
    bootstrap_ci,
    compare_steps,
    consistent,
    keep_rounds,
    paired_overheads_pct,
)


def test_bootstrap_ci_of_a_mean_has_the_textbook_width():
    x = np.random.default_rng(1).normal(10.0, 1.0, size=400)
    lo, hi = bootstrap_ci(x)
    assert lo < x.mean() < hi
    assert (hi - lo) == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.15)


def test_bootstrap_ci_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = sum(
        lo <= 0.0 <= hi for lo, hi in (bootstrap_ci(rng.normal(0, 1, 12), n_boot=1000, seed=k) for k in range(300))
    )
    assert 0.85 <= covered / 300 <= 0.99  # the percentile bootstrap undercovers a little at n = 12


def test_bootstrap_ci_of_one_sample_is_that_sample_and_is_deterministic():
    assert bootstrap_ci([3.0]) == (3.0, 3.0)
    assert bootstrap_ci([1.0, 2.0, 5.0]) == bootstrap_ci([1.0, 2.0, 5.0])


def test_paired_overheads_cancel_drift_between_rounds():
    # The host runs at full, half and full speed over three rounds; the placement costs 10%.
    assert paired_overheads_pct([90, 45, 90], [100, 50, 100]) == pytest.approx([10, 10, 10])


def test_consistent_inside_the_ci_or_within_two_points_of_a_narrow_one():
    wide = Estimate(5.0, (1.0, 9.0), 8)
    assert consistent(8.9, wide) and not consistent(9.1, wide) and consistent(1.0, wide)
    narrow = Estimate(5.0, (4.8, 5.2), 8)  # narrower than +-2 pp: widened to 3..7
    assert consistent(6.9, narrow) and consistent(3.1, narrow) and not consistent(7.1, narrow)


def test_noisy_rounds_are_dropped_unless_too_few_quiet_ones_remain():
    assert keep_rounds([False, True, False, False], [0, 9, 0, 0]) == ([0, 2, 3], True)
    # Only one quiet round: keep the three least noisy, and say the noisy ones stayed.
    assert keep_rounds([True, False, True, True], [5.0, 0.0, 1.0, 9.0]) == ([0, 1, 2], False)
    assert keep_rounds([True, True], [2.0, 1.0]) == ([0, 1], False)


def test_batch_buckets_are_powers_of_two():
    assert [batch_bucket(n) for n in (1, 2, 3, 4, 12, 15, 16, 64)] == [
        "1",
        "2-3",
        "2-3",
        "4-7",
        "8-15",
        "8-15",
        "16-31",
        "64-127",
    ]


def test_compare_steps_drops_descheduled_steps_and_reports_the_error():
    rng = np.random.default_rng(0)
    measured = [StepSample("decode", 12, 0.040 * (1 + 0.01 * rng.standard_normal())) for _ in range(40)]
    measured += [StepSample("decode", 12, 0.400, quiet=False, running_s=0.040) for _ in range(10)]  # another job ran
    measured += [StepSample("prefill", 40, 0.020) for _ in range(6)]
    predicted = [StepSample("decode", 12, 0.042)] * 5 + [StepSample("prefill", 40, 0.019)] * 2
    rows = {(r.kind, r.batch_bucket): r for r in compare_steps(measured, predicted)}
    decode = rows[("decode", "8-15")]
    assert decode.steps == 40 and decode.steps_dropped == 10
    assert decode.measured_median_ms == pytest.approx(40.0, rel=0.01)
    assert decode.error_pct == pytest.approx(5.0, abs=0.6)
    lo, hi = decode.measured_median_ci_ms
    assert lo <= decode.measured_median_ms <= hi
    assert rows[("prefill", "32-63")].error_pct == pytest.approx(-5.0)
    # Counting only running time, the descheduled steps took 40 ms too: the diagnostic sees through the load.
    assert decode.measured_running_median_ms == pytest.approx(40.0, rel=0.01)
    assert rows[("prefill", "32-63")].measured_running_median_ms is None
    assert next(iter(rows))[0] == "prefill"  # prefill buckets first


def test_compare_steps_keeps_noisy_steps_when_too_few_are_quiet():
    measured = [StepSample("decode", 1, 0.01, quiet=False)] * 3 + [StepSample("decode", 1, 0.01)]
    (row,) = compare_steps(measured, [StepSample("decode", 1, 0.01)])
    assert row.steps == 4 and row.steps_dropped == 0 and row.error_pct == pytest.approx(0.0)


def test_proc_stat_parsing():
    text = "cpu  100 5 50 800 20 3 2 40 0 0\ncpu0 50 0 25 400 10 1 1 20 0 0\n"
    t = parse_cpu_times(text, ticks_per_s=100)
    assert t == CpuTimes(busy_s=1.60, idle_s=8.2, steal_s=0.4)
    assert parse_cpu_times("intr 1 2 3") is None


def test_noise_readings_from_synthetic_counters():
    before = CpuTimes(busy_s=100.0, idle_s=1000.0, steal_s=10.0)
    # 10 s of a 2-core machine: 20 CPU-seconds; we used 9, others 6, steal 1, idle 4.
    after = CpuTimes(busy_s=115.0, idle_s=1004.0, steal_s=11.0)
    n = noise_between(before, after, own_cpu_s=9.0, wall_s=10.0, run_delay_s=0.3, load_avg_1m=1.5)
    assert n.steal_pct == pytest.approx(5.0) and n.outside_cores == pytest.approx(0.6)
    assert n.run_delay_pct == pytest.approx(3.0)
    assert n.reasons(NoiseLimits()) == ["outside load 0.60 cores"]
    assert n.reasons(NoiseLimits(max_steal_pct=4, max_outside_cores=1, max_run_delay_pct=2)) == [
        "steal 5.0%",
        "run-queue wait 3.0%",
    ]


def test_noise_without_kernel_counters_is_unknown_not_noisy():
    n = noise_between(None, None, own_cpu_s=1.0, wall_s=1.0, run_delay_s=None)
    assert n.steal_pct is None and n.outside_cores is None and n.reasons(NoiseLimits()) == []


def test_pinning_gives_the_prefetch_thread_a_core_of_its_own():
    assert pinning_plan({0, 1}, 1) == ({0}, {1})
    assert pinning_plan({0, 1, 2, 3}, 2) == ({0, 1}, {2, 3})
    assert pinning_plan({0, 1}, 2) is None and pinning_plan({3}, 1) is None
    assert pin_this_thread(None) is False
