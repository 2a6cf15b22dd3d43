"""Presets are data: TOML files under hwmodels/, models/, engines/ and workloads/.

This module finds a preset by name or path, parses it with a one-line error when it is
malformed, and builds frozen dataclasses from TOML tables. A dataclass field declares the
TOML key it comes from (with its unit in the name), the scale to SI, and its allowed range,
so every check names the file, the key and the range.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
from pathlib import Path
from typing import Any

from engramsim.errors import UserError
from engramsim.fileio import input_file, read_input_text

ROOT = Path(__file__).resolve().parent.parent
# Physical bounds shared by presets, flags and engine command lines (serve.py). The largest
# clusters today hold ~100,000-200,000 GPUs; a GPU has at most a few hundred GiB of HBM (16 TiB
# bounds it), a host at most ~32 TiB of DRAM, and contexts reach ~1-2M tokens (2**31 bounds them).
MAX_GPUS = 1_000_000
MAX_TP = 1024
SEED_MAX = 2**32 - 1  # a 32-bit seed, as most tools take
MAX_EP = 2**20  # expert-parallel ranks: never above the routed experts, themselves bounded at 2**20
HBM_GIB_MAX = 16384
DRAM_GIB_MAX = 2**20
MAX_CONTEXT = 2**31
MAX_SEQS = 1_000_000
MAX_BATCHED_TOKENS = 10**8
PRESET_DIRS = {
    "hardware": ROOT / "hwmodels",
    "model": ROOT / "models",
    "workload": ROOT / "workloads",
    "engine": ROOT / "engines",
    "prices": ROOT / "prices",
}


def spec(
    key: str,
    scale: float = 1.0,
    lo: float | None = 0.0,
    lo_open: bool = True,
    hi: float | None = None,
    default: Any = dataclasses.MISSING,
    kind: type = float,
    default_factory: Any = dataclasses.MISSING,
):
    """A dataclass field read from TOML key `key`, multiplied by `scale` into SI units.

    `lo`/`hi` bound the TOML value; `lo_open` makes the lower bound exclusive (the default:
    most quantities must be strictly positive). Every number needs a physical upper bound `hi`,
    so an absurd magnitude (1e30 TFLOPS) is an error, not a result.
    """
    if kind in (int, float, list) and hi is None:
        raise TypeError(f"spec('{key}'): numeric fields need an upper bound `hi`")
    meta = {"key": key, "scale": scale, "lo": lo, "lo_open": lo_open, "hi": hi, "kind": kind}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def preset_names(kind: str) -> list[str]:
    return sorted(p.stem for p in PRESET_DIRS[kind].glob("*.toml"))


def resolve(kind: str, name_or_path: str | Path) -> Path:
    """A preset name (`h800`) or a path to a TOML file; an unknown name lists the known ones."""
    text = str(name_or_path)
    known = ", ".join(preset_names(kind)) or "none"
    if not text.strip():  # Path("") is ".", which would read as "a directory"
        raise UserError(f"empty {kind} preset name (known: {known})")
    path = Path(text)
    if path.suffix == ".toml" or path.exists() or "/" in text:
        return input_file(path, kind)
    candidate = PRESET_DIRS[kind] / f"{text}.toml"
    if not candidate.is_file():
        close = difflib.get_close_matches(text, preset_names(kind), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise UserError(f"unknown {kind} preset '{text}' (known: {known}){hint}")
    return candidate


def load_toml(path: Path) -> dict:
    text = read_input_text(path, "TOML")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path}: malformed TOML: {e}") from None


def load_json(path: str | Path, what: str, hint: str = ""):
    """A JSON file (a config.json, an nvbandwidth result, ...) with one-line errors naming it."""
    text = read_input_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not JSON ({e.msg} at line {e.lineno}){hint}") from None


def check_keys(table: dict, allowed: set, where: str) -> None:
    """One line naming the first key of `table` that is not `allowed`."""
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def build(cls, table: Any, where: str):
    """Build dataclass `cls` from a TOML table, validating keys, types and ranges."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: expected a table, got {type(table).__name__}")
    fields = [f for f in dataclasses.fields(cls) if "key" in f.metadata]
    check_keys(table, {f.metadata["key"] for f in fields}, where)
    values = {}
    for f in fields:
        key = f.metadata["key"]
        if key not in table:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(f"{where}: missing key '{key}'")
            continue
        values[f.name] = _convert(table[key], f.metadata, f"{where}: '{key}'")
    return cls(**values)


def _convert(value: Any, meta: dict, where: str):
    kind = meta["kind"]
    if kind is str:
        if not isinstance(value, str) or not value:
            raise UserError(f"{where} must be a non-empty string, got {_toml_type(value)}")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise UserError(f"{where} must be true or false, got {_toml_type(value)}")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where} must be a table, got {_toml_type(value)}")
        return value
    if kind is list:
        if not isinstance(value, list) or not value:
            raise UserError(f"{where} must be a non-empty list")
        return tuple(_number(v, meta, where, int) for v in value)
    return (
        _number(value, meta, where, kind) * meta["scale"] if meta["scale"] != 1 else _number(value, meta, where, kind)
    )


def _toml_type(value: Any) -> str:
    """What a TOML value is, in TOML's words (a list is an array, a dict a table)."""
    kinds = ((bool, "a boolean"), (str, "a string"), (int, "an integer"), (float, "a float"), (list, "an array"))
    return next((f"{name} ({value!r})" for t, name in kinds if isinstance(value, t)), "a table")


def _number(value: Any, meta: dict, where: str, kind: type):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} must be a number, got {value!r}")
    if kind is int and (isinstance(value, float) and not value.is_integer()):
        raise UserError(f"{where} must be a whole number, got {value!r}")
    lo, hi = meta["lo"], meta["hi"]
    too_low = lo is not None and (value < lo or (meta["lo_open"] and value == lo))
    if not math.isfinite(value) or too_low or (hi is not None and value > hi):
        raise UserError(
            f"{where} must be {'a whole number' if kind is int else 'a number'} in "
            f"{allowed_range(lo, hi, meta['lo_open'])}, got {value!r}"
        )
    return int(value) if kind is int else float(value)


def allowed_range(lo: float | None, hi: float | None, lo_open: bool = False) -> str:
    """`(0, 1e+05]`-style interval text for error messages."""
    left = "(-inf" if lo is None else f"{'(' if lo_open else '['}{_bound(lo)}"
    right = "inf)" if hi is None else f"{_bound(hi)}]"
    return f"{left}, {right}"


def _bound(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e10 else f"{value:g}"
