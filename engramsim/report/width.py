"""Reports at any width: at 80 columns and below they switch to a compact layout that never
wraps a line (fewer columns, key/value grids whose values wrap inside their own column)."""

from __future__ import annotations

from rich.table import Table

COMPACT_WIDTH = 80


def compact(options) -> bool:
    """True when the console gives a report at most COMPACT_WIDTH columns."""
    return options.max_width <= COMPACT_WIDTH


def key_values(rows, key_style: str = "bold") -> Table:
    """A two-column grid: keys that never wrap, values that wrap inside their column."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style=key_style)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    return grid
