"""`engramsim simulate`: compare Engram table placements on a simulated server."""

from __future__ import annotations

from dataclasses import replace

import click
from rich.console import Console

from engramsim import serve
from engramsim.commands.common import no_repeats, print_notes
from engramsim.commands.numbers import (
    DRAM_GIB_MAX,
    HBM_GIB_MAX,
    MAX_BATCHED_TOKENS,
    MAX_CONTEXT,
    MAX_EP,
    MAX_GPUS,
    MAX_SEQS,
    MAX_TP,
    SEED,
    number,
    whole,
)
from engramsim.engine import load_engine
from engramsim.errors import UserError
from engramsim.fileio import check_output, dumps_json
from engramsim.hardware import load_hardware, with_cxl_part, with_nic_part
from engramsim.iopolicy import IO_KINDS, READ_AT, READERS_MAX, io_policy
from engramsim.model import ROW_DTYPES, load_model, with_row_dtype
from engramsim.report.progress import ProgressBar
from engramsim.rows.warmup import cold_start
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.tiers import ALL_TIERS, Placement, default_tiers, tier_for
from engramsim.sim.work import DEFAULT_MAX_STEPS
from engramsim.topology import GATHER_SOCKETS, HBM_LOOKUPS, NUMA_LAYOUTS, RANK_ROWS, RDMA_PATHS
from engramsim.units import GiB
from engramsim.workload import load_workload, with_engine, with_speculation


