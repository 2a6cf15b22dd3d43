"""`engramsim simulate`: compare Engram table placements on a simulated server."""
from __future__ import annotations

import json

import click
from rich.console import Console

from engramsim.hardware import load_hardware
from engramsim.model import load_model
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.tiers import TIERS, Placement
from engramsim.workload import load_workload

GiB = 2.0**30


@click.command(name="simulate")
@click.option("--model", "model_name", default="dense-4b-engram100b", show_default=True,
              help="Model preset name or path to a TOML file.")
@click.option("--hw", "hw_name", default="h800", show_default=True, help="Hardware preset name or path to a TOML file.")
@click.option("--tier", "tiers", multiple=True, type=click.Choice(TIERS),
              help="Placement(s) to simulate; repeat the option. Default: all.")
@click.option("--workload", "workload_name", default="paper-table4", show_default=True,
              help="Workload preset name or path to a TOML file.")
@click.option("--gpus", default=1, show_default=True, type=int, help="GPUs in use; hosts hold gpus_per_host each.")
@click.option("--tp", default=1, show_default=True, type=int, help="Tensor-parallel degree of one replica.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the request lengths.")
@click.option("--no-prefetch", is_flag=True, help="Fetch synchronously at the Engram layer.")
@click.option("--hbm-cache-gib", default=0.0, show_default=True, type=float,
              help="Hot-row cache in HBM per GPU (GiB), for the off-GPU tiers.")
@click.option("--ssd-dram-hit", default=0.0, show_default=True, type=float,
              help="ssd tier: share of page reads served by the host's DRAM page cache.")
@click.option("--max-seqs", type=int, help="Override the workload's max_num_seqs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def command(model_name, hw_name, tiers, workload_name, gpus, tp, seed, no_prefetch, hbm_cache_gib,
            ssd_dram_hit, max_seqs, as_json):
    """Simulate an inference server with the model's Engram tables in each placement.

    Each placement runs beside a no-Engram baseline (same backbone and workload), and the
    report gives throughput, overhead against that baseline, TTFT/TPOT, stall time, what each
    shared resource carried, and what bounds each placement. A placement whose table, cache
    or weights do not fit is reported as such and not simulated.
    """
    from dataclasses import replace

    from engramsim.errors import UserError

    if max_seqs is not None and max_seqs < 1:
        raise UserError("--max-seqs must be at least 1")
    hw = load_hardware(hw_name)
    model = load_model(model_name)
    workload = load_workload(workload_name)
    if max_seqs:
        workload = replace(workload, engine=replace(workload.engine, max_num_seqs=max_seqs))
    scenario = Scenario(hw=hw, model=model, workload=workload, gpus=gpus, tp=tp, seed=seed,
                        prefetch=not no_prefetch)
    placements = [Placement(t, hbm_cache_bytes=hbm_cache_gib * GiB, ssd_dram_hit_rate=ssd_dram_hit)
                  for t in (tiers or TIERS)]
    console = Console(stderr=as_json)
    if as_json:
        report = simulate(scenario, placements)
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=False))
        return
    with console.status("simulating...") as status:
        report = simulate(scenario, placements, progress=lambda label: status.update(f"simulating {label}..."))
    console.print(report)
