"""Sweeps: grids of `simulate` runs, in local processes or on Ray (see grid.py for the format)."""

from engramsim.sweep.grid import Grid, config_key, load_grid, parse_grid
from engramsim.sweep.run import SweepResult, run_sweep

__all__ = ["Grid", "SweepResult", "config_key", "load_grid", "parse_grid", "run_sweep"]
