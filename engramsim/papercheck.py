"""The check against the Engram paper (§6.4, Table 4) and the fit of the h800 engine costs.

Setup: h800, workload paper-table4, one GPU, the 100B-parameter Engram layer in host DRAM.
Two engine costs of the h800 preset are fitted on Dense-4B only; Dense-8B is the check:
  step_overhead_us         so that the Dense-4B no-Engram baseline gives 9,031.62 tok/s
  engram_step_overhead_us  so that Dense-4B with dram-copy gives 1.92% overhead
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from engramsim.hardware import Hardware, load_hardware
from engramsim.model import load_model
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.tiers import Placement
from engramsim.engine import load_engine
from engramsim.workload import load_workload, with_engine

# Engram paper Table 4 (H800, nano-vLLM harness): baseline and +100B Engram (host DRAM) tok/s.
PAPER = {
    "dense-4b-engram100b": {"baseline_tok_s": 9031.62, "engram_tok_s": 8858.28, "overhead_pct": 1.92},
    "dense-8b-engram100b": {"baseline_tok_s": 6315.52, "engram_tok_s": 6140.02, "overhead_pct": 2.78},
}
FIT_MODEL = "dense-4b-engram100b"
TIERS = ("dram-copy", "dram-uva")


@dataclass(frozen=True)
class PaperRow:
    model: str
    tier: str
    predicted_baseline_tok_s: float
    reported_baseline_tok_s: float
    predicted_tok_s: float
    reported_tok_s: float
    predicted_overhead_pct: float
    reported_overhead_pct: float

    @property
    def overhead_error_pp(self) -> float:
        return self.predicted_overhead_pct - self.reported_overhead_pct

    @property
    def baseline_error_pct(self) -> float:
        return 100 * (self.predicted_baseline_tok_s / self.reported_baseline_tok_s - 1)


def paper_rows(hw: Hardware | None = None, seed: int = 0) -> list[PaperRow]:
    hw = hw or load_hardware("h800")
    workload = with_engine(load_workload("paper-table4"), load_engine("nano-vllm"))
    rows = []
    for name, ref in PAPER.items():
        report = simulate(Scenario(hw=hw, model=load_model(name), workload=workload, seed=seed),
                          [Placement(t) for t in TIERS])
        for run in report.runs:
            rows.append(PaperRow(name, run.tier, report.baseline_tok_s, ref["baseline_tok_s"],
                                 run.throughput_tok_s, ref["engram_tok_s"], run.overhead_pct, ref["overhead_pct"]))
    return rows


def _with_gpu(hw: Hardware, **changes) -> Hardware:
    return replace(hw, gpu=replace(hw.gpu, **changes))


def _bisect(f, lo: float, hi: float, target: float, increasing: bool, iters: int = 30) -> float:
    for _ in range(iters):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fit_h800(progress=None) -> dict:
    """Fit the two engine costs on Dense-4B alone; returns them in microseconds."""
    hw = load_hardware("h800")
    model, workload = load_model(FIT_MODEL), with_engine(load_workload("paper-table4"), load_engine("nano-vllm"))
    ref = PAPER[FIT_MODEL]

    def baseline(us: float) -> float:
        if progress:
            progress(f"step_overhead_us={us:.1f}")
        h = _with_gpu(hw, step_overhead_s=us * 1e-6)
        return simulate(Scenario(hw=h, model=model, workload=workload), []).baseline_tok_s

    step_us = _bisect(baseline, 0.0, 50_000.0, ref["baseline_tok_s"], increasing=False, iters=20)
    hw = _with_gpu(hw, step_overhead_s=step_us * 1e-6)

    def overhead(us: float) -> float:
        if progress:
            progress(f"engram_step_overhead_us={us:.1f}")
        h = _with_gpu(hw, engram_step_overhead_s=us * 1e-6)
        return simulate(Scenario(hw=h, model=model, workload=workload), [Placement("dram-copy")]).runs[0].overhead_pct

    engram_us = _bisect(overhead, 0.0, 5_000.0, ref["overhead_pct"], increasing=True, iters=20)
    return {"step_overhead_us": round(step_us, 1), "engram_step_overhead_us": round(engram_us, 1)}
