"""`engramsim cache`: hot-row cache hit rates against capacity for a real address stream."""

from __future__ import annotations

import click

from engramsim.cache import POLICIES
from engramsim.commands.common import Progress, no_repeats, print_notes
from engramsim.commands.numbers import whole
from engramsim.corpus import PARTS
from engramsim.errors import UserError
from engramsim.fileio import check_output, dumps_json
from engramsim.model import load_model

LFU_ACCESSES = 500_000


@click.command("cache")
@click.option(
    "--model", "-m", "model_name", default="engram-27b", show_default=True, help="Model preset name or TOML file."
)
@click.option(
    "--trace",
    "trace_file",
    type=click.Path(dir_okay=False),
    help="Trace saved by `engramsim trace --save`. Default: trace the offline corpus.",
)
@click.option("--text", "texts", multiple=True, type=click.Path(dir_okay=False), help="Text file(s) to trace instead.")
@click.option(
    "--corpus",
    "parts",
    multiple=True,
    type=click.Choice(PARTS),
    help="Only this part of the offline corpus (repeatable; default: all): en, code, zh.",
)
@click.option("--tokenizer", type=click.Path(dir_okay=False), help="Hugging Face tokenizer.json for --text.")
@click.option("--layer", type=whole(0, 1023), help="Engram layer to evaluate (default: the first).")
@click.option(
    "--policy",
    "policies",
    multiple=True,
    type=click.Choice(POLICIES),
    help="Policy to evaluate (repeatable; default: all).",
)
@click.option(
    "--lfu-accesses",
    default=LFU_ACCESSES,
    show_default=True,
    type=whole(1, 10**9),
    help="LFU is simulated per capacity in Python: evaluate it on this many first accesses.",
)
@click.option("--plot", type=click.Path(dir_okay=False), help="Also write the curves as a PNG.")
@click.option("--json", "as_json", is_flag=True, help="Print the curves as JSON instead of a table.")
def command(model_name, trace_file, texts, parts, tokenizer, layer, policies, lfu_accesses, plot, as_json):
    """Hit rate against capacity of static top-K, LRU and LFU hot-row caches.

    The address stream is one Engram layer's row reads in token order (every head of every
    token). static-topk pins the rows hottest in the first half and is measured on the second
    half; LRU curves for all sizes come at once from stack distances; LFU keeps counts of
    evicted rows too.
    """
    from rich.console import Console

    from engramsim import cache, engram
    from engramsim.addresses.build import trace_for

    no_repeats("--policy", policies)
    if policies and "lfu" not in policies and lfu_accesses != LFU_ACCESSES:
        click.echo("warning: --lfu-accesses does nothing without --policy lfu; ignored", err=True)
    if plot:
        check_output(plot, "--plot")
    model = load_model(model_name)
    print_notes(model.notes, "note", "yellow")
    err = Console(stderr=True)
    with Progress(err, not as_json) as step:
        step("building the address trace")
        trace = trace_for(model, texts, (), tokenizer, trace_file, parts)
        layer = trace.spec.layer_ids[0] if layer is None else layer
        if layer not in trace.spec.layer_ids:
            raise UserError(f"--layer {layer}: Engram layers are {list(trace.spec.layer_ids)}")
        step(f"hashing layer {layer}")
        rows = trace.rows(layer)
        source = f"{trace.corpus}; {trace.n_tokens:,} tokens x {rows.shape[1]} heads"
        curves = cache.cache_curves(
            rows,
            policies or POLICIES,
            layer,
            engram.layer_rows(trace.spec, layer),
            model.engram.row_bytes,
            source,
            lfu_accesses,
            progress=lambda p: step(f"{p} done"),
        )
    if plot:
        curves.plot(plot)
        err.print(f"wrote {plot}")
    if as_json:
        click.echo(dumps_json(curves.as_dict(), indent=1))
    else:
        Console().print(curves)
