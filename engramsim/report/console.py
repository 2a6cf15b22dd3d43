"""Rich rendering of simulation reports."""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from engramsim.report.width import compact, key_values


def _ms(x) -> str:
    return "-" if x is None else f"{1e3 * x:,.1f}"


def _num(x, fmt="{:,.0f}") -> str:
    return "-" if x is None else fmt.format(x)


def render_sim_report(report, options=None):
    if options is not None and compact(options):
        yield from render_compact(report)
        return
    yield Text.assemble(
        ("engramsim simulate", "bold"),
        f"  model {report.model} · hw {report.hardware} · "
        f"workload {report.workload} · {report.gpus} GPU(s), TP {report.tp} · seed {report.seed} · "
        f"prefetch {'on' if report.prefetch else 'off'}",
    )
    yield Text(f"fetch volume from: {report.rows_source}", style="dim")
    yield Text(
        f"no-Engram baseline: {report.baseline_tok_s:,.1f} output tok/s "
        f"(TTFT p50 {_ms(report.baseline['ttft_p50_s'])} ms, TPOT p50 {_ms(report.baseline['tpot_p50_s'])} ms)"
    )
    yield placement_table(report)
    for r in report.runs:
        yield Text.assemble(("  " + label(r), "bold"), ": ", (r.bound, "red" if not r.fits else ""))
        if layer_stalls(r):
            yield Text(f"    stall by Engram layer: {layer_stalls(r)}", style="dim")
    best = max((r for r in report.runs if r.fits), key=lambda r: r.throughput_tok_s, default=None)
    if best and len(report.runs) > 1:
        yield Text(
            f"best: {label(best)} at {best.throughput_tok_s:,.1f} tok/s ({best.overhead_pct:+.2f}%)", style="bold"
        )
    yield resource_table(report)


def layer_stalls(run) -> str:
    """Which Engram layer waits, when there are several ("" otherwise)."""
    if len(run.stall_by_layer_s) < 2:
        return ""
    return ", ".join(f"layer {layer} {1e3 * s:,.1f} ms" for layer, s in run.stall_by_layer_s.items())


def label(run) -> str:
    """A placement's name in tables: its tier, plus its hot-row cache when it has one."""
    return (
        run.tier
        + (f" +{run.hbm_cache_GiB:g}GiB HBM cache" if run.hbm_cache_GiB else "")
        + (f" +{run.dram_cache_GiB:g}GiB DRAM cache" if run.dram_cache_GiB else "")
    )


def placement_table(report) -> Table:
    t = Table(title="Engram table placements", title_justify="left", header_style="bold")
    for col, just in [
        ("tier", "left"),
        ("fits", "center"),
        ("tok/s", "right"),
        ("overhead", "right"),
        ("TTFT p50/p99 s", "right"),
        ("TPOT p50/p99 ms", "right"),
        ("stall s", "right"),
        ("KV tokens", "right"),
        ("HBM hit", "right"),
    ]:
        t.add_column(col, justify=just, overflow="fold")
    for r in report.runs:
        if not r.fits:
            t.add_row(label(r), "[red]no[/]", "-", "-", "-", "-", "-", _num(r.kv_tokens_per_rank), "-")
            continue
        style = "green" if r.overhead_pct < 3 else ("yellow" if r.overhead_pct < 10 else "red")
        t.add_row(
            label(r),
            "yes",
            _num(r.throughput_tok_s, "{:,.1f}"),
            Text(f"{r.overhead_pct:+.2f}%", style=style),
            f"{_num(r.ttft_p50_s, '{:.2f}')} / {_num(r.ttft_p99_s, '{:.2f}')}",
            f"{_ms(r.tpot_p50_s)} / {_ms(r.tpot_p99_s)}",
            _num(r.stall_s, "{:.3f}"),
            _num(r.kv_tokens_per_rank),
            "-" if r.hbm_hit_rate is None else f"{100 * r.hbm_hit_rate:.1f}%",
        )
    return t


# The units of the resource rows that are not self-evident (GB is).
UNIT_MEANINGS = {"thread-s": "thread-s = seconds of one CPU thread", "Mops": "Mops = millions of I/O operations"}


