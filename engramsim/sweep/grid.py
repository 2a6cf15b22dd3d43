"""A sweep grid: a TOML file whose keys are `simulate` options or preset fields.

    model = "dense-8b-engram100b"        # a scalar holds for every config
    hw = ["h800", "h200"]                # a list is an axis
    tier = ["dram-uva", "dram-copy"]
    "hw.gpu.hbm_bw_GBps" = [3350, 4800]  # any preset field, by section and TOML key
    [[exclude]]                          # drop configs matching every key of a table
    hw = "h800"
    tier = "dram-uva"

The sweep is the product of the axes, in file order, minus the excluded configs. Each config is
normalized (every option present, numbers typed) and keyed by a hash of that normal form, so
`--resume` can tell which configs a results file already holds.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from engramsim.errors import UserError
from engramsim.presets import load_toml
from engramsim.sim.tiers import DEFAULT_TIERS, TIERS

# Every option a grid may set: its type and its value when the grid leaves it out (as `simulate`).
OPTIONS: dict[str, tuple[type, object]] = {
    "hw": (str, "h800"),
    "model": (str, "dense-4b-engram100b"),
    "workload": (str, "paper-table4"),
    "engine": (str, "nano-vllm"),
    "tier": (str, list(DEFAULT_TIERS)),
    "gpus": (int, 0),            # 0: DP x TP
    "tp": (int, 1),
    "dp": (int, 1),
    "ep": (int, 1),
    "seed": (int, 0),
    "prefetch": (bool, True),
    "hbm_cache_gib": (float, 0.0),
    "ssd_dram_cache_gib": (float, 0.0),
    "ssd_dram_hit": (float, 0.0),
    "max_seqs": (int, 0),        # 0: the workload's own max_num_seqs
    "trace": (str, ""),          # "": uniform hashing; else as simulate --trace (file, default, zipf)
    "cxl": (str, ""),            # "": the hardware preset's own CXL part
}
# Dotted keys set one field of a preset: hw.<section>.<key>, model.<section>.<key>, workload.<key>,
# engine.<key>.
PRESET_PREFIXES = ("hw.", "model.", "workload.", "engine.")


@dataclass(frozen=True)
class Grid:
    configs: list[dict]      # normalized, in sweep order
    axes: list[str]          # keys that vary, in file order
    source: str

    def __len__(self):
        return len(self.configs)


def config_key(config: dict) -> str:
    """A stable hash of a normalized config: the same config always gets the same key."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file not found: {path}")
    return parse_grid(load_toml(path), str(path))


def parse_grid(data: dict, where: str) -> Grid:
    data = dict(data)
    excludes = data.pop("exclude", [])
    if not isinstance(excludes, list) or not all(isinstance(e, dict) for e in excludes):
        raise UserError(f"{where}: 'exclude' must be an array of tables ([[exclude]])")
    values = {}
    for key, raw in data.items():
        values[key] = [_typed(key, v, where) for v in _as_axis(key, raw, where)]
    for key, (kind, default) in OPTIONS.items():
        if key not in values:
            values[key] = [_typed(key, v, where) for v in (default if isinstance(default, list) else [default])]
    rules = [{k: [_typed(k, v, where) for v in _as_axis(k, raw, f"{where} [[exclude]]")] for k, raw in e.items()}
             for e in excludes]
    for rule in rules:
        for key in rule:
            if key not in values:
                raise UserError(f"{where}: [[exclude]] names '{key}', which the grid does not set")
    names = list(values)
    axes = [k for k in names if len(values[k]) > 1]
    configs = [dict(zip(names, combo)) for combo in itertools.product(*(values[k] for k in names))]
    configs = [c for c in configs if not any(all(c[k] in allowed for k, allowed in r.items()) for r in rules)]
    if not configs:
        raise UserError(f"{where}: every config is excluded by [[exclude]]")
    return Grid(configs=[_normal(c) for c in configs], axes=axes, source=where)


def _as_axis(key: str, raw, where: str) -> list:
    if isinstance(raw, dict):
        raise UserError(f"{where}: '{key}' is a table; give a value or a list of values")
    if isinstance(raw, list):
        if not raw:
            raise UserError(f"{where}: axis '{key}' is empty")
        return raw
    return [raw]


def _typed(key: str, value, where: str):
    """Check one value against its option's type; preset fields are checked when presets load."""
    if key.startswith(PRESET_PREFIXES):
        if key.count(".") < 1 or not all(key.split(".")):
            raise UserError(f"{where}: bad preset field '{key}' (write e.g. hw.gpu.hbm_bw_GBps)")
        return value
    if key not in OPTIONS:
        known = ", ".join(OPTIONS)
        raise UserError(f"{where}: unknown grid key '{key}' (known: {known}, or a preset field such as "
                        f"hw.gpu.hbm_bw_GBps)")
    kind = OPTIONS[key][0]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: '{key}' takes {kind.__name__} values, got {value!r}")
    if key == "tier" and value not in TIERS:
        raise UserError(f"{where}: unknown tier '{value}' (known: {', '.join(TIERS)})")
    if kind in (int, float) and value < 0:
        raise UserError(f"{where}: '{key}' must be >= 0, got {value!r}")
    return value


def _normal(config: dict) -> dict:
    """Options first in a fixed order, then preset fields sorted: the form the key hashes.
    GPUs left out are DP x TP, as `simulate` counts them."""
    out = {k: config[k] for k in OPTIONS}
    out["gpus"] = out["gpus"] or out["dp"] * out["tp"]
    out.update({k: config[k] for k in sorted(config) if k not in OPTIONS})
    return out
