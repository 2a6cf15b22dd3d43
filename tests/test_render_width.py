"""Reports at any width: golden renders at 80 and 120 columns of simulate, memory, profile and
profile-compare reports (simulate's from fixed figures, memory's from the presets) (tests/test_golden.py renders a real simulation
at 120); at 80 columns and below no line is wider than the console (the compact layout).

    ENGRAMSIM_REGEN_GOLDEN=1 python -m pytest -q tests/test_render_width.py
"""

import os
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from test_calibrate import synthetic

from engramsim.profile_io import Profile
from engramsim.report.profile import ProfileComparison, ProfileReport
from engramsim.results import RunResult, SimReport

GOLDEN = Path(__file__).parent / "golden"
UPDATE = bool(os.environ.get("ENGRAMSIM_REGEN_GOLDEN"))


def render(obj, width: int) -> str:
    """Plain text at `width`, trailing spaces stripped (as tests/test_golden.py does)."""
    console = Console(file=StringIO(), width=width, color_system=None, legacy_windows=False)
    console.print(obj)
    return "".join(line.rstrip() + "\n" for line in console.file.getvalue().splitlines())


def _run(tier, tok_s, **kw):
    base = dict(
        tier=tier,
        fits=True,
        problems=[],
        throughput_tok_s=tok_s,
        baseline_tok_s=7090.7,
        overhead_pct=100 * (7090.7 - tok_s) / 7090.7,
        ttft_p50_s=1.02,
        ttft_p99_s=1.81,
        tpot_p50_s=0.0329,
        tpot_p99_s=0.036,
        stall_s=0.0,
        kv_tokens_per_rank=1_163_008,
        resources={
            "dram": {"moved": 812.4, "unit": "GB", "utilization": 0.031},
            "link": {"moved": 790.2, "unit": "GB", "utilization": 0.118},
        },
        bound="compute-bound; fetch hidden by prefetch (fetches limited by zero-copy reads in flight)",
    )
    return RunResult(**{**base, **kw})


def sim_report() -> SimReport:
    runs = [
        RunResult(
            tier="hbm",
            fits=False,
            kv_tokens_per_rank=0,
            baseline_tok_s=7090.7,
            problems=["HBM: 140.4 GiB usable per GPU - weights 81.5 - table 47.2 leaves KV for 0 tokens"],
            bound="does not fit: HBM: 140.4 GiB usable per GPU - weights 81.5 - table 47.2 leaves KV for 0 tokens",
        ),
        _run("dram-uva", 6957.2),
        _run("dram-uva", 6990.4, hbm_cache_GiB=4.0, hbm_hit_rate=0.285, kv_tokens_per_rank=1_101_312),
        _run(
            "ssd",
            6514.9,
            stall_s=1.279,
            ttft_p50_s=1.33,
            ttft_p99_s=2.12,
            tpot_p50_s=0.0342,
            tpot_p99_s=0.0373,
            dram_cache_GiB=64.0,
            hbm_hit_rate=0.412,
            resources={
                "ssd_iops": {"moved": 210.5, "unit": "Mops", "utilization": 0.41},
                "cpu": {"moved": 12.3, "unit": "thread-s", "utilization": 0.02},
            },
            bound="stalled 6.4% of GPU time; fetches limited by ssd_iops",
        ),
    ]
    return SimReport(
        model="deepseek-v4.1-flash",
        hardware="h200",
        workload="fixed",
        gpus=8,
        tp=4,
        seed=0,
        prefetch=True,
        rows_source="trace: en, code, zh default corpus; 850,684 tokens",
        baseline_tok_s=7090.7,
        baseline={"ttft_p50_s": 1.0048, "tpot_p50_s": 0.0323},
        runs=runs,
    )


def profile_b() -> Profile:
    b = synthetic()
    for row in b.measurements:
        row["median_s"] *= 0.9 if row["name"] == "dram_gather" else 1.2
    return b


def memory() -> object:
    from engramsim.capacity import Parallel
    from engramsim.engine import load_engine
    from engramsim.hardware import load_hardware
    from engramsim.model import load_model
    from engramsim.report.memory import memory_report

    return memory_report(
        load_hardware("h200"),
        load_model("deepseek-v4.1-flash"),
        load_engine("vllm"),
        Parallel(4, 1, 1),
        8,
        ["none", "hbm", "dram", "cxl", "ssd"],
        131072,
    )


CASES = {
    "simulate": sim_report,
    "memory": memory,
    "profile": lambda: ProfileReport(synthetic()),
    "profile-compare": lambda: ProfileComparison(synthetic(), profile_b()),
}


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_render(name, width):
    text = render(CASES[name](), width)
    path = GOLDEN / f"{name}-{width}.txt"
    if UPDATE:
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"render of {name} at {width} changed (ENGRAMSIM_REGEN_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("width", [40, 60, 72, 80])
@pytest.mark.parametrize("name", sorted(CASES))
def test_compact_layout_never_exceeds_the_width(name, width):
    lines = render(CASES[name](), width).splitlines()
    assert max(len(line) for line in lines) <= width


def test_compact_layout_keeps_every_placement_and_figure():
    text = render(sim_report(), 80)
    for needle in (
        "dram-uva +4GiB HBM cache",
        "ssd +64GiB DRAM cache",
        "6,514.9",
        "+8.12%",
        "1,163,008",
        "stalled 6.4% of GPU time",
        "no fit",
        "ssd_iops 210.5 Mops 41.0%",
    ):
        assert needle in " ".join(text.split()), needle
