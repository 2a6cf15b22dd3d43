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
import math
from dataclasses import dataclass
from pathlib import Path

from engramsim.errors import UserError
from engramsim.iopolicy import IO_KINDS, READ_AT, READERS_MAX
from engramsim.model import ROW_DTYPES
from engramsim.presets import (
    DRAM_GIB_MAX,
    HBM_GIB_MAX,
    MAX_BATCHED_TOKENS,
    MAX_CONTEXT,
    MAX_EP,
    MAX_GPUS,
    MAX_SEQS,
    MAX_TP,
    SEED_MAX,
    load_toml,
)
from engramsim.serve import KV_DTYPES
from engramsim.sim.tiers import ALL_TIERS, DEFAULT_TIERS
from engramsim.topology import GATHER_SOCKETS, HBM_LOOKUPS, NUMA_LAYOUTS, RANK_ROWS, RDMA_PATHS

# Every option a grid may set, named as `simulate`'s long flag (--hbm-cache-gib: hbm_cache_gib):
# its type and its value when the grid leaves it out (as `simulate`). None: the presets' own.
OPTIONS: dict[str, tuple[type, object]] = {
    "hw": (str, "h800"),
    "model": (str, "dense-4b-engram100b"),
    "workload": (str, "paper-table4"),
    "engine": (str, "nano-vllm"),
    "tier": (str, list(DEFAULT_TIERS)),
    "gpus": (int, 0),  # 0: DP x TP
    "tp": (int, 1),
    "dp": (int, 1),
    "ep": (int, 1),
    "seed": (int, 0),
    "prefetch": (bool, True),
    "hbm_cache_gib": (float, 0.0),
    "ssd_dram_cache_gib": (float, 0.0),
    "ssd_dram_hit": (float, 0.0),
    "max_seqs": (int, 0),  # 0: the workload's own max_num_seqs
    "trace": (str, ""),  # "": uniform hashing; else as simulate --trace (file, default, zipf)
    "cxl": (str, ""),  # "": the hardware preset's own CXL part
    # Added after the first sweep: a config that leaves them at these values keeps its key.
    "nic": (str, ""),  # "": the hardware preset's own NIC part
    "numa": (str, "per-numa"),
    "gather_socket": (str, "local"),
    "rdma_path": (str, "gpudirect"),
    "rank_rows": (str, "shard"),
    "hbm_lookup": (str, "local"),
    "gpu_memory_utilization": (float, None),
    "max_num_batched_tokens": (int, None),
    "max_model_len": (int, None),
    "kv_cache_dtype": (str, None),
    "spec_tokens": (int, None),
    "accept_rate": (float, None),
    "concurrency": (int, None),  # closed loop: this many streams (None: the workload's arrivals)
    "readers": (int, None),  # ssd reads: None, the engine preset's I/O policy
    "read_at": (str, None),
    "io": (str, None),
    "cache_start": (str, "warm"),
    "row_dtype": (str, None),  # None: the model's row format
}
# The first options: a config's key hashes them always, later ones only when not at their default.
FIRST_OPTIONS = tuple(OPTIONS)[: tuple(OPTIONS).index("cxl") + 1]
# Values a string option takes (checked when the grid loads).
CHOICES = {
    "tier": ALL_TIERS,
    "read_at": READ_AT,
    "io": IO_KINDS,
    "cache_start": ("warm", "cold"),
    "row_dtype": ROW_DTYPES,
    "numa": NUMA_LAYOUTS,
    "gather_socket": GATHER_SOCKETS,
    "rdma_path": RDMA_PATHS,
    "rank_rows": RANK_ROWS,
    "hbm_lookup": HBM_LOOKUPS,
    "kv_cache_dtype": tuple(KV_DTYPES),
}
# Upper bounds of numeric options, the same constants simulate's flags use: every numeric key
# has one, so a grid cannot pass inf or an absurd size into the simulator.
MAX = {
    "gpus": MAX_GPUS,
    "tp": MAX_TP,
    "dp": MAX_GPUS,
    "ep": MAX_EP,
    "seed": SEED_MAX,
    "hbm_cache_gib": HBM_GIB_MAX,
    "ssd_dram_cache_gib": DRAM_GIB_MAX,
    "max_seqs": MAX_SEQS,
    "max_num_batched_tokens": MAX_BATCHED_TOKENS,
    "max_model_len": MAX_CONTEXT,
    "concurrency": MAX_SEQS,
    "ssd_dram_hit": 1.0,
    "accept_rate": 1.0,
    "gpu_memory_utilization": 1.0,
    "spec_tokens": 64,
    "readers": READERS_MAX,
}
# `simulate` options that are no grid key, and why (tests/test_sweep.py holds every option to one
# or the other, so a new `simulate` option cannot be forgotten here).
NOT_KEYS = {
    "no_prefetch": "the key prefetch (true / false) says it positively",
    "max_num_seqs": "the key max_seqs sets the same limit",
    "enable_expert_parallel": "the key ep gives the degree",
    "engram_config": "engine-specific spelling of tier and engine fields: use tier and engine.<field>",
    "speculative_config": "the keys spec_tokens and accept_rate model it",
    "from_cmd": "a whole launch command: its flags are the grid's keys",
    "profile": "calibrate once (engramsim calibrate --out hw.toml) and give that file as hw",
    "max_steps": "a flag of sweep and plan themselves (--max-steps)",
    "timeline": "one trace per run: simulate a chosen config with --timeline",
    "json": "output format: sweep --json, --out",
}
# The most configs one grid may hold: at about a second per config on a few cores, 100,000 is a
# day of work; a larger product is almost always an axis written by mistake (range(10**3) twice).
MAX_CONFIGS = 100_000
# Dotted keys set one field of a preset: hw.<section>.<key>, model.<section>.<key>, workload.<key>,
# engine.<key>.
PRESET_PREFIXES = ("hw.", "model.", "workload.", "engine.")


