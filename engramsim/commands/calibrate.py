"""`engramsim calibrate PROFILE`: a hardware model TOML for `simulate --hw`."""
from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from engramsim.errors import UserError


@click.command()
@click.argument("profile", type=click.Path(path_type=Path))
@click.option("--base", default="h800", show_default=True, help="Preset whose figures fill what was not measured.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML to write [default: the profile's path with .toml].")
@click.option("--table-GiB", "table_GiB", type=float,
              help="Evaluate the gather curves at this table size (flagged if beyond what was measured).")
def command(profile, base, out, table_GiB):
    """Turn a measured profile into a hardware model for `simulate --hw`."""
    from engramsim.calibrate import calibrate, write_calibration
    from engramsim.profile_io import check_writable, load_profile
    from engramsim.report.profile import CalibrationReport
    if table_GiB is not None and not table_GiB > 0:
        raise UserError(f"--table-GiB must be > 0, got {table_GiB}")
    measured = load_profile(profile)
    out = out or profile.with_suffix(".toml")
    check_writable(out)
    cal = calibrate(measured, base, table_GiB)
    write_calibration(cal, out, source=f"{profile} --base {base}" + (f" --table-GiB {table_GiB:g}" if table_GiB else ""))
    Console().print(CalibrationReport(cal, str(out)))
