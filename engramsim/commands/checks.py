"""`engramsim checks`: published measurements (checks/*.toml) against the simulator."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from engramsim.published import check_paths, run_check


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
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    t = Table(title="Published measurements: predicted vs measured", title_justify="left", header_style="bold")
    for col in (
        "check",
        "predicted",
        "measured",
        "pred/meas",
        "direction",
        "within 2x",
        "baseline sim/meas",
        "added µs/tok sim / meas",
        "fetches bounded by",
    ):
        t.add_column(col, justify="left" if col in ("check", "fetches bounded by") else "right")
    for r in results:
        bound = max(r.bounds, key=r.bounds.get) if r.bounds else "-"
        t.add_row(
            r.name,
            f"{r.predicted_change_pct:+.2f}%",
            f"{r.measured_change_pct:+.2f}%",
            f"{r.ratio:.2f}",
            "right" if r.direction_right else "WRONG",
            "yes" if r.passes else "NO",
            "-" if r.baseline_ratio is None else f"{r.baseline_ratio:.1f}x",
            _added(r),
            bound,
        )
    console.print(t)
    for r in results:
        console.print(f"  {r.name}: {r.what} ({r.source})", style="dim")


def _added(r) -> str:
    """Added time per output token, simulated and measured (µs; negative: the variant is faster)."""
    meas = r.measured_added_us_per_token
    return f"{r.predicted_added_us_per_token:+.3g} / " + ("-" if meas is None else f"{meas:+.3g}")
