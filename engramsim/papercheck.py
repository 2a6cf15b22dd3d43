"""The check against the Engram paper (§6.4, Table 4) and the fit of the engine's step cost.

Setup: h800, workload paper-table4 on the nano-vllm engine, one GPU, the 100B-parameter Engram
layer in host DRAM. One engine cost is fitted, on each model's no-Engram baseline only: the
per-step host cost, so that each baseline gives the paper's tok/s. Every Engram cost comes from
a mechanism (hashing, index copies, launches, fusion compute, HBM taken from the KV cache,
stalls, SM contention), so both Engram overheads are predictions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from rich import box
from rich.table import Table

from engramsim.engine import load_engine
from engramsim.hardware import Hardware, load_hardware
from engramsim.model import load_model
from engramsim.results import summarize_run
from engramsim.sim.engine import run_server
from engramsim.sim.run import Scenario, simulate
from engramsim.sim.tiers import Placement
from engramsim.workload import Workload, load_workload, with_engine

# Engram paper Table 4 (H800, nano-vLLM harness): baseline and +100B Engram (host DRAM) tok/s.
PAPER = {
    "dense-4b-engram100b": {"baseline_tok_s": 9031.62, "engram_tok_s": 8858.28, "overhead_pct": 1.92},
    "dense-8b-engram100b": {"baseline_tok_s": 6315.52, "engram_tok_s": 6140.02, "overhead_pct": 2.78},
}
TIERS = ("dram-copy", "dram-uva")
ENGINE = "nano-vllm"


def paper_scenario(name: str, hw: Hardware, seed: int = 0, workload: Workload | None = None) -> Scenario:
    engine = load_engine(ENGINE)
    workload = workload or with_engine(load_workload("paper-table4"), engine)
    return Scenario(
        hw=hw, model=load_model(name), workload=workload, seed=seed, engine=engine, prefetch=engine.prefetch
    )


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

    # Percentage points of overhead per mechanism; "KV lost" is the baseline run with the KV
    # cache the Engram placement leaves; "interaction" is what the parts do not add up to.
    breakdown_pp: dict = field(default_factory=dict)

    @property
    def overhead_error_pp(self) -> float:
        return self.predicted_overhead_pct - self.reported_overhead_pct

    @property
    def baseline_error_pct(self) -> float:
        return 100 * (self.predicted_baseline_tok_s / self.reported_baseline_tok_s - 1)


@dataclass(frozen=True)
class PaperReport:
    """The rows of `paper_rows`, rendered: predicted vs reported, then the overhead of each
    placement by mechanism (mechanisms as rows, so it fits 80 columns)."""

    rows: list[PaperRow]
    seed: int = 0

    def __rich_console__(self, console, options):
        t = Table(
            title=f"Engram paper Table 4 (H800), seed {self.seed}: predicted / paper",
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
        )
        for col in ("model", "tier", "baseline tok/s", "Engram tok/s", "overhead", "error"):
            t.add_column(col, justify="left" if col in ("model", "tier") else "right", no_wrap=True)
        for r in self.rows:
            t.add_row(
                _short(r.model),
                r.tier,
                f"{r.predicted_baseline_tok_s:,.0f}/{r.reported_baseline_tok_s:,.0f}",
                f"{r.predicted_tok_s:,.0f}/{r.reported_tok_s:,.0f}",
                f"{r.predicted_overhead_pct:.2f}/{r.reported_overhead_pct:.2f}%",
                f"{r.overhead_error_pp:+.2f} pp",
            )
        yield t
        yield "baselines: fitted (the engine's per-step host cost, per model)"
        yield "Engram overheads: predicted"
        b = Table(
            title="Predicted overhead by mechanism (percentage points)",
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
        )
        b.add_column("mechanism", no_wrap=True)
        for r in self.rows:
            b.add_column(f"{_short(r.model)} {r.tier}", justify="right")
        for name in self.rows[0].breakdown_pp:
            b.add_row(name, *(_pp(r.breakdown_pp[name]) for r in self.rows))
        b.add_row("total", *(f"{r.predicted_overhead_pct:.2f}" for r in self.rows), style="bold")
        b.add_row("paper", *(f"{r.reported_overhead_pct:.2f}" for r in self.rows))
        yield b


def _pp(value: float) -> str:
    """Two decimals, without the "-0.00" a tiny negative remainder would print."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def _short(model: str) -> str:
    """dense-8b-engram100b -> Dense-8B"""
    return model.split("-engram")[0].replace("dense", "Dense").replace("b", "B")


def paper_rows(hw: Hardware | None = None, seed: int = 0, fused_norms: bool = True) -> list[PaperRow]:
    """Table 4 at one seed. `fused_norms=False` runs the Engram module's RMSNorms as PyTorch
    2.4-2.8 runs the demo's torch.nn.RMSNorm (op by op in fp32), a sensitivity, not the preset."""
    hw = hw or load_hardware("h800")
    workload = with_engine(load_workload("paper-table4"), load_engine(ENGINE))
    workload = _with_engine(workload, engram_norm_fused=fused_norms)
    rows = []
    for name, ref in PAPER.items():
        scenario = paper_scenario(name, hw, seed, workload)
        report = simulate(scenario, [Placement(t) for t in TIERS])
        for run in report.runs:
            rows.append(
                PaperRow(
                    name,
                    run.tier,
                    report.baseline_tok_s,
                    ref["baseline_tok_s"],
                    run.throughput_tok_s,
                    ref["engram_tok_s"],
                    run.overhead_pct,
                    ref["overhead_pct"],
                    breakdown(scenario, run, report.baseline_tok_s),
                )
            )
    return rows