@click.command(name="simulate")
@click.option(
    "--model",
    "model_name",
    default="dense-4b-engram100b",
    show_default=True,
    help="Model preset name or path to a TOML file.",
)
@click.option("--hw", "hw_name", default="h800", show_default=True, help="Hardware preset name or path to a TOML file.")
@click.option(
    "--tier",
    "tiers",
    multiple=True,
    type=click.Choice(ALL_TIERS),
    help="Placement(s) to simulate; repeat the option. Default: all but rdma (a remote store: name it); on a unified-memory machine, unified and ssd.",
)
@click.option(
    "--workload",
    "workload_name",
    default="paper-table4",
    show_default=True,
    help="Workload preset name or path to a TOML file.",
)
@click.option(
    "--engine",
    "engine_name",
    default="nano-vllm",
    show_default=True,
    help="Engine preset (engines/): scheduling limits, memory reserves, where the Engram fetch starts. "
    "The workload's [engine] table overrides its limits.",
)
@click.option("--gpus", type=whole(1, MAX_GPUS), help="GPUs in use; hosts hold gpus_per_host each. Default: DP x TP.")
@click.option(
    "--tp",
    "--tensor-parallel-size",
    "tp",
    type=whole(1, MAX_TP),
    help="Tensor-parallel degree of one replica [default: 1].",
)
@click.option(
    "--dp",
    "--data-parallel-size",
    "dp",
    type=whole(1, MAX_GPUS),
    help="Data-parallel replicas (with --gpus: GPUs / TP) [default: 1].",
)
@click.option(
    "--ep", type=whole(1, MAX_EP), help="Expert-parallel ranks the routed experts are divided across [default: 1]."
)
@click.option("--enable-expert-parallel", is_flag=True, help="vLLM's switch: EP = TP x DP.")
@click.option(
    "--engram-config",
    help="The engine's Engram settings as JSON, e.g. vLLM '{\"cpu_offload\": true}' "
    "(cpu_offload, dp_shared_memory, use_thp, enable_engram_dp_sharding) or SGLang's (placement, replication, lookup).",
)
@click.option(
    "--gpu-memory-utilization",
    type=number(0, 1, lo_open=True),
    help="vLLM's flag: share of device memory the engine uses, in (0, 1]. Default: the engine preset's.",
)
@click.option(
    "--max-num-batched-tokens", type=whole(1, MAX_BATCHED_TOKENS), help="vLLM's flag: tokens one step may batch."
)
@click.option("--max-num-seqs", type=whole(1, MAX_SEQS), help="vLLM's flag: sequences running at once.")
@click.option(
    "--max-model-len",
    type=whole(1, MAX_CONTEXT),
    help="vLLM's flag: the server's longest context (sizes the indexer buffer).",
)
@click.option("--kv-cache-dtype", help="vLLM's flag: auto, fp8, bf16, fp16.")
@click.option(
    "--speculative-config",
    help="vLLM's flag (JSON): its num_speculative_tokens is modeled as --spec-tokens (give --accept-rate too).",
)
@click.option(
    "--from-cmd",
    "from_cmd",
    help="A whole launch command (`vllm serve MODEL ...` or `python -m "
    "sglang.launch_server ...`): engine, model and every flag above from it; prints what each flag became.",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of the request lengths.")
@click.option("--no-prefetch", is_flag=True, help="Fetch synchronously at the Engram layer.")
@click.option(
    "--hbm-cache-gib",
    "cache_gib",
    multiple=True,
    type=number(0, HBM_GIB_MAX),
    help="Hot-row cache in HBM per GPU (GiB) for the off-GPU tiers; repeat to sweep sizes "
    "(a bigger cache hits more but leaves less KV cache). Default: none.",
)
@click.option(
    "--trace",
    "trace_path",
    type=click.Path(dir_okay=False),
    help="Address-stream trace (from `engramsim trace --save`) that sets unique rows per step "
    "and hot-row hit rates; `default` builds one from the offline corpus.",
)
@click.option(
    "--profile",
    "profile_path",
    type=click.Path(dir_okay=False),
    help="A measured profile: calibrate --hw from it on the fly (see `engramsim calibrate`).",
)
@click.option("--cxl", "cxl_part", help="Swap the CXL part, e.g. `cxl-pool` (hwmodels/parts/).")
@click.option(
    "--nic", "nic_part", help="Swap the RDMA NIC part, e.g. `connectx7-200g`, `bluefield3-400g` (hwmodels/parts/)."
)
@click.option(
    "--ssd-dram-hit",
    type=number(0, 1),
    help="ssd tier: share of page reads served by the host's DRAM page cache [default: 0].",
)
@click.option(
    "--ssd-dram-cache-gib",
    "dram_cache_gib",
    multiple=True,
    type=number(0, DRAM_GIB_MAX),
    help="ssd tier: a DRAM hot-row cache of this size per host, its hit rate from the row "
    "model (--trace); repeat to sweep sizes.",
)
@click.option(
    "--numa",
    "numa",
    default="per-numa",
    show_default=True,
    type=click.Choice(NUMA_LAYOUTS),
    help="Host tables on a multi-socket host: a full copy per socket (per-numa), one copy "
    "interleaved over the sockets (interleave), or one copy on socket 0 (node0).",
)
@click.option(
    "--gather-socket",
    default="local",
    show_default=True,
    type=click.Choice(GATHER_SOCKETS),
    help="Copy paths: CPU gather threads on the GPU's socket or on the other one.",
)
@click.option(
    "--rdma-path",
    default="gpudirect",
    show_default=True,
    type=click.Choice(RDMA_PATHS),
    help="rdma tier: NIC writes rows into GPU memory (gpudirect) or into pinned host memory followed by a copy (host).",
)
@click.option(
    "--rank-rows",
    default="shard",
    show_default=True,
    type=click.Choice(RANK_ROWS),
    help="Off-GPU tiers with TP: each rank fetches the rows of its own heads (shard, vLLM "
    "cpu_offload) or of every head (all, SGLang's shared host table).",
)
@click.option(
    "--hbm-lookup",
    default="local",
    show_default=True,
    type=click.Choice(HBM_LOOKUPS),
    help="hbm tier with TP: each rank gathers its own shard only (local), gathers its shard "
    "and all-reduces the embeddings over NVLink (collective), or reads peers' rows over "
    "NVLink (peer_read), as SGLang does at TP >= 8.",
)
@click.option(
    "--cache-start",
    type=click.Choice(["warm", "cold"]),
    default="warm",
    show_default=True,
    help="Hot-row caches (--hbm-cache-gib) start at their steady-state hit rate, or empty: then "
    "the hit rate follows the lookups so far, from the trace run through LRU from empty "
    "(uniform hashing without --trace).",
)
@click.option("--max-seqs", type=whole(1, MAX_SEQS), help="Override the workload's max_num_seqs.")
@click.option(
    "--max-steps",
    type=number(1, 1e15),
    default=DEFAULT_MAX_STEPS,
    show_default=True,
    help="Refuse a simulation estimated to need more engine steps than this (all runs and "
    "replicas together; ~2 million take about a minute).",
)
@click.option(
    "--timeline",
    "timeline_path",
    type=click.Path(dir_okay=False),
    help="Write a Chrome/Perfetto trace of every run (steps, stalls, fetches, counters) to this JSON "
    "file; open it at ui.perfetto.dev.",
)
@click.option(
    "--spec-tokens",
    type=whole(0, 64),
    help="Speculative decoding: drafted tokens each decode step verifies "
    "per sequence (the model's MTP layers draft them).",
)
@click.option(
    "--accept-rate",
    type=number(0, 1),
    help="Speculative decoding: probability that a drafted token is accepted, given the ones before it were.",
)
@click.option(
    "--concurrency",
    type=whole(1, MAX_SEQS),
    help="Closed loop: this many streams, each sending its next request when its last one ends "
    "(overrides the workload's arrivals; 1 = batch-1 chat).",
)
@click.option("--readers", type=whole(1, READERS_MAX), help="ssd tier: threads issuing reads (1 = serial reads).")
@click.option(
    "--read-at",
    type=click.Choice(READ_AT),
    help="ssd tier: forward = blocking read at the Engram layer (as --no-prefetch); prefetch = "
    "started at forward entry; prestage = issued before the step's host work.",
)
@click.option(
    "--io",
    "io_kind",
    type=click.Choice(IO_KINDS),
    help="ssd tier: how rows are read: buffered pread (one OS page each), mmap (page faults with "
    "the OS's read-around), odirect or io_uring (the row's own blocks).",
)
@click.option(
    "--row-dtype",
    type=click.Choice(ROW_DTYPES),
    help="Store the Engram table rows in this format (values plus scale bytes): int2-g64 "
    "(MLX affine 2-bit) makes a 256-value row 80 B.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def command(
    model_name,
    hw_name,
    tiers,
    workload_name,
    engine_name,
    gpus,
    tp,
    dp,
    ep,
    enable_expert_parallel,
    engram_config,
    gpu_memory_utilization,
    max_num_batched_tokens,
    max_num_seqs,
    max_model_len,
    kv_cache_dtype,
    speculative_config,
    from_cmd,
    seed,
    no_prefetch,
    cache_gib,
    trace_path,
    profile_path,
    cxl_part,
    nic_part,
    ssd_dram_hit,
    dram_cache_gib,
    cache_start,
    numa,
    gather_socket,
    rdma_path,
    rank_rows,
    hbm_lookup,
    max_seqs,
    max_steps,
    concurrency,
    readers,
    read_at,
    io_kind,
    row_dtype,
    timeline_path,
    spec_tokens,
    accept_rate,
    as_json,
):
    """Simulate an inference server with the model's Engram tables in each placement.

    Each placement runs beside a no-Engram baseline (same backbone and workload), and the
    report gives throughput, overhead against that baseline, TTFT/TPOT, stall time, what each
    shared resource carried, and what bounds each placement. A placement whose table, cache
    or weights do not fit is reported as such and not simulated.
    """
    serve_flags = {
        "--gpu-memory-utilization": gpu_memory_utilization,
        "--max-num-batched-tokens": max_num_batched_tokens,
        "--max-num-seqs": max_num_seqs,
        "--max-model-len": max_model_len,
        "--kv-cache-dtype": kv_cache_dtype,
        "--speculative-config": speculative_config,
        "--tensor-parallel-size": tp,
        "--data-parallel-size": dp,
        "--enable-expert-parallel": enable_expert_parallel or None,
    }
    settings = serve.settings_from_cli(from_cmd, engine_name, engram_config, serve_flags, tiers)
    tiers, tp, dp = tiers or settings.tiers, settings.tp or 1, settings.dp or 1
    ep = ep or settings.ep or 1
    hw = _hardware(hw_name, profile_path, cxl_part)
    hw = with_nic_part(hw, nic_part) if nic_part else hw
    tiers = [tier_for(hw, t) for t in tiers] if tiers else default_tiers(hw)
    _check_flags(tiers, cache_gib, dram_cache_gib, ssd_dram_hit, cxl_part)
    model = serve.apply_to_model(settings, load_model(settings.model or model_name))
    engine = load_engine(settings.engine or engine_name).with_overrides(**settings.engine_overrides)
    workload = serve.apply_to_workload(settings, with_engine(load_workload(workload_name), engine))
    if row_dtype:
        model = with_row_dtype(model, row_dtype)
    if min(tp, dp, ep, 1 if gpus is None else gpus) < 1:
        raise UserError("--gpus, --tp, --dp and --ep must be at least 1")
    if gpus is None:
        gpus = dp * tp
    elif dp * tp > gpus:
        raise UserError(f"DP x TP = {dp} x {tp} = {dp * tp} ranks exceed the {gpus} GPUs")
    if max_seqs:
        workload = replace(workload, engine=replace(workload.engine, max_num_seqs=max_seqs))
    workload = with_speculation(workload, settings.spec_tokens if spec_tokens is None else spec_tokens, accept_rate)
    if concurrency is not None:
        workload = workload.closed_loop(concurrency)
    io = io_policy(engine.io, workload, no_prefetch, readers, read_at, io_kind)
    scenario = Scenario(
        hw=hw,
        model=model,
        workload=workload,
        gpus=gpus,
        tp=tp,
        seed=seed,
        engine=engine,
        ep=ep,
        prefetch=io.prefetch,
        io=io,
        row_model=_row_model(trace_path, model),
        max_model_len=settings.max_model_len or 0,
        cold_start=cold_start(model, trace_path) if cache_start == "cold" else None,
    )
    _warn_numa_without_sockets(hw)
    topology = dict(numa=numa, gather_socket=gather_socket, rdma_path=rdma_path)
    placements = _placements(tiers, cache_gib or (0.0,), dram_cache_gib or (0.0,), ssd_dram_hit or 0.0, topology)
    placements = [
        replace(p, hbm_lookup=hbm_lookup) if p.tier == "hbm" else replace(p, rank_rows=rank_rows) for p in placements
    ]
    timeline = _timeline(timeline_path)
    print_notes(model.notes, "note", "yellow")
    print_notes(settings.lines, "understood")
    total, done = (1 + len(placements)) * workload.num_seqs, [0]
    with ProgressBar("simulating", transient=True) as bar:

        def finished(n):  # sequences finished over all runs, on stderr (with --json too)
            done[0] += n
            bar.update(done[0], total)

        report = simulate(scenario, placements, finished=finished, max_steps=max_steps, timeline=timeline)
    _write_timeline(timeline, timeline_path)
    if as_json:
        click.echo(dumps_json(report.to_dict()))
    else:
        Console().print(report)


def _check_flags(tiers, cache_gib, dram_cache_gib, ssd_dram_hit, cxl_part):
    """Repeated values are errors; flags that cannot act on the chosen tiers get a warning."""
    for flag, values in (("--tier", tiers), ("--hbm-cache-gib", cache_gib), ("--ssd-dram-cache-gib", dram_cache_gib)):
        no_repeats(flag, values)
    if ssd_dram_hit is not None and dram_cache_gib:
        raise UserError("give --ssd-dram-hit (a fixed hit rate) or --ssd-dram-cache-gib (a cache size), not both")
    ignored = [
        (flag, needs)
        for flag, given, needs in (
            ("--ssd-dram-hit", ssd_dram_hit is not None, "ssd"),
            ("--ssd-dram-cache-gib", bool(dram_cache_gib), "ssd"),
            ("--hbm-cache-gib", bool(cache_gib), "an off-GPU tier"),
            ("--cxl", bool(cxl_part), "cxl-uva or cxl-copy"),
        )
        if given and not _tiers_use(tiers, needs)
    ]
    for flag, needs in ignored:
        click.echo(f"warning: {flag} does nothing without --tier {needs}; ignored", err=True)


def _warn_numa_without_sockets(hw) -> None:
    """--numa and --gather-socket choose between sockets: given on a one-socket host they
    change nothing, which the user should hear (their defaults are silent)."""
    ctx = click.get_current_context()
    given = [f"--{p.replace('_', '-')}" for p in ("numa", "gather_socket") if _given(ctx, p)]
    if given and hw.host.numa_nodes < 2:
        verb = "does" if len(given) == 1 else "do"
        click.echo(
            f"warning: {' and '.join(given)} {verb} nothing on {hw.name}, a host with one NUMA node; ignored", err=True
        )


def _given(ctx: click.Context, param: str) -> bool:
    return ctx.get_parameter_source(param) not in (None, click.core.ParameterSource.DEFAULT)


def _tiers_use(tiers, needs: str) -> bool:
    if needs == "ssd":
        return "ssd" in tiers
    if needs == "an off-GPU tier":
        return any(t not in ("hbm", "unified") for t in tiers)
    return any(t.startswith("cxl") for t in tiers)


def _timeline(path: str | None):
    if not path:
        return None
    check_output(path, "--timeline")
    from engramsim.report.timeline import Timeline

    return Timeline()


def _write_timeline(timeline, path: str | None):
    if timeline:
        timeline.write(path)


def _placements(tiers, hbm_caches_gib, dram_caches_gib, ssd_dram_hit, topology: dict) -> list[Placement]:
    """Every tier with every HBM cache size (off-GPU tiers) and DRAM cache size (ssd only)."""
    out = []
    for tier in tiers:
        for hbm in hbm_caches_gib if tier not in ("hbm", "unified") else (0.0,):
            for dram in dram_caches_gib if tier == "ssd" else (0.0,):
                out.append(
                    Placement(
                        tier,
                        hbm_cache_bytes=hbm * GiB,
                        dram_cache_bytes=dram * GiB,
                        ssd_dram_hit_rate=ssd_dram_hit if tier == "ssd" else 0.0,
                        **topology,
                    )
                )
    return out


def _hardware(hw_name: str, profile_path: str | None, cxl_part: str | None):
    if profile_path:
        from engramsim.calibrate import calibrate, check_calibration
        from engramsim.profile_io import load_profile

        profile = load_profile(profile_path)
        cal = calibrate(profile, base=hw_name)
        hw = check_calibration(cal)
        if profile.partial:
            click.echo(f"warning: --profile {profile_path}: {cal.notes[0]}", err=True)
    else:
        hw = load_hardware(hw_name)
    return with_cxl_part(hw, cxl_part) if cxl_part else hw


def _row_model(trace_path: str | None, model):
    """None keeps the uniform-hashing expectation; a trace file or `default` uses real text."""
    if not trace_path:
        return None
    from engramsim.rows.load import load_row_model

    return load_row_model(trace_path, model)
