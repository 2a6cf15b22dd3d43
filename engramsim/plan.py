"""The planner: which server, GPU count, layout, tier and cache size serves a model at the lowest
$ per million output tokens within latency SLOs, and how large a table each tier can hold.

It sweeps the candidates (engramsim.sweep), keeps the configs that fit and meet every SLO,
prices them (engramsim.prices), ranks them by $/Mtok, finds the Pareto front of tokens/s per GPU
against tokens/s per user, and bisects the Engram table size per tier against the overhead bound.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from engramsim.capacity import Parallel, host_copies_per_node
from engramsim.errors import UserError
from engramsim.prices import Prices
from engramsim.sim.work import DEFAULT_MAX_STEPS
from engramsim.sweep import build
from engramsim.sweep.grid import Grid, config_key, parse_grid
from engramsim.sweep.run import run_sweep
from engramsim.units import GiB

TABLE_KEY = "model.engram.engram_vocab_size"
BISECT_STEPS = 7  # after bracketing: the table size is known to within 2^(1/2^7) ~ 0.5%
MAX_DOUBLINGS = 12


@dataclass(frozen=True)
class SLOs:
    max_p99_ttft_ms: float | None = None
    max_p99_tpot_ms: float | None = None
    min_tok_s: float | None = None
    max_overhead_pct: float | None = None

    def misses(self, row: dict) -> dict:
        """Constraint name -> relative excess (0.1 = 10% past the bound) for each SLO missed."""
        if not row["fits"]:
            return {"fits": math.inf}
        out = {}
        for name, value, bound, upper in (
            ("p99_ttft_ms", row["p99_ttft_ms"], self.max_p99_ttft_ms, True),
            ("p99_tpot_ms", row["p99_tpot_ms"], self.max_p99_tpot_ms, True),
            ("output_throughput", row["output_throughput"], self.min_tok_s, False),
            ("overhead_pct", row["overhead_pct"], self.max_overhead_pct, True),
        ):
            if bound is None or value is None:
                continue
            excess = (value - bound) / max(abs(bound), 1e-9) if upper else (bound - value) / bound
            if excess > 0:
                out[name] = excess
        return out


@dataclass(frozen=True)
class PlanResult:
    model: str
    workload: str
    prices: str
    slos: dict
    choices: list[dict]  # feasible, cheapest $/Mtok first
    pareto: list[dict]  # feasible choices no other beats on both tok/s per GPU and per user
    largest_table: list[dict]  # per tier: the largest table under the overhead bound
    closest_misses: list[dict] = field(default_factory=list)  # when nothing is feasible
    candidates: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def __rich_console__(self, console, options):
        from engramsim.report.plan import render_plan

        yield from render_plan(self, options)


def candidate_grid(
    model: str,
    workload: str,
    hws,
    gpus,
    tps,
    tiers,
    caches_gib,
    seed: int = 0,
    concurrency: int | None = None,
    engines=("nano-vllm",),
    eps=(1,),
    context: int = 0,
) -> Grid:
    """Every candidate server, engine, layout and placement; layouts that do not divide are
    dropped (DP = GPUs / TP). The serving point: `concurrency` users, each sending its next
    request when its last one ends (`simulate --concurrency`; None: the workload's arrivals), and
    `context` tokens in every prompt (0: the workload's lengths)."""
    keys = {
        "model": model,
        "workload": workload,
        "engine": list(engines),
        "hw": list(hws),
        "gpus": list(gpus),
        "tp": list(tps),
        "ep": list(eps),
        "tier": list(tiers),
        "hbm_cache_gib": list(caches_gib),
        "seed": seed,
        "concurrency": concurrency,
    }
    if context:
        keys.update({"workload.input_len_min": context, "workload.input_len_max": context})
    grid = parse_grid(keys, "plan")
    configs = [c for c in grid.configs if c["gpus"] % c["tp"] == 0 and not (c["tier"] == "hbm" and c["hbm_cache_gib"])]
    if not configs:
        raise UserError("no candidate layout: every --gpus value must be a multiple of some --tp value")
    return Grid(configs=configs, axes=grid.axes, source="plan")


def plan(
    grid: Grid,
    slos: SLOs,
    prices: Prices,
    workers: int = 1,
    executor: str = "local",
    address: str | None = None,
    progress=None,
    table_search: bool = True,
    max_steps: float | None = DEFAULT_MAX_STEPS,
) -> PlanResult:
    for hw in {c["hw"] for c in grid.configs}:
        prices.per_gpu_hour(hw)  # every candidate server needs a price before anything runs
    sweep = run_sweep(grid, executor=executor, workers=workers, address=address, progress=progress, max_steps=max_steps)
    rows = [choice_row(c, r, prices) for c, r in zip(grid.configs, sweep.rows)]
    feasible = sorted((r for r in rows if not slos.misses(r)), key=lambda r: r["usd_per_mtok"])
    misses = [] if feasible else closest_misses(rows, slos)
    largest = largest_tables(grid, feasible, slos, workers, executor, address, max_steps) if table_search else []
    first = grid.configs[0]
    return PlanResult(
        model=first["model"],
        workload=first["workload"],
        prices=f"{prices.name} ({prices.date})",
        slos=asdict(slos),
        choices=feasible,
        pareto=pareto_front(feasible),
        largest_table=largest,
        closest_misses=misses,
        candidates=len(rows),
    )


def choice_row(config: dict, row: dict, prices: Prices) -> dict:
    """A sweep row with the layout spelled out and its price per hour and per million tokens."""
    out = {
        "hw": config["hw"],
        "engine": config["engine"],
        "gpus": config["gpus"],
        "tp": config["tp"],
        "dp": config["gpus"] // config["tp"],
        "ep": config["ep"],
        "tier": config["tier"],
        "cache_GiB": config["hbm_cache_gib"] if config["tier"] != "hbm" else 0.0,
    }
    out.update(
        {
            k: row[k]
            for k in (
                "fits",
                "output_throughput",
                "overhead_pct",
                "p99_ttft_ms",
                "p99_tpot_ms",
                "mean_tpot_ms",
                "tok_s_per_gpu",
                "tok_s_per_user",
                "kv_tokens_per_rank",
                "problems",
                "key",
            )
        }
    )
    out.update({k: v for k, v in row.items() if k.startswith("mem_")})  # the per-rank HBM plan
    out["usd_per_hour"] = usd_per_hour(config, prices) if row["fits"] else None
    tok_s = row["output_throughput"]
    out["usd_per_mtok"] = out["usd_per_hour"] / (tok_s * 3600) * 1e6 if row["fits"] and tok_s else None
    return out


def usd_per_hour(config: dict, prices: Prices) -> float:
    """GPU-hours plus the memory that holds the table (the engine's copies per node, on every
    node) and any SSD DRAM cache."""
    hw, model, _, engine = build.presets(config)
    hosts = -(-config["gpus"] // hw.gpus_per_host)
    cost = config["gpus"] * prices.per_gpu_hour(config["hw"])
    memory = build.placement(config).memory
    if memory != "hbm":
        copies = host_copies_per_node(
            hw, engine, Parallel(tp=config["tp"], dp=config["gpus"] // config["tp"], ep=config["ep"])
        )
        cost += prices.memory_usd_per_hour(memory, model.engram.table_bytes * copies * hosts)
    if config["tier"] == "ssd" and config["ssd_dram_cache_gib"]:
        cost += prices.memory_usd_per_hour("dram", config["ssd_dram_cache_gib"] * GiB * hosts)
    return cost


def pareto_front(choices: list[dict], tolerance: float = 1e-3) -> list[dict]:
    """Choices that no other beats on both tokens/s per GPU and tokens/s per user (differences
    within `tolerance` are ties), by tokens/s per GPU, best first; of ties, the first listed
    (the cheapest) stays."""
    pts = [c for c in choices if c["tok_s_per_gpu"] and c["tok_s_per_user"]]

    def beats(o, c):
        at_least = o["tok_s_per_gpu"] >= c["tok_s_per_gpu"] * (1 - tolerance) and o["tok_s_per_user"] >= c[
            "tok_s_per_user"
        ] * (1 - tolerance)
        better = o["tok_s_per_gpu"] > c["tok_s_per_gpu"] * (1 + tolerance) or o["tok_s_per_user"] > c[
            "tok_s_per_user"
        ] * (1 + tolerance)
        return at_least and better

    front = []
    for c in pts:
        if not any(beats(o, c) for o in pts) and not any(_tied(c, f, tolerance) for f in front):
            front.append(c)
    return sorted(front, key=lambda c: -c["tok_s_per_gpu"])


def _tied(a: dict, b: dict, tolerance: float) -> bool:
    return all(abs(a[k] - b[k]) <= tolerance * max(abs(a[k]), abs(b[k])) for k in ("tok_s_per_gpu", "tok_s_per_user"))


def closest_misses(rows: list[dict], slos: SLOs, n: int = 5) -> list[dict]:
    """The configs nearest to feasible: fewest, smallest relative SLO misses."""
    scored = [(sum(slos.misses(r).values()), i) for i, r in enumerate(rows)]
    best = sorted(scored)[:n]
    return [{**rows[i], "missed": {k: round(v, 4) for k, v in slos.misses(rows[i]).items()}} for _, i in best]


def largest_tables(
    grid: Grid,
    feasible: list[dict],
    slos: SLOs,
    workers: int,
    executor: str,
    address: str | None,
    max_steps: float | None = DEFAULT_MAX_STEPS,
) -> list[dict]:
    """Per tier, on its cheapest feasible config (or, where the tier has none, the replica with
    the most HBM: TP ranks x HBM per GPU): scale the table (rows per head) up or down and bisect
    on the largest scale that still fits and keeps overhead within --max-overhead-pct (latency
    SLOs are not part of this bound). Tiers search side by side: one probe per tier per round."""
    by_key = {config_key(c): c for c in grid.configs}
    searches = {}
    for choice in feasible:
        searches.setdefault(choice["tier"], TableSearch(by_key[choice["key"]]))
    for config in sorted(grid.configs, key=lambda c: -c["tp"] * build.presets(c)[0].gpu.hbm_bytes):
        searches.setdefault(config["tier"], TableSearch(config))
    bound = slos.max_overhead_pct
    while any(not s.done for s in searches.values()):
        active = [s for s in searches.values() if not s.done]
        probes = [s.probe_config() for s in active]
        rows = run_sweep(
            Grid(configs=probes, axes=[], source="plan"),
            executor=executor,
            workers=workers,
            address=address,
            max_steps=max_steps,
        ).rows
        for s, probe, row in zip(active, probes, rows):
            ok = row["fits"] and (bound is None or (row["overhead_pct"] is not None and row["overhead_pct"] <= bound))
            s.record(ok, probe, row)
    return [s.result() for s in searches.values()]


class TableSearch:
    """Bracket the largest feasible table scale by doubling (or halving), then bisect in log space."""

    def __init__(self, config: dict):
        self.config = config
        self.vocab = build.presets(config)[1].engram.engram_vocab_size
        self.lo = self.hi = None  # largest scale known feasible, smallest known infeasible
        self.scale, self.steps, self.done = 1.0, 0, False
        self.best = self.hi_fits = None

    def probe_config(self) -> dict:
        return {**self.config, TABLE_KEY: [max(2, round(v * self.scale)) for v in self.vocab]}

    def record(self, ok: bool, probe: dict, row: dict):
        if ok:
            self.lo = self.scale
            self.best = (build.presets(probe)[1].engram.table_bytes, row["overhead_pct"])
        else:
            self.hi, self.hi_fits = self.scale, row["fits"]
        self.steps += 1
        if self.lo is None or self.hi is None:
            self.scale = self.scale * 2 if ok else self.scale / 2
            self.done = self.steps > MAX_DOUBLINGS
        else:
            self.scale = math.sqrt(self.lo * self.hi)
            self.done = self.hi / self.lo < 2 ** (1 / 2**BISECT_STEPS) or self.steps > MAX_DOUBLINGS + BISECT_STEPS

    def result(self) -> dict:
        c = self.config
        out = {
            "tier": c["tier"],
            "hw": c["hw"],
            "engine": c["engine"],
            "gpus": c["gpus"],
            "tp": c["tp"],
            "ep": c["ep"],
            "cache_GiB": c["hbm_cache_gib"] if c["tier"] != "hbm" else 0.0,
        }
        if self.lo is None:
            return {
                **out,
                "table_GiB": 0.0,
                "scale": 0.0,
                "overhead_pct": None,
                "limited_by": "no size meets the bound",
            }
        limited = "search range" if self.hi is None else ("overhead" if self.hi_fits else "capacity")
        return {
            **out,
            "table_GiB": self.best[0] / GiB,
            "scale": self.lo,
            "overhead_pct": self.best[1],
            "limited_by": limited,
        }
