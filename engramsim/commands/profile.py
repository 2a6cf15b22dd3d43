"""`engramsim profile`: measure this machine; `profile show FILE`; `profile compare A B`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from engramsim.commands.numbers import SEED
from engramsim.errors import Interrupted, UserError
from engramsim.fileio import check_output, check_output_dir
from engramsim.profile_io import PROFILE_DIR, default_path, load_profile, save_profile


def _names(only: tuple[str, ...]) -> list[str]:
    return [n.strip() for item in only for n in item.split(",") if n.strip()]


@click.group(invoke_without_command=True)
@click.option("--quick", is_flag=True, help="Small sweeps: under a minute on a 2-core CPU machine.")
@click.option(
    "--only",
    multiple=True,
    metavar="NAME",
    help="Run only these benchmarks (repeat or comma-separate): dram_gather, memcpy, cpu_matmul, hash, "
    "overlap, ssd_read, cxl, hbm_gather, h2d, d2h, uva_gather, copy_pipeline, overlap_gpu.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Profile JSON to write [default: profiles/<host>-<gpu or cpu>-<date>.json].",
)
@click.option(
    "--scratch",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for the ssd_read scratch file (on the disk to measure) [default: system temp].",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random row indices.")
@click.pass_context
def command(ctx, quick, only, out, scratch, seed):
    """Measure this machine's Engram memory paths with real kernels and save a profile."""
    if ctx.invoked_subcommand:
        return
    from engramsim.measure import import_torch
    from engramsim.measure.run import run_profile, select
    from engramsim.report.profile import ProfileReport

    names = _names(only)
    if only and not names:  # `--only ""` would otherwise select every benchmark
        raise UserError("--only names no benchmark (give e.g. --only dram_gather,memcpy)")
    torch = import_torch()  # fail with one line before any progress bar is drawn
    benchmarks = select(names)
    if names and all(b.needs_gpu for b in benchmarks) and not torch.cuda.is_available():
        # missing hardware: a profile of nothing but skips would be written as if measured
        raise UserError(f"--only {','.join(names)} needs a CUDA device, and torch sees none")
    if scratch is not None and "ssd_read" not in {b.name for b in benchmarks}:
        click.echo("warning: --scratch does nothing without the ssd_read benchmark; ignored", err=True)
    scratch = check_output_dir(scratch or Path(tempfile.gettempdir()), "--scratch")
    if out is None:
        check_output_dir(PROFILE_DIR, "profile directory", create=True)
    else:
        check_output(out, "--out")
    console = Console()
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("[dim]{task.fields[point]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("starting", total=len(benchmarks), point="")
        current = {"name": None}

        def progress(name, rec):
            if rec is None:
                if current["name"] is not None:
                    bar.advance(task)
                current["name"] = name
                bar.update(task, description=name, point="")
            else:
                bar.update(task, point=_point_text(rec))

        profile = run_profile(names, quick=quick, scratch=scratch, seed=seed, progress=progress)
        bar.update(task, completed=len(benchmarks) if not profile.partial else bar.tasks[0].completed)
    if profile.partial:
        _save_partial(profile, out)
    path = save_profile(profile, out or default_path(profile))
    console.print(ProfileReport(profile))
    console.print(f"profile: {path}  ({profile.host.get('profile_wall_s', 0):.1f} s)")


def _save_partial(profile, out):
    """Ctrl-C: save what was measured, if anything, and leave with one line and status 130."""
    if not profile.measurements:
        raise Interrupted("interrupted before any point was measured: no profile written")
    path = save_profile(profile, out or default_path(profile))
    raise Interrupted(f"interrupted: saved {len(profile.measurements)} measured points to {path} (marked partial)")


def _point_text(rec: dict) -> str:
    from engramsim.report.profile import format_params

    if "reason" in rec:
        return f"skipped: {rec['reason']}"[:60]
    return format_params(rec["params"])[:60]


@command.command("show")
@click.argument("file", type=click.Path(path_type=Path))
def show(file):
    """Show a saved profile, grouped by memory path."""
    from engramsim.report.profile import ProfileReport

    Console().print(ProfileReport(load_profile(file)))


@command.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
def compare(a, b):
    """Compare two profiles point by point (B/A of the median time)."""
    from engramsim.report.profile import ProfileComparison

    Console().print(ProfileComparison(load_profile(a), load_profile(b)))
