"""`engramsim validate`: a real Engram model here, measured beside the simulator's prediction."""

from __future__ import annotations

import tempfile

import click
from rich.console import Console

from engramsim.commands.numbers import number
from engramsim.fileio import check_output, check_output_dir, dumps_json, write_atomic

BUDGET_S_MAX = 7 * 86400  # a week: a longer budget is a typo, not a measurement plan


@click.command(name="validate")
@click.option(
    "--quick",
    is_flag=True,
    help="A smaller model and workload: about 6 minutes on 2 cores with the "
    "default budget; on a GPU, a model sized for it with a 4 GiB table.",
)
@click.option("--tiny", is_flag=True, hidden=True, help="Seconds-long run for tests; not a measurement.")
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(dir_okay=False),
    help="Use this profile of the machine instead of measuring a quick one first.",
)
@click.option(
    "--scratch",
    default=tempfile.gettempdir(),
    show_default=True,
    metavar="DIRECTORY",
    help="Directory for the table file of the mmap placements.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the model runs: auto takes the GPU when torch sees one.",
)
@click.option(
    "--budget-s",
    type=number(0, BUDGET_S_MAX, lo_open=True),
    default=None,
    metavar="SECONDS",
    help="Seconds of measured rounds: rounds go on until every overhead CI is within +-1 pp or "
    "this runs out (at least the configured minimum of rounds is run). Default: 300 with "
    "--quick, 900 without.",
)
@click.option(
    "--pin/--no-pin",
    default=True,
    show_default=True,
    help="Pin the compute thread and the prefetch thread to cores of their own, where the machine has enough cores.",
)
@click.option(
    "--save",
    "save_path",
    type=click.Path(dir_okay=False),
    help="Also write the JSON report to this file (atomically), e.g. under profiles/validation/.",
)
@click.option(
    "--save-measured",
    "save_measured",
    type=click.Path(dir_okay=False),
    help="Also write the raw measurements (every run's steps; a pickle) to this file, for --replay.",
)
@click.option(
    "--replay",
    "replay_path",
    type=click.Path(dir_okay=False),
    help="Measure nothing: predict again from a --save-measured file (to judge a change to the "
    "model on the same measurements). Only engramsim's records are built from the file: one "
    "that names anything else is refused, not run.",
)
@click.option(
    "--reads",
    is_flag=True,
    help="Instead: one-box SSD reads here (a 1 GiB file under --scratch): a decode step's rows by "
    "serial vs 8-thread O_DIRECT pread, and mmap faults with this machine's page size, "
    "measured beside the read model's prediction (engramsim.onebox.harness).",
)
def command(
    quick, tiny, profile_path, scratch, as_json, device, budget_s, pin, save_path, save_measured, replay_path, reads
):
    """Run a real Engram-augmented transformer on this machine with its table in every placement
    the machine supports, and print measured throughput beside the simulator's prediction.

    CPU placements: device (table in RAM, gathered in line), host-prefetch / host-sync (a separate
    host buffer gathered by a background thread or at the layer), mmap-* (a memory-mapped file,
    cold or warm page cache, with and without prefetch), and the no-Engram baseline.

    GPU placements: gpu-hbm (table in HBM), pinned-copy-* (CPU gather into pinned staging, then
    an H2D copy on a side stream), pinned-uva-* (a GPU gather reading mapped host memory), each
    with prefetch at step start or sync at the layer, and the baseline.

    The prediction describes the same model, requests and placements to the simulator, with this
    machine's figures from a profile (measured first unless --profile is given).

    Placements run in interleaved rounds; each overhead is paired with the baseline of its round
    and reported with a 95% bootstrap CI. Rounds whose runs saw CPU steal, other processes' load
    or run-queue waits (read from /proc) are dropped; a case is consistent when the predicted
    overhead lies in the CI (or within 2 pp of the measured overhead if the CI is narrower).
    Per-step times are compared by step kind and batch bucket.
    """
    from dataclasses import replace

    from engramsim.realmodel import (
        RunConfig,
        gpu_quick_config,
        quick_config,
        this_device,
        tiny_config,
    )
    from engramsim.validate import load_measurements, run_validation, validation_report

    scratch = str(check_output_dir(scratch, "--scratch"))
    if reads:
        _reads(scratch, as_json, save_path)
        return
    if save_path:
        check_output(save_path, "--save")
    if replay_path:
        _show(validation_report(load_measurements(replay_path)), as_json, save_path)
        return
    if save_measured:
        check_output(save_measured, "--save-measured")
    device = this_device(RunConfig(device=device))
    if tiny:
        config = tiny_config(scratch)
    elif quick:
        config = gpu_quick_config() if device == "cuda" else quick_config()
    else:
        config = RunConfig()
    config = replace(config, table_dir=scratch, device=device, pin_threads=pin)
    if budget_s is None:
        budget_s = 5.0 if tiny else 300.0 if quick else 900.0
    console = Console(stderr=as_json)
    with console.status("validating...") as status:
        report = run_validation(
            config,
            profile_path,
            scratch,
            budget_s,
            progress=status.update,
            warn=lambda msg: console.print(f"warning: {msg}", style="yellow", highlight=False),
            save_measured=save_measured,
        )
    _show(report, as_json, save_path)


def _show(report, as_json: bool, save_path: str | None) -> None:
    text = dumps_json(report.to_dict())
    if save_path:
        write_atomic(save_path, text + "\n")
    if as_json:
        click.echo(text)
    else:
        Console().print(report)


def _reads(scratch: str, as_json: bool, save_path: str | None):
    """The one-box read harness: no model, no torch, a minute at most."""
    from engramsim.onebox import harness

    if save_path:
        check_output(save_path, "--save")
    console = Console(stderr=as_json)
    with console.status("measuring reads here..."):
        report = harness(scratch)
    text = dumps_json(report.to_dict())
    if save_path:
        write_atomic(save_path, text + "\n")
    click.echo(text) if as_json else console.print(report)
