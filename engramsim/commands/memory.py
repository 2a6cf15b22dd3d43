"""`engramsim memory`: the per-rank HBM plan of each Engram placement."""

from __future__ import annotations

import click
from rich.console import Console

from engramsim.capacity import Parallel
from engramsim.commands.common import no_repeats, print_notes
from engramsim.commands.numbers import (
    HBM_GIB_MAX,
    MAX_BATCHED_TOKENS,
    MAX_CONTEXT,
    MAX_EP,
    MAX_GPUS,
    MAX_SEQS,
    MAX_TP,
    number,
    whole,
)
from engramsim.engine import load_engine
from engramsim.fileio import dumps_json
from engramsim.hardware import load_hardware
from engramsim.model import load_model
from engramsim.report.memory import TIER_MEMORY, memory_report
from engramsim.units import GiB


@click.command(name="memory")
@click.option(
    "--model", "model_name", default="deepseek-v4.1-flash", show_default=True, help="Model preset or TOML path."
)
@click.option("--hw", "hw_name", default="h200", show_default=True, help="Hardware preset or TOML path.")
@click.option("--engine", "engine_name", default="vllm", show_default=True, help="Engine preset (engines/).")
@click.option("--gpus", type=whole(1, MAX_GPUS), help="GPUs in use. Default: DP x TP.")
@click.option(
    "--tp", default=1, show_default=True, type=whole(1, MAX_TP), help="Tensor-parallel degree of one replica."
)
@click.option("--dp", default=1, show_default=True, type=whole(1, MAX_GPUS), help="Data-parallel replicas.")
@click.option(
    "--ep",
    default=1,
    show_default=True,
    type=whole(1, MAX_EP),
    help="Expert-parallel ranks the routed experts are divided across.",
)
@click.option(
    "--tier",
    "tiers",
    multiple=True,
    type=click.Choice(list(TIER_MEMORY)),
    help="Where the Engram table lives; repeat. Default: none, hbm, dram.",
)
@click.option(
    "--context",
    "context_tokens",
    default=131072,
    show_default=True,
    type=whole(1, MAX_CONTEXT),
    help="Sequence length (tokens) the maximum concurrency is counted at.",
)
@click.option(
    "--max-model-len", type=whole(1, MAX_CONTEXT), help="The server's maximum context (default: the model's)."
)
@click.option(
    "--max-num-batched-tokens", type=whole(1, MAX_BATCHED_TOKENS), help="Override the engine's batched-token budget."
)
@click.option("--max-num-seqs", type=whole(1, MAX_SEQS), help="Override the engine's running-sequence limit.")
@click.option("--max-capture-size", type=whole(0, MAX_SEQS), help="Override the largest CUDA-graph capture size.")
@click.option(
    "--memory-utilization", type=number(0, 1, lo_open=True), help="Override the engine's memory-utilization fraction."
)
@click.option(
    "--host-copies",
    type=click.Choice(["per-node", "per-numa", "per-replica"]),
    help="Host copies of an off-GPU table (the engine's shared-memory option).",
)
@click.option(
    "--hbm-cache-gib",
    default=0.0,
    show_default=True,
    type=number(0, HBM_GIB_MAX),
    help="Hot-row cache per rank in HBM for the off-GPU tiers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def command(
    model_name,
    hw_name,
    engine_name,
    gpus,
    tp,
    dp,
    ep,
    tiers,
    context_tokens,
    max_model_len,
    max_num_batched_tokens,
    max_num_seqs,
    max_capture_size,
    memory_utilization,
    host_copies,
    hbm_cache_gib,
    as_json,
):
    """Plan HBM per rank as the engine allocates it at startup, for each table placement.

    Rows: weights, model buffers built with them (the MTP hidden-state buffer), Engram table
    shard (hbm tier), hot-row cache, activation peak of the
    profiling run, CUDA-graph pool, non-torch allocations, sparse-attention indexer buffer,
    Engram staging buffers, and the KV cache from what is left (GiB and tokens); then the
    maximum concurrency at --context tokens and the host DRAM per node the table copies take.
    """
    gpus = dp * tp if gpus is None else gpus
    engine = load_engine(engine_name).with_overrides(
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        max_capture_size=max_capture_size,
        memory_utilization=memory_utilization,
        host_copies=host_copies,
    )
    no_repeats("--tier", tiers)
    model = load_model(model_name)
    print_notes(model.notes, "note", "yellow")
    report = memory_report(
        load_hardware(hw_name),
        model,
        engine,
        Parallel(tp, dp, ep),
        gpus,
        list(tiers or ("none", "hbm", "dram")),
        context_tokens,
        max_model_len or 0,
        hbm_cache_gib * GiB,
    )
    if as_json:
        click.echo(dumps_json(report.to_dict()))
        return
    Console().print(report)
