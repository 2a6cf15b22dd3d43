"""`engramsim simulate`: compare Engram table placements on a simulated server."""
from __future__ import annotations

import json
from pathlib import Path
from dataclasses import replace

import click
from rich.console import Console

from engramsim.engine import load_engine
from engramsim import serve
from engramsim.commands.common import print_notes
from engramsim.errors import UserError
from engramsim.hardware import load_hardware, with_cxl_part
from engramsim.model import load_model
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.tiers import TIERS, Placement
from engramsim.workload import load_workload, with_engine

GiB = 2.0**30


@click.command(name="simulate")
@click.option("--model", "model_name", default="dense-4b-engram100b", show_default=True,
              help="Model preset name or path to a TOML file.")
@click.option("--hw", "hw_name", default="h800", show_default=True, help="Hardware preset name or path to a TOML file.")
@click.option("--tier", "tiers", multiple=True, type=click.Choice(TIERS),
              help="Placement(s) to simulate; repeat the option. Default: all.")
@click.option("--workload", "workload_name", default="paper-table4", show_default=True,
              help="Workload preset name or path to a TOML file.")
@click.option("--engine", "engine_name", default="nano-vllm", show_default=True,
              help="Engine preset (engines/): scheduling limits, memory reserves, where the Engram fetch starts. "
                   "The workload's [engine] table overrides its limits.")
@click.option("--gpus", type=int, help="GPUs in use; hosts hold gpus_per_host each. Default: DP x TP.")
@click.option("--tp", "--tensor-parallel-size", "tp", type=int, help="Tensor-parallel degree of one replica [default: 1].")
@click.option("--dp", "--data-parallel-size", "dp", type=int, help="Data-parallel replicas (with --gpus: GPUs / TP) [default: 1].")
@click.option("--ep", type=int, help="Expert-parallel ranks the routed experts are divided across [default: 1].")
@click.option("--enable-expert-parallel", is_flag=True, help="vLLM's switch: EP = TP x DP.")
@click.option("--engram-config", help="The engine's Engram settings as JSON, e.g. vLLM '{\"cpu_offload\": true}' "
              "(cpu_offload, dp_shared_memory, use_thp) or SGLang's (placement, replication, lookup).")
@click.option("--gpu-memory-utilization", type=float, help="vLLM's flag: share of device memory the engine uses.")
@click.option("--max-num-batched-tokens", type=int, help="vLLM's flag: tokens one step may batch.")
@click.option("--max-num-seqs", type=int, help="vLLM's flag: sequences running at once.")
@click.option("--max-model-len", type=int, help="vLLM's flag: the server's longest context (sizes the indexer buffer).")
@click.option("--kv-cache-dtype", help="vLLM's flag: auto, fp8, bf16, fp16.")
@click.option("--speculative-config", help="vLLM's flag (JSON): its num_speculative_tokens is modeled as "
                                                 "--spec-tokens (give --accept-rate too).")
@click.option("--from-cmd", "from_cmd", help="A whole launch command (`vllm serve MODEL ...` or `python -m "
              "sglang.launch_server ...`): engine, model and every flag above from it; prints what each flag became.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the request lengths.")
@click.option("--no-prefetch", is_flag=True, help="Fetch synchronously at the Engram layer.")
@click.option("--hbm-cache-gib", "cache_gib", multiple=True, type=float,
              help="Hot-row cache in HBM per GPU (GiB) for the off-GPU tiers; repeat to sweep sizes "
                   "(a bigger cache hits more but leaves less KV cache). Default: none.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Address-stream trace (from `engramsim trace --save`) that sets unique rows per step "
                   "and hot-row hit rates; `default` builds one from the offline corpus.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False),
              help="A measured profile: calibrate --hw from it on the fly (see `engramsim calibrate`).")
@click.option("--cxl", "cxl_part", help="Swap the CXL part, e.g. `cxl-pool` (hwmodels/parts/).")
@click.option("--ssd-dram-hit", default=0.0, show_default=True, type=float,
              help="ssd tier: share of page reads served by the host's DRAM page cache.")
@click.option("--ssd-dram-cache-gib", "dram_cache_gib", multiple=True, type=float,
              help="ssd tier: a DRAM hot-row cache of this size per host, its hit rate from the row "
                   "model (--trace); repeat to sweep sizes.")
@click.option("--max-seqs", type=int, help="Override the workload's max_num_seqs.")
@click.option("--timeline", "timeline_path", type=click.Path(dir_okay=False),
              help="Write a Chrome/Perfetto trace of every run (steps, stalls, fetches, counters) to this JSON "
                   "file; open it at ui.perfetto.dev.")
@click.option("--spec-tokens", type=int, help="Speculative decoding: drafted tokens each decode step verifies "
                                             "per sequence (the model's MTP layers draft them).")
