"""`engramsim validate`: a real Engram model here, measured beside the simulator's prediction."""
from __future__ import annotations

import tempfile

import click
from rich.console import Console

from engramsim.fileio import check_output_dir, dumps_json


@click.command(name="validate")
@click.option("--quick", is_flag=True, help="A smaller model and workload: a few minutes on 2 cores; on a GPU, "
              "a model sized for it with a 4 GiB table, under 3 minutes on an H200.")
@click.option("--tiny", is_flag=True, hidden=True, help="Seconds-long run for tests; not a measurement.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False),
              help="Use this profile of the machine instead of measuring a quick one first.")
@click.option("--scratch", default=tempfile.gettempdir(), show_default=True,
              help="Directory for the table file of the mmap placements.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the model runs: auto takes the GPU when torch sees one.")
def command(quick, tiny, profile_path, scratch, as_json, device):
    """Run a real Engram-augmented transformer on this machine with its table in every placement
    the machine supports, and print measured throughput beside the simulator's prediction.

    \b
    CPU placements: device (table in RAM, gathered in line), host-prefetch / host-sync (a separate
    host buffer gathered by a background thread or at the layer), mmap-* (a memory-mapped file,
    cold or warm page cache, with and without prefetch), and the no-Engram baseline.
    GPU placements: gpu-hbm (table in HBM), pinned-copy-* (CPU gather into pinned staging, then
    an H2D copy on a side stream), pinned-uva-* (a GPU gather reading mapped host memory), each
    with prefetch at step start or sync at the layer, and the baseline.
    The prediction describes the same model, requests and placements to the simulator, with this
    machine's figures from a profile (measured first unless --profile is given).
    """
    from dataclasses import replace

    from engramsim.realmodel import RunConfig, gpu_quick_config, quick_config, this_device, tiny_config
    from engramsim.validate import run_validation

    scratch = str(check_output_dir(scratch, "--scratch"))
    device = this_device(RunConfig(device=device))
    if tiny:
        config = tiny_config(scratch)
    elif quick:
        config = gpu_quick_config() if device == "cuda" else quick_config()
    else:
        config = RunConfig()
    config = replace(config, table_dir=scratch, device=device)
    console = Console(stderr=as_json)
    with console.status("validating...") as status:
        report = run_validation(config, profile_path, scratch, progress=status.update)
    if as_json:
        click.echo(dumps_json(report.to_dict()))
    else:
        console.print(report)
