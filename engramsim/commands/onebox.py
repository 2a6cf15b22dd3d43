"""`engramsim onebox`: the one-box model against public measurements (checks/onebox/)."""

from __future__ import annotations

import click
from rich.console import Console

from engramsim.fileio import dumps_json
from engramsim.onebox import fit_all, run_checks


@click.command(name="onebox")
@click.option(
    "--fit",
    is_flag=True,
    help="Recompute the calibrations instead: the M3 Ultra's per-step cost (ds4) and each case's fit arm.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(fit, as_json):
    """Predicted vs measured decode tok/s for public one-box A/B measurements.

    Each case in checks/onebox/*.toml is an engine issue or PR that measured tok/s for RAM vs
    SSD, synchronous vs prefetched, or serial vs parallel reads on an Apple, Spark or
    workstation machine; the presets predict every arm unchanged. A case passes when the
    direction of every change is right and every arm is within 2x. An arm marked "fit" is
    where an engine's per-step cost was calibrated (shown, not checked). (This machine's own reads,
    measured and predicted: `engramsim validate --reads`.)
    """
    console = Console(stderr=as_json)
    if fit:
        machine, *engines = fit_all()
        if as_json:
            click.echo(dumps_json([machine, *engines]))
            return
        click.echo(
            f"step_overhead_us = {machine['step_overhead_us']:.0f}  (hwmodels/apple-m3-ultra.toml [gpu]; "
            f"{machine['source']})"
        )
        for f in engines:
            click.echo(
                f"{f['model']} = {f['step_host_us']:.0f}  (engines/{f['engine']}.toml [fitted_step_host_us]; "
                f"{f['case']}, arm '{f['arm']}')"
            )
        return
    with console.status("simulating the one-box checks..."):
        report = run_checks()
    if as_json:
        click.echo(dumps_json(report.to_dict()))
        return
    console.print(report)
