"""`engramsim memory`: the per-rank HBM plan of each placement, as an engine's startup log shows it."""

from __future__ import annotations

from dataclasses import dataclass

from rich import box
from rich.table import Table
from rich.text import Text

from engramsim.capacity import MemoryPlan, Parallel, check_parallel, plan_memory
from engramsim.engine import EngineSpec
from engramsim.errors import UserError
from engramsim.hardware import Hardware
from engramsim.model import ModelSpec
from engramsim.report.width import compact, key_values

ROWS = [
    ("weights", "weights"),
    ("model_buffers", "model buffers"),
    ("engram_table", "Engram table shard"),
    ("hot_cache", "hot-row cache"),
    ("activations", "activation peak"),
    ("cuda_graphs", "CUDA graphs"),
    ("non_torch", "non-torch"),
    ("indexer", "indexer logits"),
    ("engram_staging", "Engram staging"),
    ("engram_module", "Engram module"),
    ("kv", "KV cache"),
]
TIER_MEMORY = {"none": None, "hbm": "hbm", "dram": "dram", "cxl": "cxl", "ssd": "ssd", "rdma": "rdma"}


@dataclass(frozen=True)
class MemoryReport:
    model: str
    hw: str
    engine: str
    parallel: Parallel
    gpus: int
    max_model_len: int
    plans: tuple[MemoryPlan, ...]

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "hw": self.hw,
            "engine": self.engine,
            "gpus": self.gpus,
            "tp": self.parallel.tp,
            "dp": self.parallel.dp,
            "ep": self.parallel.ep,
            "max_model_len": self.max_model_len,
            "plans": [p.to_dict() for p in self.plans],
        }

    def __rich_console__(self, console, options):
        if compact(options):
            yield from self._compact(options.max_width)
            return
        p = self.parallel
        t = Table(
            title=f"Per-rank HBM plan: {self.model} on {self.hw}, {self.engine}, "
            f"TP{p.tp} DP{p.dp} EP{p.ep}, max_model_len {self.max_model_len:,}",
            title_justify="left",
            header_style="bold",
        )
        t.add_column("GiB per rank")
        for plan in self.plans:
            t.add_column(plan.tier, justify="right")
        t.add_row("usable", *[f"{plan.usable_GiB:.2f}" for plan in self.plans])
        for key, label in ROWS:
            t.add_row(label, *[f"{plan.per_rank_GiB[key]:.2f}" for plan in self.plans])
        t.add_row("KV tokens per rank", *[f"{plan.kv_tokens_per_rank:,}" for plan in self.plans])
        t.add_row(
            f"max concurrency @ {self.plans[0].context_tokens:,}", *[str(plan.max_concurrency) for plan in self.plans]
        )
        t.add_row("host GiB per node (tables)", *[f"{plan.host_GiB_per_node:.1f}" for plan in self.plans])
        t.add_row("fits", *["yes" if plan.fits else "[red]no[/]" for plan in self.plans])
        yield t
        for plan in self.plans:
            for problem in plan.problems:
                yield f"[red]{plan.tier}[/]: {problem}"
        yield from self._hint()

    def _hint(self):
        """When the weights alone overflow every rank, say what would make room."""
        plan = self.plans[0]
        if not any(p.fits for p in self.plans) and plan.per_rank_GiB["weights"] > plan.usable_GiB:
            yield Text(
                f"nothing fits: the weights alone take {plan.per_rank_GiB['weights']:.1f} GiB per rank of "
                f"{plan.usable_GiB:.1f} usable; divide them over more ranks (--tp, --ep with --dp) or GPUs",
                style="yellow",
            )

    def _rows(self, plan: MemoryPlan) -> list[tuple[str, str]]:
        """(label, value) of one plan, in the order of the full table."""
        rows = [("usable", f"{plan.usable_GiB:.2f}")]
        rows += [(label, f"{plan.per_rank_GiB[key]:.2f}") for key, label in ROWS]
        return rows + [
            ("KV tokens", f"{plan.kv_tokens_per_rank:,}"),
            (f"max conc. @{plan.context_tokens:,}", str(plan.max_concurrency)),
            ("host GiB/node", f"{plan.host_GiB_per_node:.1f}"),
            ("fits", "yes" if plan.fits else "no"),
        ]

    def _compact(self, width: int):
        """At most 80 columns: a header grid, then the plans side by side without borders when
        they fit the width, else one block per placement; problems as a grid."""
        p = self.parallel
        yield Text("Per-rank HBM plan (GiB per rank)", style="bold")
        yield key_values(
            [
                ("model", f"{self.model} on {self.hw}"),
                ("engine", f"{self.engine}, TP{p.tp} DP{p.dp} EP{p.ep}, {self.gpus} GPU(s)"),
                ("max_model_len", f"{self.max_model_len:,}"),
            ]
        )
        rows = [self._rows(plan) for plan in self.plans]
        label_w = max(len(label) for label, _ in rows[0])
        # columns one space apart (the box's separators), plus its two edges
        cols_w = sum(1 + max(len(plan.tier), *(len(v) for _, v in r)) for plan, r in zip(self.plans, rows))
        if label_w + cols_w + 2 <= width:
            t = Table(box=box.SIMPLE_HEAD, padding=0, header_style="bold")
            t.add_column("", no_wrap=True)
            for plan in self.plans:
                t.add_column(plan.tier, justify="right", no_wrap=True)
            for i, (label, _) in enumerate(rows[0]):
                t.add_row(label, *[r[i][1] for r in rows])
            yield t
        else:
            for plan, r in zip(self.plans, rows):
                yield Text(f"tier {plan.tier}", style="bold")
                yield key_values(r, key_style="")
        context = f"{self.plans[0].context_tokens:,}"
        yield Text(f"max conc.: sequences of {context} tokens whose KV cache fits at once", style="dim")
        problems = [(plan.tier, problem) for plan in self.plans for problem in plan.problems]
        if problems:
            yield key_values(problems, key_style="bold red")
        yield from self._hint()


def memory_report(
    hw: Hardware,
    model: ModelSpec,
    engine: EngineSpec,
    par: Parallel,
    gpus: int,
    tiers: list[str],
    context_tokens: int,
    max_model_len: int = 0,
    hbm_cache_bytes: float = 0.0,
) -> MemoryReport:
    """One plan per tier, after checking the layout and the context against the model."""
    check_parallel(model, par, gpus)
    limit = model.backbone.max_model_len
    max_model_len = max_model_len or limit or context_tokens
    if limit and max(context_tokens, max_model_len) > limit:
        raise UserError(
            f"a context of {max(context_tokens, max_model_len):,} tokens exceeds the model's maximum ({limit:,})"
        )
    if context_tokens > max_model_len:
        raise UserError(f"--context {context_tokens:,} exceeds --max-model-len {max_model_len:,}")
    if model.engram is None and any(t != "none" for t in tiers):
        raise UserError(f"model {model.name} has no Engram table to place (use --tier none)")
    plans = tuple(
        plan_memory(hw, model, engine, par, TIER_MEMORY[t], hbm_cache_bytes, 0.0, context_tokens, max_model_len)
        for t in tiers
    )
    return MemoryReport(model.name, hw.name, engine.name, par, gpus, max_model_len, plans)
