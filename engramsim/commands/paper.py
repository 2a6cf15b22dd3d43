"""`engramsim paper`: the simulator against the Engram paper's Table 4."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.console import Console

from engramsim.commands.numbers import SEED
from engramsim.fileio import dumps_json
from engramsim.papercheck import PaperReport, fit_step_host, paper_rows, seed_spread


class SeedList(click.ParamType):
    """Comma-separated seeds, each checked as --seed is: "0,1,2,7"."""

    name = "seeds"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        items = [v.strip() for v in str(value).split(",")]
        if not all(items) or len(set(items)) != len(items):
            self.fail(f"must be distinct whole numbers separated by commas, got {value!r}", param, ctx)
        return tuple(SEED.convert(v, param, ctx) for v in items)


@click.command(name="paper")
@click.option(
    "--fit",
    is_flag=True,
    help="Refit the engine's per-step host cost on each model's baseline (prints it; edit engines/nano-vllm.toml).",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the request lengths.")
@click.option(
    "--seeds",
    type=SeedList(),
    default=None,
    help="Several seeds, e.g. 0,1,2,7: each overhead's mean and range over them, against the paper "
    "(Dense-8B's KV cache sits at a knife-edge, so one seed is one draw).",
)
@click.option(
    "--unfused-norms",
    is_flag=True,
    help="Run the Engram module's RMSNorms as PyTorch 2.4-2.8 runs torch.nn.RMSNorm (8 kernels, fp32 "
    "intermediates) instead of one fused kernel each: a sensitivity to the harness's PyTorch.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(fit, seed, seeds, unfused_norms, as_json):
    """Predicted vs reported throughput and overhead for the paper's §6.4 system test.

    h800, paper-table4 (512 seqs, Uniform(100,1024) in/out), a 100B-parameter Engram layer in
    the second block (layer 1) in host DRAM. One engine cost, the per-step host work, was fitted
    on each model's no-Engram baseline (`--fit` redoes it); every Engram cost comes from a
    mechanism, so both overheads are predictions, shown per mechanism in percentage points.
    """
    console = Console(stderr=as_json)
    if fit:
        with console.status("fitting on Dense-4B...") as status:
            fitted = fit_step_host(progress=lambda label: status.update(f"fitting: {label}"))
        if as_json:
            click.echo(dumps_json(fitted, indent=None))
        else:
            console.print(
                f"fitted on each baseline: {fitted}  (put it in engines/nano-vllm.toml [fitted_step_host_us])"
            )
        return
    if seeds:
        with console.status(f"simulating Table 4 at {len(seeds)} seeds..."):
            spread = seed_spread(seeds, fused_norms=not unfused_norms)
        if as_json:
            click.echo(dumps_json(spread.to_dict(), indent=2))
        else:
            console.print(spread)
        return
    with console.status("simulating Table 4..."):
        rows = paper_rows(seed=seed, fused_norms=not unfused_norms)
    if as_json:
        click.echo(
            dumps_json(
                [
                    asdict(r) | {"overhead_error_pp": r.overhead_error_pp, "baseline_error_pct": r.baseline_error_pct}
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    console.print(PaperReport(rows, seed))
