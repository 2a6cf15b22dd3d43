"""Rich rendering of sweep results: one table row per config."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

SHOWN_ROWS = 60
METRIC_HEADERS = ("fits", "tok/s", "overhead", "TTFT p99 ms", "TPOT p99 ms", "KV tok/rank")


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else format(value, spec) + suffix


def _cells(row: dict, axes: list[str]) -> list[str]:
    return [
        *(str(row.get(a)) for a in axes),
        "yes" if row["fits"] else "no",
        _fmt(row["output_throughput"], ",.1f"),
        _fmt(row["overhead_pct"], "+.2f", "%"),
        _fmt(row["p99_ttft_ms"], ",.1f"),
        _fmt(row["p99_tpot_ms"], ",.1f"),
        _fmt(row["kv_tokens_per_rank"], ","),
    ]


def render_sweep(result, max_width: int = 120):
    yield Text.assemble(
        ("engramsim sweep", "bold"),
        f"  {result.source} · {len(result.rows)} configs · "
        f"{result.ran} simulated, {result.resumed} from the results file",
    )
    rows = result.rows[:SHOWN_ROWS]
    cells = [_cells(r, result.axes) for r in rows]
    table = Table(show_edge=False, pad_edge=False)
    used = 0
    for i, header in enumerate([*result.axes, *METRIC_HEADERS]):
        # Values keep their full width; only the free-text column gives way on a narrow terminal.
        width = max([len(header.split()[-1])] + [len(c[i]) for c in cells])
        table.add_column(header, justify="left" if i < len(result.axes) else "right", min_width=width)
        used += width + 3
    room = max_width - used
    if room >= 12:
        table.add_column("bound by", no_wrap=True, overflow="ellipsis", max_width=room)
    for row, row_cells in zip(rows, cells):
        why = (row["problems"] or row["bound_by"] or "")[:room]
        table.add_row(*row_cells, *([why] if room >= 12 else []), style=None if row["fits"] else "red")
    yield table
    if len(result.rows) > SHOWN_ROWS:
        yield Text(f"... {len(result.rows) - SHOWN_ROWS} more rows (see --out or --json)", style="dim")
