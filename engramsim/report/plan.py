"""Rich rendering of the planner's answer."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from engramsim.report.width import compact, narrow_table

SHOWN = 15


def _f(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(value) -> str:
    return "-" if value is None else f"{value:+.2f}%"


def _layout(c: dict) -> str:
    return (
        f"{c['hw']} x{c['gpus']} TP{c['tp']}"
        + (f" DP{c['dp']}" if c.get("dp", 1) > 1 else "")
        + (f" EP{c['ep']}" if c.get("ep", 1) > 1 else "")
        + (f" {c['engine']}" if c.get("engine") else "")
    )


def _placement(c: dict) -> str:
    return c["tier"] + (f" +{c['cache_GiB']:g} GiB HBM cache" if c.get("cache_GiB") else "")


def render_plan(result, options=None):
    slos = ", ".join(f"{k} {v:g}" for k, v in result.slos.items() if v is not None) or "none"
    yield Text.assemble(
        ("engramsim plan", "bold"),
        f"  model {result.model} · workload {result.workload} · "
        f"prices {result.prices} · {result.candidates} candidates · SLOs: {slos}",
    )
    narrow = options is not None and compact(options)
    if not result.choices:
        yield Text("no feasible choice: nothing meets every SLO. Closest misses:", style="bold red")
        yield _misses_table(result.closest_misses, result.slos, narrow)
        return
    title = f"{len(result.choices)} feasible choices, cheapest first"
    yield (_compact_choices_table if narrow else _choices_table)(result.choices[:SHOWN], title)
    best = result.choices[0]
    yield Text(
        f"best: {_layout(best)}, {_placement(best)}: ${best['usd_per_mtok']:.3f} per million output tokens "
        f"({best['output_throughput']:,.0f} tok/s at ${best['usd_per_hour']:.2f}/h, "
        f"{best['overhead_pct']:+.2f}% Engram overhead)",
        style="bold",
    )
    yield Text(
        "Pareto front (tok/s per GPU vs tok/s per user): "
        + "; ".join(
            f"{_layout(c)} {c['tier']} {c['tok_s_per_gpu']:,.0f}/{c['tok_s_per_user']:,.1f}" for c in result.pareto
        )
    )
    if result.largest_table:
        yield _largest_table(result.largest_table)


def _choices_table(choices, title):
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for name in (
        "server",
        "placement",
        "$/Mtok",
        "$/h",
        "tok/s",
        "tok/s/GPU",
        "tok/s/user",
        "overhead",
        "TTFT p99 ms",
        "TPOT p99 ms",
    ):
        t.add_column(name, justify="left" if name in ("server", "placement") else "right")
    for c in choices:
        t.add_row(
            _layout(c),
            _placement(c),
            _f(c["usd_per_mtok"], ".3f"),
            _f(c["usd_per_hour"], ".2f"),
            _f(c["output_throughput"], ",.0f"),
            _f(c["tok_s_per_gpu"], ",.0f"),
            _f(c["tok_s_per_user"], ",.1f"),
            _pct(c["overhead_pct"]),
            _f(c["p99_ttft_ms"], ",.0f"),
            _f(c["p99_tpot_ms"], ",.1f"),
        )
    return t


def _compact_choices_table(choices, title):
    """At 80 columns: the server folds inside its column; $/h and the per-GPU and per-user rates
    (in the best line, the Pareto line and --json) are left out, so no figure is cut."""
    t = narrow_table(title, pad_edge=False)
    t.add_column("server", overflow="fold", min_width=9)
    t.add_column("tier", no_wrap=True)
    for name in ("HBM\ncache\nGiB", "$/Mtok", "tok/s", "overhead", "TTFT\np99 ms", "TPOT\np99 ms"):
        t.add_column(name, justify="right", no_wrap=True)
    for c in choices:
        t.add_row(
            _layout(c),
            c["tier"],
            f"{c['cache_GiB']:g}" if c.get("cache_GiB") else "-",
            _f(c["usd_per_mtok"], ".3f"),
            _f(c["output_throughput"], ",.0f"),
            _pct(c["overhead_pct"]),
            _f(c["p99_ttft_ms"], ",.0f"),
            _f(c["p99_tpot_ms"], ",.1f"),
        )
    return t


# What each missed SLO compares: a row's figure, the bound's key in result.slos, unit, and how
# the figure stands to the bound when missed.
MISSED = {
    "p99_ttft_ms": ("TTFT p99", "max_p99_ttft_ms", " ms", ">"),
    "p99_tpot_ms": ("TPOT p99", "max_p99_tpot_ms", " ms", ">"),
    "output_throughput": ("tok/s", "min_tok_s", "", "<"),
    "overhead_pct": ("overhead", "max_overhead_pct", "%", ">"),
}


def _missed(c: dict, slos: dict) -> str:
    """Each SLO a candidate missed, as its figure against the bound: "TTFT p99 3,395 ms > 500"."""
    parts = []
    for key in c["missed"]:
        if key == "fits":
            parts.append("does not fit: " + (c["problems"] or ""))
            continue
        label, bound, unit, sign = MISSED[key]
        parts.append(f"{label} {c[key]:,.4g}{unit} {sign} {slos[bound]:,.4g}")
    return "; ".join(parts)


def _misses_table(misses, slos: dict, narrow: bool):
    t = narrow_table(pad_edge=False)
    t.add_column("server", overflow="fold", min_width=9)
    t.add_column("placement", overflow="fold")
    names = ("tok/s", "overhead") if narrow else ("tok/s", "overhead", "TTFT p99 ms", "TPOT p99 ms")
    for name in names:
        t.add_column(name, justify="right", no_wrap=True)
    t.add_column("missed", overflow="fold", min_width=16)
    for c in misses:
        figures = [_f(c["output_throughput"], ",.0f"), _pct(c["overhead_pct"])]
        if not narrow:
            figures += [_f(c["p99_ttft_ms"], ",.0f"), _f(c["p99_tpot_ms"], ",.1f")]
        t.add_row(_layout(c), _placement(c), *figures, _missed(c, slos))
    return t


def _largest_table(rows):
    t = Table(
        title="largest Engram table per tier within the overhead bound (bisection on table size)",
        title_justify="left",
        show_edge=False,
        pad_edge=False,
    )
    for name in ("tier", "on", "table GiB", "x today's", "overhead", "limited by"):
        t.add_column(name, justify="right" if name in ("table GiB", "x today's", "overhead") else "left")
    for r in rows:
        t.add_row(
            r["tier"],
            _layout({**r, "dp": 1}),
            _f(r["table_GiB"], ",.1f"),
            _f(r["scale"], ".3g"),
            _pct(r["overhead_pct"]),
            r["limited_by"],
        )
    return t
