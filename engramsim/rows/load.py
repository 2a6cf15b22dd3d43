"""The RowModel that `simulate --trace` names."""

from __future__ import annotations

from pathlib import Path

from engramsim.errors import UserError
from engramsim.model import ModelSpec
from engramsim.rows import RowModel
from engramsim.rows.trace import default_row_model, trace_row_model
from engramsim.rows.zipf_fit import zipf_row_model


def load_row_model(path: str | Path, model: ModelSpec) -> RowModel:
    """RowModel from a trace file saved by `engramsim trace --save`; it must match the model.

    Two names are special: "default" builds (once, then caches) the trace of the offline
    default corpus (default_row_model), and "zipf" gives the Zipf model fitted to that trace
    (zipf_row_model): it reproduces the trace inside the range it measured and extrapolates to
    other table and batch sizes; its source names the parameters.
    """
    if model.engram is None:
        raise UserError(f"model {model.name} has no Engram layers to trace")
    if str(path) == "zipf":
        return zipf_row_model(model)
    if str(path) == "default":
        return default_row_model(model)
    return trace_row_model(path, model)