def units_legend(report) -> str | None:
    units = {row["unit"] for r in report.runs if r.fits for row in r.resources.values()}
    meanings = [text for unit, text in UNIT_MEANINGS.items() if unit in units]
    return "; ".join(meanings) if meanings else None


def resource_table(report) -> Table:
    t = Table(title="Shared resources: moved / mean utilisation", title_justify="left", header_style="bold")
    t.caption, t.caption_justify = units_legend(report), "left"
    kinds = sorted({k for r in report.runs for k in r.resources})
    t.add_column("tier")
    for kind in kinds:
        t.add_column(kind, justify="right")
    for r in report.runs:
        if not r.fits:
            continue
        cells = []
        for kind in kinds:
            row = r.resources.get(kind)
            cells.append("-" if row is None else f"{row['moved']:,.1f} {row['unit']} / {100 * row['utilization']:.1f}%")
        t.add_row(label(r), *cells)
    return t


def render_compact(report):
    """The report in at most 80 columns: a header grid, the placements with their p50s (the
    p99s are in --json), then what bounds each placement and what it moved, as grids."""
    yield Text("engramsim simulate", style="bold")
    yield key_values(
        [
            ("model", f"{report.model} on {report.hardware}"),
            (
                "setup",
                f"workload {report.workload} · {report.gpus} GPU(s), TP {report.tp} · seed {report.seed} · "
                f"prefetch {'on' if report.prefetch else 'off'}",
            ),
            ("rows", Text(report.rows_source, style="dim")),
            (
                "baseline",
                f"{report.baseline_tok_s:,.1f} tok/s · TTFT p50 {_ms(report.baseline['ttft_p50_s'])} ms · "
                f"TPOT p50 {_ms(report.baseline['tpot_p50_s'])} ms",
            ),
        ]
    )
    t = Table(
        title="Engram table placements", title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for col, just in [
        ("tier", "left"),
        ("tok/s", "right"),
        ("overhead", "right"),
        ("TTFT\np50 s", "right"),
        ("TPOT\np50 ms", "right"),
        ("stall s", "right"),
        ("KV\ntokens", "right"),
    ]:
        t.add_column(col, justify=just, overflow="fold", no_wrap=col != "tier", min_width=9 if col == "tier" else None)
    for r in report.runs:
        if not r.fits:
            t.add_row(label(r), "[red]no fit[/]", "-", "-", "-", "-", _num(r.kv_tokens_per_rank))
            continue
        style = "green" if r.overhead_pct < 3 else ("yellow" if r.overhead_pct < 10 else "red")
        t.add_row(
            label(r),
            _num(r.throughput_tok_s, "{:,.1f}"),
            Text(f"{r.overhead_pct:+.2f}%", style=style),
            _num(r.ttft_p50_s, "{:.2f}"),
            _ms(r.tpot_p50_s),
            _num(r.stall_s, "{:.3f}"),
            _num(r.kv_tokens_per_rank),
        )
    yield t
    yield Text("What bounds each placement", style="bold")
    yield key_values([(label(r), Text(r.bound, style="red" if not r.fits else "")) for r in report.runs])
    stalls = [(label(r), layer_stalls(r)) for r in report.runs if layer_stalls(r)]
    if stalls:
        yield Text("Stall by Engram layer", style="bold")
        yield key_values(stalls, key_style="")
    best = max((r for r in report.runs if r.fits), key=lambda r: r.throughput_tok_s, default=None)
    if best and len(report.runs) > 1:
        yield key_values([("best", f"{label(best)} at {best.throughput_tok_s:,.1f} tok/s ({best.overhead_pct:+.2f}%)")])
    moved = [
        (
            label(r),
            " · ".join(
                f"{kind} {row['moved']:,.1f} {row['unit']} {100 * row['utilization']:.1f}%"
                for kind, row in sorted(r.resources.items())
            ),
        )
        for r in report.runs
        if r.fits and r.resources
    ]
    if moved:
        yield Text("Shared resources: moved, mean utilisation", style="bold")
        yield key_values(moved, key_style="")
        legend = units_legend(report)
        if legend:
            yield Text(legend, style="dim")