GOAL_PP = 0.5  # issue #10: both overheads within +-0.5 pp of the paper, Dense-8B above Dense-4B


@dataclass(frozen=True)
class SeedSpread:
    """Table 4's overheads over several seeds of the request lengths: the KV cache sits at a
    knife-edge for Dense-8B, so one seed is one draw of a distribution, not the prediction."""

    seeds: tuple[int, ...]
    rows: tuple[tuple[PaperRow, ...], ...]  # per seed, the rows of `paper_rows`

    def overheads(self, model: str, tier: str) -> list[float]:
        return [r.predicted_overhead_pct for rows in self.rows for r in rows if (r.model, r.tier) == (model, tier)]

    def summary(self) -> list[dict]:
        out = []
        for r in self.rows[0]:
            got = self.overheads(r.model, r.tier)
            out.append(
                {
                    "model": r.model,
                    "tier": r.tier,
                    "mean_pct": sum(got) / len(got),
                    "min_pct": min(got),
                    "max_pct": max(got),
                    "paper_pct": r.reported_overhead_pct,
                    "within_goal_every_seed": all(abs(o - r.reported_overhead_pct) <= GOAL_PP for o in got),
                }
            )
        return out

    def above_smaller_model_every_seed(self, tier: str) -> bool:
        small, large = PAPER  # Dense-4B, Dense-8B
        return all(b > a for a, b in zip(self.overheads(small, tier), self.overheads(large, tier)))

    def to_dict(self) -> dict:
        return {
            "seeds": list(self.seeds),
            "rows": self.summary(),
            "dense_8b_above_4b_every_seed": {t: self.above_smaller_model_every_seed(t) for t in TIERS},
        }

    def __rich_console__(self, console, options):
        seeds = ", ".join(map(str, self.seeds))
        t = Table(
            title=f"Engram paper Table 4 (H800), overhead over seeds {seeds}",
            title_justify="left",
            header_style="bold",
            box=box.SIMPLE_HEAD,
        )
        for col in ("model", "tier", "mean", "range", "paper", f"within ±{GOAL_PP} pp"):
            t.add_column(col, justify="left" if col in ("model", "tier") else "right", no_wrap=True)
        for row in self.summary():
            t.add_row(
                _short(row["model"]),
                row["tier"],
                f"{row['mean_pct']:.2f}%",
                f"{row['min_pct']:.2f}–{row['max_pct']:.2f}%",
                f"{row['paper_pct']:.2f}%",
                "every seed" if row["within_goal_every_seed"] else "no",
            )
        yield t
        for tier in TIERS:
            yes = self.above_smaller_model_every_seed(tier)
            yield f"{tier}: Dense-8B above Dense-4B {'at every seed' if yes else 'not at every seed'}"


def seed_spread(seeds: tuple[int, ...], fused_norms: bool = True) -> SeedSpread:
    hw = load_hardware("h800")
    return SeedSpread(tuple(seeds), tuple(tuple(paper_rows(hw, s, fused_norms)) for s in seeds))


def breakdown(scenario: Scenario, run, baseline_tok_s: float) -> dict:
    """The run's overhead in percentage points per mechanism. A serial cost of t seconds adds
    t / makespan of overhead; the KV cache the placement gives up is priced by running the
    baseline with only that much KV."""
    replicas = scenario.gpus // scenario.tp
    parts = {k: 100.0 * v / (replicas * run.makespan_s) for k, v in run.engram_time_s.items()}
    kv_tok_s = baseline_tok_s_with_kv(scenario, run.kv_tokens_per_rank)
    parts["KV lost"] = 100.0 * (baseline_tok_s - kv_tok_s) / baseline_tok_s
    parts["interaction"] = run.overhead_pct - sum(parts.values())
    return parts


def baseline_tok_s_with_kv(scenario: Scenario, kv_tokens: int) -> float:
    setup = scenario.server_setup(None, kv_tokens // scenario.workload.engine.kv_block_tokens)
    return summarize_run(run_server(setup, scenario.workload.requests(scenario.seed)))["throughput_tok_s"]


def _with_engine(workload: Workload, **changes) -> Workload:
    return replace(workload, engine=replace(workload.engine, **changes))


def _bisect(f, lo: float, hi: float, target: float, increasing: bool, iters: int = 30) -> float:
    for _ in range(iters):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def fit_step_host(progress=None) -> dict:
    """Fit the engine's per-step host cost on each model's no-Engram baseline; returns it in
    microseconds per model. No Engram cost is fitted."""
    hw = load_hardware("h800")
    workload = with_engine(load_workload("paper-table4"), load_engine(ENGINE))
    fitted = {}
    for name, ref in PAPER.items():

        def baseline(us: float) -> float:
            if progress:
                progress(f"{name}: step_host_us={us:.1f}")
            w = _with_engine(workload, fitted_step_host_s=((name, us * 1e-6),))
            return simulate(paper_scenario(name, hw, workload=w), []).baseline_tok_s

        fitted[name] = round(_bisect(baseline, 0.0, 50_000.0, ref["baseline_tok_s"], increasing=False, iters=20), 1)
    return fitted