@dataclass(frozen=True)
class Grid:
    configs: list[dict]  # normalized, in sweep order
    axes: list[str]  # keys that vary, in file order
    source: str

    def __len__(self):
        return len(self.configs)


def config_key(config: dict) -> str:
    """A stable hash of a normalized config: the same config always gets the same key."""
    hashed = {k: v for k, v in config.items() if k in FIRST_OPTIONS or k not in OPTIONS or v != OPTIONS[k][1]}
    text = json.dumps(hashed, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_grid(path: str | Path) -> Grid:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"grid file not found: {path}")
    return parse_grid(load_toml(path), str(path))


def parse_grid(data: dict, where: str) -> Grid:
    data = dict(data)
    if not data:
        raise UserError(f'{where}: the grid sets no key (e.g. hw = ["h800", "h200"]; one config is `simulate`)')
    excludes = data.pop("exclude", [])
    if not isinstance(excludes, list) or not all(isinstance(e, dict) for e in excludes):
        raise UserError(f"{where}: 'exclude' must be an array of tables ([[exclude]])")
    values = {}
    for key, raw in data.items():
        values[key] = [_typed(key, v, where) for v in _as_axis(key, raw, where)]
        _no_repeats(key, values[key], where)
    for key, (_kind, default) in OPTIONS.items():
        if key not in values:
            values[key] = [_typed(key, v, where) for v in (default if isinstance(default, list) else [default])]
    rules = [
        {k: [_typed(k, v, where) for v in _as_axis(k, raw, f"{where} [[exclude]]")] for k, raw in e.items()}
        for e in excludes
    ]
    for rule in rules:
        for key in rule:
            if key not in values:
                raise UserError(f"{where}: [[exclude]] names '{key}', which the grid does not set")
    names = list(values)
    axes = [k for k in names if len(values[k]) > 1]
    _check_size(values, axes, where)
    configs = [dict(zip(names, combo)) for combo in itertools.product(*(values[k] for k in names))]
    configs = [c for c in configs if not any(all(c[k] in allowed for k, allowed in r.items()) for r in rules)]
    if not configs:
        raise UserError(f"{where}: every config is excluded by [[exclude]]")
    return Grid(configs=[_normal(c) for c in configs], axes=axes, source=where)


def _check_size(values: dict, axes: list[str], where: str) -> None:
    """Refuse, before building any config, a grid too large to run (counted from the axes)."""
    count = math.prod(len(values[k]) for k in axes)
    if count > MAX_CONFIGS:
        sizes = " x ".join(f"{k} {len(values[k])}" for k in axes)
        raise UserError(
            f"{where}: the grid has {count:,} configs ({sizes}), more than the {MAX_CONFIGS:,} a sweep "
            "runs (about a second each): narrow an axis or split the grid"
        )


def _no_repeats(key: str, axis: list, where: str) -> None:
    """A value listed twice would run the same config twice under one key (1 and 1.0 included)."""
    seen = set()
    for v in axis:
        marker = json.dumps(v, sort_keys=True, default=str)
        if marker in seen:
            raise UserError(f"{where}: axis '{key}' lists {v!r} twice")
        seen.add(marker)


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
        raise UserError(
            f"{where}: unknown grid key '{key}' (known: {known}, or a preset field such as hw.gpu.hbm_bw_GBps)"
        )
    kind, default = OPTIONS[key]
    if value is None and default is None:  # left out: the presets' own value
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise UserError(f"{where}: '{key}' takes {kind.__name__} values, got {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        raise UserError(f"{where}: unknown {key} '{value}' (known: {', '.join(CHOICES[key])})")
    if kind in (int, float) and not 0 <= value <= MAX[key]:  # also refuses NaN
        raise UserError(f"{where}: '{key}' must be in [0, {MAX[key]}], got {value!r}")
    return value


def _normal(config: dict) -> dict:
    """Options first in a fixed order, then preset fields sorted: the form the key hashes.
    GPUs left out are DP x TP, as `simulate` counts them."""
    out = {k: config[k] for k in OPTIONS}
    out["gpus"] = out["gpus"] or out["dp"] * out["tp"]
    out.update({k: config[k] for k in sorted(config) if k not in OPTIONS})
    return out
