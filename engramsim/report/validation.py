"""Rich rendering of a validation report: measured (with CIs) beside predicted, per placement
and per step bucket, with what the noise guards saw."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

STEP_ERROR_LIMIT_PCT = 10.0  # the per-step target the report colours against

STOPPED = {
    "ci": "every overhead CI reached the target",
    "budget": "the time budget ran out",
    "max_rounds": "the round limit was reached",
    "repeats": "the fixed number of rounds was run",
}


def _ci(ci, fmt="{:+.1f}") -> str:
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _ok(flag: bool) -> Text:
    return Text("yes", style="green") if flag else Text("no", style="red")


def case_table(report) -> Table:
    t = Table(
        title="Real Engram model vs simulator (means over kept rounds, 95% bootstrap CIs)",
        title_justify="left",
        header_style="bold",
    )
    for col in (
        "placement",
        "sim tier",
        "measured tok/s [CI]",
        "predicted tok/s",
        "error",
        "overhead meas. [CI]",
        "overhead pred.",
        "consistent",
        "worst step err",
        "stall s meas/pred",
    ):
        t.add_column(col, justify="left" if col in ("placement", "sim tier") else "right", no_wrap=col == "placement")
    for c in report.cases:
        worst = max((abs(s.error_pct) for s in c.per_step), default=0.0)
        overhead = (
            "calibration"
            if c.role == "calibration"
            else f"{c.measured_overhead_pct:+.1f}% {_ci(c.measured_overhead_ci_pp)}"
        )
        t.add_row(
            c.placement,
            c.sim_tier,
            f"{c.measured_tok_s:,.1f} {_ci(c.measured_tok_s_ci, '{:,.0f}')}",
            f"{c.predicted_tok_s:,.1f}",
            f"{c.error_pct:+.1f}%",
            overhead,
            "-" if c.role == "calibration" else f"{c.predicted_overhead_pct:+.1f}%",
            _ok(c.consistent),
            Text(f"{worst:.1f}%", style="green" if worst <= STEP_ERROR_LIMIT_PCT else "red"),
            f"{c.measured_stall_s:.3f} / {c.predicted_stall_s:.3f}",
        )
    return t


def step_table(report) -> Table:
    t = Table(
        title="Per-step times by kind and batch bucket (quiet steps of kept rounds; running: every step, "
        "less its run-queue wait, a diagnostic)",
        title_justify="left",
        header_style="bold",
    )
    for col in (
        "placement",
        "kind",
        "tokens",
        "steps (dropped)",
        "measured median ms [CI]",
        "predicted ms",
        "error",
        "p90 ms meas/pred",
        "stall ms meas/pred",
        "running ms (err)",
    ):
        t.add_column(col, justify="left" if col in ("placement", "kind") else "right", no_wrap=col == "placement")
    for c in report.cases:
        for s in c.per_step:
            style = "green" if abs(s.error_pct) <= STEP_ERROR_LIMIT_PCT else "red"
            t.add_row(
                c.placement,
                s.kind,
                s.batch_bucket,
                f"{s.steps} ({s.steps_dropped})",
                f"{s.measured_median_ms:.2f} {_ci(s.measured_median_ci_ms, '{:.2f}')}",
                f"{s.predicted_ms:.2f}",
                Text(f"{s.error_pct:+.1f}%", style=style),
                f"{s.measured_p90_ms:.2f} / {s.predicted_p90_ms:.2f}",
                f"{s.measured_stall_ms:.2f} / {s.predicted_stall_ms:.2f}",
                "-"
                if s.measured_running_median_ms is None
                else f"{s.measured_running_median_ms:.2f} ({s.running_error_pct:+.0f}%)",
            )
    return t


def noise_lines(report):
    yield Text(
        f"rounds: {report.rounds} run, {report.rounds_kept} kept; stopped because "
        f"{STOPPED.get(report.stopped_by, report.stopped_by)} (budget {report.budget_s:.0f} s, target "
        f"CI half-width {report.ci_target_pp:.1f} pp, reached {report.worst_overhead_ci_half_width_pp:.2f} pp)"
    )
    for r, why in sorted(report.dropped_rounds.items(), key=lambda kv: int(kv[0])):
        yield Text(f"  round {r} dropped: " + "; ".join(why[:3]) + (" ..." if len(why) > 3 else ""), style="dim")
    base = next((c for c in report.cases if c.role == "calibration"), None)
    if base is not None:
        n = base.noise
        fmt = lambda x, f: "unknown" if x is None else f.format(x)
        yield Text(
            f"noise in kept baseline runs: steal {fmt(n['steal_pct'], '{:.1f}%')} (max), outside load "
            f"{fmt(n['outside_load_cores'], '{:.2f} cores')}, run-queue wait {fmt(n['run_delay_pct'], '{:.1f}%')}"
            + ("" if n["quiet_only"] else "; too few quiet rounds: the least noisy were kept"),
            style="dim",
        )
    yield Text(f"threads: {report.pinned}", style="dim")
    f = report.fitted
    if f:
        yield Text(
            f"fitted on the baseline (calibration): compute {f['compute_GFLOPs']:.1f} GFLOP/s (profile matmul "
            f"{f['profile_matmul_GFLOPs']:.1f}), weights at {f['weights_GBps']:.1f} GB/s (profile "
            f"{f['profile_read_GBps']:.1f})"
            + (
                f", one row at a time up to {f['gemv_max_rows']} rows at {f['gemv_GBps']:.1f} GB/s"
                if f.get("gemv_max_rows")
                else ""
            )
            + (
                f"; LM head row by row at {f['head_gemv_GBps']:.1f} GB/s, packed at {f['head_weights_GBps']:.1f} "
                f"GB/s + {f['head_GFLOPs']:.1f} GFLOP/s"
                if f.get("head_weights_GBps")
                else ""
            )
            + f", {f['layer_overhead_us']:.0f} us per layer, "
            f"{f['step_overhead_us']:.0f} us per step + {f.get('seq_overhead_us', 0):.0f} us per sequence; timed alone: Engram fusion {f['engram_fusion_us']:.0f} us "
            f"+ {f['engram_fusion_ns_per_token']:.0f} ns/token, hash {f['hash_call_us']:.0f} us + "
            f"{f['hash_ns_per_token']:.0f} ns/token"
            + (
                f", cold page faults {f['page_fault_us']:.0f} us (compute thread) / "
                f"{f['prefetch_page_fault_us']:.0f} us (prefetch thread)"
                if f.get("page_fault_us") and f.get("prefetch_page_fault_us")
                else ""
            ),
            style="dim",
        )


def render_validation(report):
    yield Text.assemble(
        ("engramsim validate", "bold"),
        f"  {report.machine} · profile {report.profile} · {report.torch_threads} torch threads",
    )
    for w in report.warnings:
        yield Text(f"warning: {w}", style="yellow")
    yield case_table(report)
    yield step_table(report)
    yield from noise_lines(report)
    verdict = "every case consistent" if report.all_consistent else "NOT every case consistent"
    yield Text(
        f"{verdict}; worst per-step median error {report.worst_step_error_pct:.1f}%",
        style="bold green"
        if report.all_consistent and report.worst_step_error_pct <= STEP_ERROR_LIMIT_PCT
        else "bold red",
    )
