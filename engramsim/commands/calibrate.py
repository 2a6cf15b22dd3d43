"""`engramsim calibrate PROFILE`: a hardware model TOML for `simulate --hw`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from engramsim.commands.numbers import number
from engramsim.errors import UserError
from engramsim.fileio import check_output

# A 1 PiB table: 5,000x DeepSeek-V4.1-Flash's ~200 GB, the largest Engram table deployed.
TABLE_GIB_MAX = 2**20


@click.command()
@click.argument("profile", type=click.Path(path_type=Path), required=False)
@click.option(
    "--nvbandwidth",
    "nvbandwidth_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON from `nvbandwidth -j`: its host-link, zero-copy and device-copy figures "
    "(H2D/D2H copy engine, host latency, SM copies, device-local copy) replace the profile's.",
)
@click.option("--base", default="h800", show_default=True, help="Preset whose figures fill what was not measured.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML to write [default: the profile's (else the nvbandwidth file's) path with .toml].",
)
@click.option(
    "--table-GiB",
    "table_GiB",
    type=number(0, TABLE_GIB_MAX, lo_open=True),
    help="Evaluate the gather curves at this table size (flagged if beyond what was measured).",
)
def command(profile, nvbandwidth_file, base, out, table_GiB):
    """Turn a measured profile and/or an nvbandwidth JSON into a hardware model for `simulate --hw`.

    Every figure is marked measured, inherited (from --base) or extrapolated in [provenance].
    """
    from engramsim.calibrate import calibrate, write_calibration
    from engramsim.nvbandwidth import load_nvbandwidth
    from engramsim.profile_io import load_profile
    from engramsim.report.profile import CalibrationReport

    if profile is None and nvbandwidth_file is None:
        raise UserError("give a PROFILE (from `engramsim profile`), --nvbandwidth FILE.json, or both")
    measured = load_profile(profile) if profile else None
    nvb = load_nvbandwidth(nvbandwidth_file) if nvbandwidth_file else None
    out = check_output(out or (profile or nvbandwidth_file).with_suffix(".toml"), "--out")
    cal = calibrate(measured, base, table_GiB, nvbandwidth=nvb)
    if measured and measured.partial:
        click.echo(f"warning: {cal.notes[0]}", err=True)
    source = " ".join(
        filter(
            None,
            [
                str(profile) if profile else "",
                f"--nvbandwidth {nvbandwidth_file}" if nvb else "",
                f"--base {base}",
                f"--table-GiB {table_GiB:g}" if table_GiB else "",
            ],
        )
    )
    write_calibration(cal, out, source=source)
    Console().print(CalibrationReport(cal, str(out)))
