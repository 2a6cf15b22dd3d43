"""Reports at any width: at 80 columns and below they switch to a compact layout that never
wraps a line (fewer columns, key/value grids whose values wrap inside their own column)."""

from __future__ import annotations

from rich import box
from rich.table import Table

COMPACT_WIDTH = 80


def compact(options) -> bool:
    """True when the console gives a report at most COMPACT_WIDTH columns."""
    return options.max_width <= COMPACT_WIDTH


def narrow_table(title: str | None = None, **options) -> Table:
    """A table for 80 columns: a rule under the header and no vertical borders, so columns lose
    no width to box lines; the callers fold text and keep figures whole."""
    return Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, **options)


def key_values(rows, key_style: str = "bold") -> Table:
    """A two-column grid: keys that never wrap, values that wrap inside their column."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True, style=key_style)
    grid.add_column(overflow="fold")
    for key, value in rows:
        grid.add_row(key, value)
    return grid