@click.option("--accept-rate", type=float, help="Speculative decoding: probability that a drafted token is "
                                              "accepted, given the ones before it were.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def command(model_name, hw_name, tiers, workload_name, engine_name, gpus, tp, dp, ep, enable_expert_parallel,
            engram_config, gpu_memory_utilization, max_num_batched_tokens, max_num_seqs, max_model_len, kv_cache_dtype,
            speculative_config, from_cmd, seed, no_prefetch, cache_gib, trace_path, profile_path, cxl_part, ssd_dram_hit,
            dram_cache_gib, max_seqs, timeline_path, spec_tokens, accept_rate, as_json):
    """Simulate an inference server with the model's Engram tables in each placement.

    Each placement runs beside a no-Engram baseline (same backbone and workload), and the
    report gives throughput, overhead against that baseline, TTFT/TPOT, stall time, what each
    shared resource carried, and what bounds each placement. A placement whose table, cache
    or weights do not fit is reported as such and not simulated.
    """
    if max_seqs is not None and max_seqs < 1:
        raise UserError("--max-seqs must be at least 1")
    if any(c < 0 for c in cache_gib + dram_cache_gib):
        raise UserError("--hbm-cache-gib and --ssd-dram-cache-gib must be >= 0")
    serve_flags = {"--gpu-memory-utilization": gpu_memory_utilization, "--max-num-batched-tokens": max_num_batched_tokens,
                   "--max-num-seqs": max_num_seqs, "--max-model-len": max_model_len, "--kv-cache-dtype": kv_cache_dtype,
                   "--speculative-config": speculative_config, "--tensor-parallel-size": tp, "--data-parallel-size": dp,
                   "--enable-expert-parallel": enable_expert_parallel or None}
    settings = serve.settings_from_cli(from_cmd, engine_name, engram_config, serve_flags, tiers)
    tiers, tp, dp = tiers or settings.tiers, settings.tp or 1, settings.dp or 1
    ep = ep or settings.ep or 1
    hw = _hardware(hw_name, profile_path, cxl_part)
    model = serve.apply_to_model(settings, load_model(settings.model or model_name))
    engine = load_engine(settings.engine or engine_name).with_overrides(**settings.engine_overrides)
    workload = serve.apply_to_workload(settings, with_engine(load_workload(workload_name), engine))
    if min(tp, dp, ep, 1 if gpus is None else gpus) < 1:
        raise UserError("--gpus, --tp, --dp and --ep must be at least 1")
    if gpus is None:
        gpus = dp * tp
    elif dp * tp > gpus:
        raise UserError(f"DP x TP = {dp} x {tp} = {dp * tp} ranks exceed the {gpus} GPUs")
    if max_seqs:
        workload = replace(workload, engine=replace(workload.engine, max_num_seqs=max_seqs))
    workload = _with_speculation(workload, settings.spec_tokens if spec_tokens is None else spec_tokens, accept_rate)
    scenario = Scenario(hw=hw, model=model, workload=workload, gpus=gpus, tp=tp, seed=seed, engine=engine, ep=ep,
                        prefetch=engine.prefetch and not no_prefetch, row_model=_row_model(trace_path, model),
                        max_model_len=settings.max_model_len or 0)
    placements = _placements(tiers or TIERS, cache_gib or (0.0,), dram_cache_gib or (0.0,), ssd_dram_hit)
    timeline = _timeline(timeline_path)
    console = Console(stderr=as_json)
    print_notes(model.notes, "note", "yellow")
    print_notes(settings.lines, "understood")
    if as_json:
        report = simulate(scenario, placements, timeline=timeline)
        _write_timeline(timeline, timeline_path)
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=False))
        return
    with console.status("simulating...") as status:
        report = simulate(scenario, placements, progress=lambda label: status.update(f"simulating {label}..."),
                          timeline=timeline)
    _write_timeline(timeline, timeline_path)
    console.print(report)


def _timeline(path: str | None):
    if not path:
        return None
    if not Path(path).parent.is_dir():
        raise UserError(f"--timeline {path}: folder {Path(path).parent} does not exist")
    from engramsim.report.timeline import Timeline
    return Timeline()


def _write_timeline(timeline, path: str | None):
    if timeline:
        timeline.write(path)


def _with_speculation(workload, spec_tokens: int | None, accept_rate: float | None):
    if spec_tokens is None and accept_rate is None:
        return workload
    if spec_tokens is not None and spec_tokens < 0:
        raise UserError("--spec-tokens must be >= 0")
    if accept_rate is not None and not 0 <= accept_rate <= 1:
        raise UserError(f"--accept-rate must be within [0, 1], got {accept_rate}")
    if spec_tokens and accept_rate is None:
        raise UserError("speculative decoding needs --accept-rate (the share of drafted tokens accepted)")
    eng = workload.engine
    return replace(workload, engine=replace(eng, spec_tokens=eng.spec_tokens if spec_tokens is None else spec_tokens,
                                            accept_rate=eng.accept_rate if accept_rate is None else accept_rate))


def _placements(tiers, hbm_caches_gib, dram_caches_gib, ssd_dram_hit) -> list[Placement]:
    """Every tier with every HBM cache size (off-GPU tiers) and DRAM cache size (ssd only)."""
    out = []
    for tier in tiers:
        for hbm in (hbm_caches_gib if tier != "hbm" else (0.0,)):
            for dram in (dram_caches_gib if tier == "ssd" else (0.0,)):
                out.append(Placement(tier, hbm_cache_bytes=hbm * GiB, dram_cache_bytes=dram * GiB,
                                     ssd_dram_hit_rate=ssd_dram_hit if tier == "ssd" else 0.0))
    return out


def _hardware(hw_name: str, profile_path: str | None, cxl_part: str | None):
    if profile_path:
        from engramsim.calibrate import hardware_from_profile
        hw = hardware_from_profile(profile_path, base=hw_name)
    else:
        hw = load_hardware(hw_name)
    return with_cxl_part(hw, cxl_part) if cxl_part else hw


def _row_model(trace_path: str | None, model):
    """None keeps the uniform-hashing expectation; a trace file or `default` uses real text."""
    if not trace_path:
        return None
    from engramsim.rows.load import load_row_model
    return load_row_model(trace_path, model)
