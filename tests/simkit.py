"""Small scenarios for simulator tests: tiny workloads that run in milliseconds."""

from dataclasses import replace
from functools import lru_cache

from engramsim.hardware import load_hardware
from engramsim.model import load_model
from engramsim.sim.run import Scenario
from engramsim.workload import Engine, Workload


def tiny_workload(num_seqs=8, inp=(16, 64), out=(4, 12), kind="offline", rate=0.0, max_seqs=8) -> Workload:
    return Workload(
        name="tiny",
        kind=kind,
        num_seqs=num_seqs,
        input_len_min=inp[0],
        input_len_max=inp[1],
        output_len_min=out[0],
        output_len_max=out[1],
        rate_per_s=rate,
        engine=Engine(max_num_seqs=max_seqs, max_num_batched_tokens=4096, kv_block_tokens=16),
    )


# Presets are frozen dataclasses: parse each once, so property tests spend their time simulating.
preset_hardware = lru_cache(load_hardware)
preset_model = lru_cache(load_model)


def scenario(workload=None, hw="h800", model="dense-4b-engram100b", **kw) -> Scenario:
    return Scenario(
        hw=preset_hardware(hw) if isinstance(hw, str) else hw,
        model=preset_model(model),
        workload=workload or tiny_workload(),
        **kw,
    )


def with_gpu(hw, **changes):
    return replace(hw, gpu=replace(hw.gpu, **changes))


def with_link(hw, **changes):
    return replace(hw, link=replace(hw.link, **changes))


def with_host(hw, **changes):
    return replace(hw, host=replace(hw.host, **changes))
