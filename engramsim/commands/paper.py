"""`engramsim paper`: the simulator against the Engram paper's Table 4."""
from __future__ import annotations

from dataclasses import asdict

import click
from rich.console import Console
from rich.table import Table

from engramsim.papercheck import FIT_MODEL, fit_h800, paper_rows
from engramsim.fileio import dumps_json


@click.command(name="paper")
@click.option("--fit", is_flag=True, help="Refit the h800 engine costs on Dense-4B (prints them; edit the preset).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(fit, as_json):
    """Predicted vs reported throughput and overhead for the paper's §6.4 system test.

    h800, paper-table4 (512 seqs, Uniform(100,1024) in/out), a 100B-parameter Engram layer at
    block 2 in host DRAM. Two engine costs of the h800 preset were fitted on Dense-4B only
    (`--fit` redoes it); Dense-8B is the independent check.
    """
    console = Console(stderr=as_json)
    if fit:
        with console.status("fitting on Dense-4B...") as status:
            fitted = fit_h800(progress=lambda label: status.update(f"fitting: {label}"))
        if as_json:
            click.echo(dumps_json(fitted, indent=None))
        else:
            console.print(f"fitted on {FIT_MODEL}: {fitted}  (put these in hwmodels/h800.toml [gpu])")
        return
    with console.status("simulating Table 4..."):
        rows = paper_rows()
    if as_json:
        click.echo(dumps_json([asdict(r) | {"overhead_error_pp": r.overhead_error_pp,
                                            "baseline_error_pct": r.baseline_error_pct} for r in rows], indent=2))
        return
    t = Table(title="Engram paper Table 4 (H800): predicted vs reported", title_justify="left", header_style="bold")
    for col in ("model", "tier", "baseline tok/s pred / paper", "err", "Engram tok/s pred / paper",
                "overhead pred / paper", "err pp", "role"):
        t.add_column(col, justify="left" if col in ("model", "tier", "role") else "right")
    for r in rows:
        t.add_row(r.model, r.tier, f"{r.predicted_baseline_tok_s:,.1f} / {r.reported_baseline_tok_s:,.2f}",
                  f"{r.baseline_error_pct:+.1f}%", f"{r.predicted_tok_s:,.1f} / {r.reported_tok_s:,.2f}",
                  f"{r.predicted_overhead_pct:.2f}% / {r.reported_overhead_pct:.2f}%", f"{r.overhead_error_pp:+.2f}",
                  "fit" if r.model == FIT_MODEL else "check")
    console.print(t)
