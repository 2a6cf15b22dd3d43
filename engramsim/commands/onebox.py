"""`engramsim onebox`: the one-box model against public measurements (checks/onebox/)."""
from __future__ import annotations

import json

import click
from rich.console import Console

from engramsim.onebox import fit_step_overhead_us, run_checks


@click.command(name="onebox")
@click.option("--fit", is_flag=True, help="Recompute the one calibration (the M3 Ultra's per-step cost) instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(fit, as_json):
    """Predicted vs measured decode tok/s for public one-box A/B measurements.

    Each case in checks/onebox/*.toml is an engine issue or PR that measured tok/s for RAM vs
    SSD, synchronous vs prefetched, or serial vs parallel reads on an Apple, Spark or
    workstation machine; the presets predict every arm unchanged. A case passes when the
    direction of every change is right and every arm is within 2x. (This machine's own reads,
    measured and predicted: `engramsim validate --reads`.)
    """
    console = Console(stderr=as_json)
    if fit:
        fitted = fit_step_overhead_us()
        click.echo(json.dumps(fitted, indent=2) if as_json else
                   f"step_overhead_us = {fitted['step_overhead_us']:.0f}  (hwmodels/apple-m3-ultra.toml [gpu]; "
                   f"{fitted['source']})")
        return
    with console.status("simulating the one-box checks..."):
        report = run_checks()
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    console.print(report)
