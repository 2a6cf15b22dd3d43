"""`engramsim sweep GRID.toml`: run every config of a grid of `simulate` options."""

from __future__ import annotations

import click
from rich.console import Console

from engramsim.commands.common import executor_option
from engramsim.commands.numbers import MAX_WORKERS, number, whole
from engramsim.errors import UserError
from engramsim.fileio import dumps_json
from engramsim.report.progress import ProgressBar
from engramsim.sim.work import DEFAULT_MAX_STEPS
from engramsim.sweep import load_grid, run_sweep
from engramsim.sweep.executors import default_workers
from engramsim.sweep.output import check_path


@click.command(name="sweep")
@click.argument("grid_path", metavar="GRID.toml", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Write one row per config to this .csv, .jsonl or .parquet file (atomically).",
)
@click.option(
    "--workers",
    type=whole(1, MAX_WORKERS),
    help="Worker processes (Ray: CPUs of a local cluster). Default: this machine's cores.",
)
@executor_option("tasks")
@click.option(
    "--ray-address", help="Ray cluster to join (host:port, ray://host:port or auto). Default: start a local one."
)
@click.option("--resume", is_flag=True, help="Skip configs whose key is already in --out; keep their rows.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Draw the Pareto front, overhead vs cache size and the HBM plan to this PNG.",
)
@click.option(
    "--max-steps",
    type=number(1, 1e15),
    default=DEFAULT_MAX_STEPS,
    show_default=True,
    help="Skip (as a row that says so) a config whose run is estimated to need more engine steps "
    "(~2 million take about a minute).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as one JSON object instead of a table.")
def command(grid_path, out_path, workers, executor, ray_address, resume, plot_path, max_steps, as_json):
    """Run every config of GRID.toml: keys are `simulate` options, named as their long flags
    (hbm_cache_gib for --hbm-cache-gib; prefetch = true/false) or preset fields (`"hw.gpu.hbm_bw_GBps"`, `"engine.max_num_seqs"`); a list is an axis; the sweep is the product of the axes
    minus [[exclude]] tables. Configs that share a no-Engram baseline run it once.

    Each row: key (a hash of the config), the axes, fits, output_throughput (tok/s),
    overhead_pct, kv_tokens_per_rank, mean/p99 TTFT and TPOT (ms), duration_s, bound_by,
    problems, and the per-rank HBM plan (mem_*_GiB).
    """
    if resume and not out_path:
        raise UserError("--resume needs --out (the results file to resume)")
    out = check_path(out_path) if out_path else None
    grid = load_grid(grid_path)
    if plot_path:
        from engramsim.report.plots import check_plot_path

        check_plot_path(plot_path)
    workers = workers or default_workers()
    with ProgressBar("sweep", transient=as_json) as bar:
        result = run_sweep(grid, out, resume, executor, workers, ray_address, progress=bar.update, max_steps=max_steps)
    if plot_path:
        from engramsim.report.plots import plot_rows

        plot_rows(result.rows, grid.configs, grid.axes, plot_path, title=f"engramsim sweep {grid_path}")
    if as_json:
        click.echo(dumps_json(result.to_dict(), indent=1))
    else:
        Console().print(result)
