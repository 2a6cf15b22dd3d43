"""Golden render of a `simulate` report: the exact text a person reads, for a small fixed
scenario, compared with tests/golden/simulate_report.txt.

A deliberate change to the report's layout or to the model's figures regenerates the file:

    ENGRAMSIM_REGEN_GOLDEN=1 python -m pytest -q tests/test_golden.py

then review `git diff tests/golden/` and commit it with the change that caused it.
"""

import os
from io import StringIO
from pathlib import Path

from rich.console import Console

from engramsim.hardware import load_hardware
from engramsim.sim.run import simulate
from engramsim.sim.tiers import Placement
from tests.simkit import scenario, tiny_workload, with_link

GOLDEN = Path(__file__).parent / "golden" / "simulate_report.txt"


def render(obj) -> str:
    """Plain text at width 120, trailing spaces stripped (editors and hooks strip them too)."""
    out = StringIO()
    Console(file=out, width=120, color_system=None).print(obj)
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def test_simulate_report_renders_as_the_golden_file():
    # 16 short requests on one h800 with a 2 GB/s link, so fetches stall a little: a table that
    # does not fit in HBM, the copy paths, zero-copy with an HBM cache, and an SSD.
    hw = with_link(load_hardware("h800"), h2d_Bps=2e9)
    sc = scenario(tiny_workload(num_seqs=16, inp=(64, 512), out=(8, 32), max_seqs=16), hw=hw)
    report = simulate(
        sc,
        [
            Placement("hbm"),
            Placement("dram-copy"),
            Placement("dram-uva", hbm_cache_bytes=2**30),
            Placement("cxl-copy"),
            Placement("ssd", ssd_dram_hit_rate=0.5),
        ],
    )
    text = render(report)
    if os.environ.get("ENGRAMSIM_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "report render changed; see this module's docstring to regenerate"


def test_the_placement_table_shows_each_runs_figures():
    """Each fitting row of the table carries its own run's throughput, overhead and stall."""
    sc = scenario(tiny_workload(num_seqs=12, inp=(64, 256), out=(8, 24), max_seqs=12))
    report = simulate(sc, [Placement("dram-copy"), Placement("ssd")])
    lines = render(report).splitlines()
    assert f"no-Engram baseline: {report.baseline_tok_s:,.1f} output tok/s" in lines[2]
    for run in report.runs:
        row = next(line for line in lines if line.startswith(f"│ {run.tier} "))
        cells = [c.strip() for c in row.strip("│").split("│")]
        assert cells[2:4] == [f"{run.throughput_tok_s:,.1f}", f"{run.overhead_pct:+.2f}%"]
        assert cells[6] == f"{run.stall_s:.3f}" and cells[7] == f"{run.kv_tokens_per_rank:,}"
