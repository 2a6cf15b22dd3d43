"""`engramsim checks`: published measurements (checks/*.toml) against the simulator."""

from __future__ import annotations

import click
from rich.console import Console, Group
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from engramsim.fileio import dumps_json
from engramsim.published import check_paths, run_check
from engramsim.report.width import narrow_table


@click.command(name="checks")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(files, as_json):
    """Predicted vs measured relative change for each published measurement in checks/.

    Each check describes a public benchmark (engine PR or issue) to the simulator: server,
    model, workload and two placements. It passes when the predicted change has the measured
    sign and lies within 2x of it. No constant is tuned per check. Where the source gives its
    reference throughput, two more columns compare absolutes: the simulated over the measured
    reference throughput, and the time the variant adds per output token (simulated / measured).

    FILES: check files to run (default: every checks/*.toml).
    """
    console = Console(stderr=as_json)
    results = []
    with console.status("simulating checks...") as status:
        for path in check_paths(files):
            status.update(f"simulating {path.name}...")
            results.append(run_check(path))
    if as_json:
        click.echo(dumps_json([r.to_dict() for r in results]))
        return
    console.print(_table(results))
    console.print(_notes(results))


def _table(results) -> Table:
    """Names fold rather than truncate, and headers are short, so the table reads at 80 columns.
    A negative pred/meas is a change predicted in the wrong direction."""
    t = narrow_table("Published measurements: predicted vs measured change")
    t.add_column("check", overflow="fold", min_width=14)
    for col in (
        "pred.\nchange",
        "meas.\nchange",
        "pred/\nmeas",
        "passes",
        "baseline\nsim/meas",
        "added µs/tok\nsim / meas",
    ):
        t.add_column(col, justify="right", no_wrap=True)
    for r in results:
        t.add_row(
            r.name,
            f"{r.predicted_change_pct:+.2f}%",
            f"{r.measured_change_pct:+.2f}%",
            f"{r.ratio:.2f}",
            "yes" if r.passes else "NO" if r.direction_right else "NO sign",
            "-" if r.baseline_ratio is None else f"{r.baseline_ratio:.1f}x",
            _added(r),
        )
    return t


def _notes(results) -> Group:
    """Per check: what was measured, where, and what bounds the variant's fetches."""
    lines = ["passes: the predicted change has the measured sign and is within 2x of it (NO sign: the wrong direction)"]
    for r in results:
        bound = max(r.bounds, key=r.bounds.get) if r.bounds else "nothing (no off-GPU fetch)"
        lines.append(Text(r.name, style="bold"))
        lines.append(Padding(f"{r.what} ({r.source}); variant's fetches bounded by {bound}", (0, 0, 0, 2)))
    return Group(*lines)


def _added(r) -> str:
    """Added time per output token, simulated and measured (µs; negative: the variant is faster)."""
    meas = r.measured_added_us_per_token
    return f"{r.predicted_added_us_per_token:+.3g} / " + ("-" if meas is None else f"{meas:+.3g}")
