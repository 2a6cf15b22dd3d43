"""Rich rendering of an address trace's statistics (engramsim.addresses.stats.TraceStats)."""

from __future__ import annotations

import math

import numpy as np
from rich.table import Table
from rich.text import Text


def render_trace_stats(stats):
    yield Text.assemble(("Engram address trace  ", "bold"), stats.corpus)
    yield Text(
        f"tokenizer: {stats.tokenizer}; {stats.n_tokens:,} tokens in {stats.n_sequences:,} documents", style="dim"
    )
    for layer, ls in stats.layers.items():
        summary = Table(title=f"layer {layer}: {ls.rows_in_table:,} rows", title_justify="left", show_header=False)
        summary.add_row("accesses / distinct rows", f"{ls.n_accesses:,} / {ls.n_distinct:,}")
        summary.add_row(
            "re-reads",
            f"{ls.reuse_fraction:.1%} of accesses; median {ls.reuse_p50_tokens:,.0f}, "
            f"p90 {ls.reuse_p90_tokens:,.0f} tokens since the last read",
        )
        summary.add_row(
            "Zipf exponent s",
            ", ".join(f"{n}-gram {a:.2f}" for n, a in zip(range(2, 2 + len(ls.zipf_alpha)), ls.zipf_alpha)),
        )
        yield summary
        steps = Table(
            "tokens/step",
            "decode: distinct rows",
            "rows/token",
            "prefill chunk: distinct rows",
            title="distinct rows per step",
            title_justify="left",
        )
        for b, d, p in zip(ls.batch_tokens, ls.unique_decode, ls.unique_prefill):
            if b in (1, 8, 64, 256, 1024, 4096, 16384, 65536) or b == ls.batch_tokens[-1]:
                steps.add_row(f"{b:,}", f"{d:,.0f}", f"{d / b:.2f}", f"{p:,.0f}")
        yield steps
        yield hit_table(
            ls.capacities,
            {"static top-K (step rows)": ls.hit_step, "static top-K (accesses)": ls.hit_access},
            ls.rows_in_table,
            f"hot-row cache, batch {stats.batch_ref}",
        )


def hit_table(capacities, curves: dict, rows_in_table: int, title: str):
    """A rich table of hit rates against capacity; every 2nd power of two keeps it short."""
    table = Table("cache rows", "% of table", *curves, title=title, title_justify="left")
    caps = np.asarray(capacities)
    keep = [i for i, c in enumerate(caps) if c > 0 and (i == len(caps) - 1 or int(math.log2(c)) % 2 == 0)]
    for i in keep:
        table.add_row(f"{caps[i]:,}", f"{caps[i] / rows_in_table:.3%}", *(f"{v[i]:.1%}" for v in curves.values()))
    return table
