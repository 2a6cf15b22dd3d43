"""`engramsim presets`: what can be simulated, with the numbers that matter."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from engramsim.engine import load_engine
from engramsim.fileio import dumps_json
from engramsim.hardware import load_hardware
from engramsim.model import load_model
from engramsim.presets import preset_names
from engramsim.report.width import COMPACT_WIDTH, narrow_table
from engramsim.units import GB, GiB
from engramsim.workload import load_workload


def hardware_rows() -> list[dict]:
    rows = []
    for name in preset_names("hardware"):
        hw = load_hardware(name)
        rows.append(
            {
                "name": name,
                "gpu": hw.gpu.name,
                "gpus_per_host": hw.gpus_per_host,
                "bf16_tflops": hw.gpu.bf16_flops / 1e12,
                "hbm_GiB": hw.gpu.hbm_bytes / GiB,
                "hbm_GBps": hw.gpu.hbm_bw_Bps / GB,
                "link": hw.link.kind if hw.link else "unified memory",
                "h2d_GBps": hw.link.h2d_Bps / GB if hw.link else None,
                "dram_GiB": hw.host.dram_bytes / GiB,
                "dram_GBps": hw.host.dram_bw_Bps / GB,
                "cxl": hw.cxl.name if hw.cxl else None,
                "ssd": hw.ssd.name if hw.ssd else None,
                "sockets": hw.topo.sockets,
                "gpus_per_switch": hw.topo.gpus_per_switch,
                "nic": f"{hw.rdma.nics_per_host}x {hw.rdma.name}" if hw.rdma else None,
            }
        )
    return rows


def model_rows() -> list[dict]:
    rows = []
    for name in preset_names("model"):
        m = load_model(name)
        e = m.engram
        rows.append(
            {
                "name": name,
                "backbone_params_B": m.backbone.total_params / 1e9,
                "engram_layers": list(e.layer_ids) if e else [],
                "rows_per_token_per_layer": e.heads_per_layer if e else 0,
                "row_bytes": e.row_bytes if e else 0,
                "table_GB": e.table_bytes / GB if e else 0.0,
                "description": m.description,
            }
        )
    return rows


def engine_rows() -> list[dict]:
    return [
        {
            "name": name,
            "scheduling": e.scheduling,
            "max_num_seqs": e.max_num_seqs,
            "max_num_batched_tokens": e.max_num_batched_tokens,
            "block_size_tokens": e.block_size_tokens,
            "memory_utilization": e.memory_utilization or "derived",
            "engram_fetch_start": e.engram_fetch_start,
            "host_copies": e.host_copies,
            "description": e.description,
        }
        for name in preset_names("engine")
        for e in [load_engine(name)]
    ]


def workload_rows() -> list[dict]:
    return [
        {
            "name": name,
            "kind": w.kind,
            "num_seqs": w.num_seqs,
            "rate_per_s": w.rate_per_s,
            "input_len": [w.input_len_min, w.input_len_max],
            "output_len": [w.output_len_min, w.output_len_max],
            "description": w.description,
        }
        for name in preset_names("workload")
        for w in [load_workload(name)]
    ]


# Columns shown only on a console wider than 80 (`presets --json` holds every field).
WIDE_ONLY = {"gpu", "link", "block_size_tokens", "engram_fetch_start"}


def _table(title: str, rows: list[dict], columns: list[tuple[str, str]], narrow: bool = False) -> Table:
    """Names whole (they are what `simulate` takes), numbers whole and right-aligned, text that
    folds inside its column, two-line headers: the tables read at 80 columns."""
    t = narrow_table(title, pad_edge=False)
    columns = [(key, label) for key, label in columns if not (narrow and key in WIDE_ONLY)]
    for key, label in columns:
        numeric = all(isinstance(row[key], (int, float)) or row[key] is None for row in rows)
        if key == "name":
            t.add_column(label, no_wrap=True)
        elif numeric:
            t.add_column(label, justify="right", no_wrap=True)
        else:  # wraps between words, never inside one
            longest_word = max(len(word) for row in rows for word in _fmt(row[key]).split())
            t.add_column(label, overflow="fold", min_width=min(longest_word, 14))
    for row in rows:
        t.add_row(*[_fmt(row[key]) for key, _ in columns])
    return t


def _fmt(v) -> str:
    if isinstance(v, float):  # three significant figures at least, no decimals past 100
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"
    if isinstance(v, list):
        return "-".join(map(str, v)) if v else "-"
    return "-" if v is None else str(v)


@click.command(name="presets")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def command(as_json):
    """List hardware, model, engine and workload presets with their key numbers.

    Presets are TOML files under hwmodels/, models/, engines/ and workloads/; every number in them
    carries its source. Pass a preset's name, or a path to your own TOML, to `simulate`.
    """
    data = {"hardware": hardware_rows(), "models": model_rows(), "engines": engine_rows(), "workloads": workload_rows()}
    if as_json:
        click.echo(dumps_json(data))
        return
    console = Console()
    narrow = console.width <= COMPACT_WIDTH
    console.print(
        _table(
            "Hardware (hwmodels/)",
            data["hardware"],
            [
                ("name", "name"),
                ("gpu", "GPU"),
                ("gpus_per_host", "GPUs/\nhost"),
                ("bf16_tflops", "BF16\nTFLOPS"),
                ("hbm_GiB", "HBM\nGiB"),
                ("hbm_GBps", "HBM\nGB/s"),
                ("link", "host\nlink"),
                ("h2d_GBps", "H2D\nGB/s"),
                ("dram_GiB", "DRAM\nGiB"),
                ("dram_GBps", "DRAM\nGB/s"),
            ],
            narrow,
        )
    )
    console.print(
        _table(
            "Models (models/)",
            data["models"],
            [
                ("name", "name"),
                ("backbone_params_B", "backbone\nparams (B)"),
                ("engram_layers", "Engram\nlayers"),
                ("rows_per_token_per_layer", "rows per\ntoken, layer"),
                ("row_bytes", "row\nbytes"),
                ("table_GB", "tables\nGB"),
            ],
            narrow,
        )
    )
    console.print(
        _table(
            "Engines (engines/)",
            data["engines"],
            [
                ("name", "name"),
                ("scheduling", "scheduling"),
                ("max_num_seqs", "max\nseqs"),
                ("max_num_batched_tokens", "batched\ntokens"),
                ("block_size_tokens", "block\ntokens"),
                ("memory_utilization", "memory\nutil."),
                ("engram_fetch_start", "Engram\nfetch at"),
                ("host_copies", "host\ncopies"),
            ],
            narrow,
        )
    )
    console.print(
        _table(
            "Workloads (workloads/)",
            data["workloads"],
            [
                ("name", "name"),
                ("kind", "kind"),
                ("num_seqs", "seqs"),
                ("rate_per_s", "req/s"),
                ("input_len", "input"),
                ("output_len", "output"),
            ],
            narrow,
        )
    )
