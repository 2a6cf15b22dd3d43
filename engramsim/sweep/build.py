"""From a normalized sweep config to the simulator's inputs: presets with their fields
overridden, a Scenario and a Placement. Presets are cached per process, so a worker loads each
one once however many configs it runs."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from functools import lru_cache

from engramsim import serve
from engramsim.engine import engine_from_dict
from engramsim.errors import UserError
from engramsim.hardware import hardware_from_dict, with_nic_part
from engramsim.iopolicy import io_policy
from engramsim.model import model_from_dict, model_path, model_tables, with_row_dtype
from engramsim.presets import load_toml, resolve
from engramsim.rows.warmup import cold_start
from engramsim.sim.run import Scenario
from engramsim.sim.tiers import Placement, tier_for
from engramsim.units import GiB
from engramsim.workload import with_engine, with_speculation, workload_from_dict

# Options that only choose the placement: configs differing in these share one Scenario.
PLACEMENT_KEYS = (
    "tier",
    "hbm_cache_gib",
    "ssd_dram_cache_gib",
    "ssd_dram_hit",
    "numa",
    "gather_socket",
    "rdma_path",
    "rank_rows",
    "hbm_lookup",
)
# vLLM serve flags among the grid's keys: they go through engramsim.serve as simulate's do.
SERVE_FLAGS = ("gpu_memory_utilization", "max_num_batched_tokens", "max_model_len", "kv_cache_dtype")
# ...and these, with the Engram table's fields, do not touch the no-Engram baseline either.
ENGRAM_ONLY_KEYS = PLACEMENT_KEYS + ("prefetch", "trace", "readers", "read_at", "io", "cache_start")


def scenario_key(config: dict) -> str:
    return json.dumps({k: v for k, v in config.items() if k not in PLACEMENT_KEYS}, sort_keys=True)


def baseline_key(config: dict) -> str:
    return json.dumps(
        {k: v for k, v in config.items() if k not in ENGRAM_ONLY_KEYS and not k.startswith("model.engram.")},
        sort_keys=True,
    )


def presets(config: dict):
    """(hardware, model, workload, engine) of a config; a bad preset or field raises a
    UserError. The workload is served by the engine, as `simulate --engine` does."""
    hw_fields = _fields(config, "hw")
    if config["cxl"]:
        hw_fields = [["cxl", {"part": config["cxl"]}]] + hw_fields
    hw = _load("hardware", config["hw"], json.dumps(hw_fields))
    hw = with_nic_part(hw, config["nic"]) if config["nic"] else hw
    settings = serve_settings(config)
    model = serve.apply_to_model(settings, _load("model", config["model"], json.dumps(_fields(config, "model"))))
    model = with_row_dtype(model, config["row_dtype"]) if config["row_dtype"] else model
    engine = _load("engine", config["engine"], json.dumps(_fields(config, "engine")))
    engine = engine.with_overrides(**settings.engine_overrides)
    workload = with_engine(_load("workload", config["workload"], json.dumps(_fields(config, "workload"))), engine)
    workload = serve.apply_to_workload(settings, workload)
    if config["max_seqs"]:
        workload = replace(workload, engine=replace(workload.engine, max_num_seqs=config["max_seqs"]))
    workload = with_speculation(workload, config["spec_tokens"], config["accept_rate"])
    if config["concurrency"] is not None:
        workload = workload.closed_loop(config["concurrency"])
    return hw, model, workload, engine


def serve_settings(config: dict) -> serve.ServeSettings:
    """The vLLM serve flags among the keys, read as `simulate` reads its flags."""
    flags = {"--" + key.replace("_", "-"): config[key] for key in SERVE_FLAGS}
    return serve.settings_from_cli(None, config["engine"], None, flags, ())


def scenario(config: dict) -> Scenario:
    hw, model, workload, engine = presets(config)
    dp, tp, gpus = config["dp"], config["tp"], config["gpus"]
    if dp * tp > gpus:
        raise UserError(f"DP x TP = {dp} x {tp} = {dp * tp} ranks exceed the {gpus} GPUs")
    io = io_policy(engine.io, workload, not config["prefetch"], config["readers"], config["read_at"], config["io"])
    trace = config["trace"] or None
    return Scenario(
        hw=hw,
        model=model,
        workload=workload,
        gpus=gpus,
        tp=tp,
        seed=config["seed"],
        engine=engine,
        ep=config["ep"],
        prefetch=io.prefetch,
        io=io,
        row_model=_row_model(config["trace"], config["model"], json.dumps(_fields(config, "model"))),
        max_model_len=config["max_model_len"] or 0,
        cold_start=cold_start(model, trace) if config["cache_start"] == "cold" else None,
    )


def placement(config: dict, hw=None) -> Placement:
    """As `simulate` does, cache options apply only to the tiers they front; with `hw`, the
    tier as that machine names it (hbm is unified on a unified-memory machine)."""
    tier = tier_for(hw, config["tier"]) if hw else config["tier"]
    ssd = tier == "ssd"
    in_hbm = tier in ("hbm", "unified")
    lookup = dict(hbm_lookup=config["hbm_lookup"]) if tier == "hbm" else dict(rank_rows=config["rank_rows"])
    return Placement(
        tier,
        hbm_cache_bytes=0.0 if in_hbm else config["hbm_cache_gib"] * GiB,
        dram_cache_bytes=config["ssd_dram_cache_gib"] * GiB if ssd else 0.0,
        ssd_dram_hit_rate=config["ssd_dram_hit"] if ssd else 0.0,
        numa=config["numa"],
        gather_socket=config["gather_socket"],
        rdma_path=config["rdma_path"],
        **lookup,
    )


def _fields(config: dict, prefix: str) -> list:
    """[[dotted path inside the preset, value], ...] for keys `prefix.…`."""
    return [[k.split(".", 1)[1], v] for k, v in config.items() if k.startswith(prefix + ".")]


@lru_cache(maxsize=256)
def _load(kind: str, name: str, fields_json: str):
    path = model_path(name) if kind == "model" else resolve(kind, name)
    data, notes = model_tables(path) if kind == "model" else (load_toml(path), ())
    data, where = copy.deepcopy(data), str(path)
    for dotted, value in json.loads(fields_json):
        _set(data, dotted, value, f"{where}: grid field {dotted!r}")
    if kind == "hardware":
        return hardware_from_dict(data, where, path)
    if kind == "model":
        return model_from_dict(data, where, path, notes)
    data.setdefault("name", path.stem)
    if kind == "engine":
        return engine_from_dict(data, where, path)
    return workload_from_dict(data, where)


def _set(data: dict, dotted: str, value, where: str):
    *tables, key = dotted.split(".")
    for name in tables:
        inner = data.setdefault(name, {})
        if not isinstance(inner, dict):
            raise UserError(f"{where}: '{name}' is not a table")
        data = inner
    data[key] = value


@lru_cache(maxsize=16)
def _row_model(trace: str, model_name: str, model_fields_json: str):
    """None keeps the uniform-hashing expectation; otherwise as `simulate --trace` (a trace file,
    `default` or `zipf`)."""
    if not trace:
        return None
    from engramsim.rows.load import load_row_model

    return load_row_model(trace, _load("model", model_name, model_fields_json))
