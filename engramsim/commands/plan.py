"""`engramsim plan`: the cheapest server, layout and placement that meets latency SLOs."""

from __future__ import annotations

import click
from rich.console import Console

from engramsim.commands.common import executor_option, no_repeats
from engramsim.commands.numbers import (
    HBM_GIB_MAX,
    MAX_CONTEXT,
    MAX_EP,
    MAX_GPUS,
    MAX_SEQS,
    MAX_TP,
    MAX_WORKERS,
    SEED,
    number,
    whole,
)
from engramsim.fileio import dumps_json
from engramsim.plan import SLOs, candidate_grid, plan
from engramsim.prices import load_prices
from engramsim.report.progress import ProgressBar
from engramsim.sim.tiers import DEFAULT_TIERS, TIERS
from engramsim.sim.work import DEFAULT_MAX_STEPS
from engramsim.sweep.executors import default_workers


@click.command(name="plan")
@click.option(
    "--model", "model_name", default="dense-4b-engram100b", show_default=True, help="Model preset or TOML file."
)
@click.option(
    "--workload", "workload_name", default="paper-table4", show_default=True, help="Workload preset or TOML file."
)
@click.option(
    "--engine", "engines", multiple=True, help="Candidate engine preset (engines/); repeat. Default: nano-vllm."
)
@click.option("--hw", "hws", multiple=True, help="Candidate server preset; repeat. Default: h100, h200, b200.")
@click.option(
    "--gpus", "gpus", multiple=True, type=whole(1, MAX_GPUS), help="Candidate GPU count; repeat. Default: 1 and 8."
)
@click.option(
    "--tp", "tps", multiple=True, type=whole(1, MAX_TP), help="Candidate tensor-parallel degree; repeat. Default: 1."
)
@click.option(
    "--ep", "eps", multiple=True, type=whole(1, MAX_EP), help="Candidate expert-parallel degree; repeat. Default: 1."
)
@click.option(
    "--tier",
    "tiers",
    multiple=True,
    type=click.Choice(TIERS),
    help="Candidate placement; repeat. Default: all but rdma.",
)
@click.option(
    "--hbm-cache-gib",
    "caches",
    multiple=True,
    type=number(0, HBM_GIB_MAX),
    help="Candidate HBM hot-row cache (GiB); repeat. Default: 0.",
)
@click.option(
    "--concurrency",
    type=whole(1, MAX_SEQS),
    help="SLO point: users served at once, each sending its next "
    "request when its last one ends (simulate --concurrency). Default: the workload's arrivals.",
)
@click.option(
    "--context",
    type=whole(1, MAX_CONTEXT),
    help="SLO point: every prompt this many tokens (outputs as "
    "the workload draws them). Default: the workload's lengths.",
)
@click.option(
    "--max-p99-ttft-ms", type=number(0, 1e9, lo_open=True), help="SLO: p99 time to first token, ms. Default: none."
)
@click.option(
    "--max-p99-tpot-ms", type=number(0, 1e9, lo_open=True), help="SLO: p99 time per output token, ms. Default: none."
)
@click.option(
    "--min-tok-s",
    type=number(0, 1e12),
    help="SLO: least output tokens/s of the whole deployment. Default: none.",
)
@click.option(
    "--max-overhead-pct",
    type=number(0, 100, lo_open=True),
    default=3.0,
    show_default=True,
    help="SLO: most Engram throughput overhead, percent; also the bound of the largest-table search.",
)
@click.option(
    "--prices",
    "prices_name",
    default="cloud-2026",
    show_default=True,
    help="Prices preset (prices/) or your own TOML file in the same shape.",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the request lengths.")
@click.option("--no-table-search", is_flag=True, help="Skip the largest-table bisection (faster).")
@click.option(
    "--max-steps",
    type=number(1, 1e15),
    default=DEFAULT_MAX_STEPS,
    show_default=True,
    help="Skip (as a row that says so) a candidate whose run is estimated to need more engine steps.",
)
@click.option("--workers", type=whole(1, MAX_WORKERS), help="Worker processes. Default: this machine's cores.")
@executor_option("the candidates' simulations")
@click.option(
    "--ray-address",
    metavar="HOST:PORT",
    help="Ray cluster to join (host:port or auto). Default: a local one.",
)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False),
    help="Draw the Pareto front, overhead vs cache size and the HBM plan to this PNG.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: choices, pareto, largest_table.")
def command(
    model_name,
    workload_name,
    engines,
    hws,
    gpus,
    tps,
    eps,
    tiers,
    caches,
    concurrency,
    context,
    max_p99_ttft_ms,
    max_p99_tpot_ms,
    min_tok_s,
    max_overhead_pct,
    prices_name,
    seed,
    no_table_search,
    max_steps,
    workers,
    executor,
    ray_address,
    plot_path,
    as_json,
):
    """Rank every candidate server, GPU count, TP/DP layout, tier and HBM cache size by $ per million
    output tokens, keeping those that fit and meet every SLO.

    Cost = GPU-hours (prices file) + the DRAM/CXL/NVMe that holds the table, bought and spread
    over the file's amortize_years. Also gives the Pareto front (tokens/s per GPU vs tokens/s per
    user) and, per tier, the largest Engram table that keeps overhead within --max-overhead-pct.
    When nothing is feasible it says so and lists the closest misses (exit status 0).
    """
    for flag, values in (
        ("--engine", engines),
        ("--hw", hws),
        ("--gpus", gpus),
        ("--tp", tps),
        ("--ep", eps),
        ("--tier", tiers),
        ("--hbm-cache-gib", caches),
    ):
        no_repeats(flag, values)
    prices = load_prices(prices_name)
    if plot_path:
        from engramsim.report.plots import check_plot_path

        check_plot_path(plot_path)
    grid = candidate_grid(
        model_name,
        workload_name,
        hws or ("h100", "h200", "b200"),
        gpus or (1, 8),
        tps or (1,),
        tiers or DEFAULT_TIERS,
        caches or (0.0,),
        seed=seed,
        concurrency=concurrency,
        engines=engines or ("nano-vllm",),
        eps=eps or (1,),
        context=context or 0,
    )
    slos = SLOs(max_p99_ttft_ms, max_p99_tpot_ms, min_tok_s, max_overhead_pct)
    with ProgressBar("plan", transient=as_json) as bar:
        result = plan(
            grid,
            slos,
            prices,
            workers or default_workers(),
            executor,
            ray_address,
            progress=bar.update,
            table_search=not no_table_search,
            max_steps=max_steps,
        )
    if plot_path:
        from engramsim.report.plots import plot_plan

        plot_plan(result, plot_path)
    if as_json:
        click.echo(dumps_json(result.to_dict(), indent=1))
    else:
        Console().print(result)
