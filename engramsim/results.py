"""Simulation results: dataclasses that feed every writer (rich console, JSON)."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field

import numpy as np

from engramsim.units import GiB

# Version of `simulate --json`'s shape; bump it when a key changes meaning or disappears.
# 2: adds `schema_version` and, per run and for the baseline, `vllm bench serve`'s names.
SCHEMA_VERSION = 2
BENCH_KEYS = (
    "duration",
    "completed",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
) + tuple(f"{stat}_{name}_ms" for name in ("ttft", "tpot", "itl", "e2el") for stat in ("mean", "median", "p99"))
RESOURCE_UNITS = {"B": "GB", "op": "Mops", "thread-s": "thread-s"}
UNIT_SCALE = {"B": 1e-9, "op": 1e-6, "thread-s": 1.0}


@dataclass(frozen=True)
class RunResult:
    tier: str
    fits: bool
    problems: list[str]
    throughput_tok_s: float | None = None
    baseline_tok_s: float | None = None
    overhead_pct: float | None = None
    ttft_p50_s: float | None = None
    ttft_p99_s: float | None = None
    tpot_p50_s: float | None = None
    tpot_p99_s: float | None = None
    stall_s: float | None = None
    prefill_stall_s: float | None = None
    makespan_s: float | None = None
    output_tokens: int | None = None
    steps: int | None = None
    preemptions: int | None = None
    kv_tokens_per_rank: int = 0
    hbm_GiB_per_gpu: dict = field(default_factory=dict)
    hbm_cache_GiB: float = 0.0
    dram_cache_GiB: float = 0.0
    hbm_hit_rate: float | None = None
    fetched_rows: float | None = None
    resources: dict = field(default_factory=dict)
    bound: str = ""
    bench: dict = field(default_factory=lambda: dict.fromkeys(BENCH_KEYS))  # vllm_bench_names(), flattened by to_dict()
    # Seconds each Engram mechanism added to the replicas' timelines, summed over replicas.
    engram_time_s: dict = field(default_factory=dict)
    # Seconds the GPUs waited for rows at each Engram layer, and per fetch transfer what held it
    # back most (a resource kind, a rate cap, or "latency").
    stall_by_layer_s: dict = field(default_factory=dict)
    fetch_bounds: dict = field(default_factory=dict)

    @classmethod
    def from_raw(cls, placement, plan, raw, baseline_tok_s: float, scenario, itl: bool = True) -> RunResult:
        common = dict(
            tier=placement.tier,
            fits=plan.fits,
            problems=list(plan.problems),
            kv_tokens_per_rank=plan.kv_tokens_per_rank,
            hbm_GiB_per_gpu=plan.per_rank_GiB,
            hbm_cache_GiB=placement.hbm_cache_bytes / GiB,
            dram_cache_GiB=placement.dram_cache_bytes / GiB,
            baseline_tok_s=baseline_tok_s,
        )
        if raw is None:
            return cls(**common, bound="does not fit: " + "; ".join(plan.problems))
        s = summarize_run(raw, itl)
        st = raw.stats
        looked_up = st.fetched_rows + st.hit_rows
        replicas = scenario.gpus // scenario.tp
        return cls(
            **common,
            **s,
            overhead_pct=100.0 * (baseline_tok_s - s["throughput_tok_s"]) / baseline_tok_s,
            stall_s=st.stall_s,
            prefill_stall_s=st.prefill_stall_s,
            steps=st.steps,
            preemptions=raw.preemptions,
            hbm_hit_rate=st.hit_rows / looked_up if looked_up and placement.memory != "hbm" else None,
            fetched_rows=st.fetched_rows,
            resources=resource_usage(raw),
            engram_time_s=engram_times(st),
            stall_by_layer_s={str(k): v for k, v in sorted(st.stall_by_layer_s.items())},
            fetch_bounds=dict(sorted(raw.bounds.get("fetch", {}).items())),
            bound=describe_bound(
                placement.tier, st.stall_s, raw.makespan_s * replicas, raw.limited_s, scenario.prefetch
            ),
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**d, **d.pop("bench")}


def engram_times(st) -> dict:
    return {
        "hashing": st.hash_s,
        "index copy": st.index_s,
        "launches": st.launch_s,
        "fusion compute": st.fusion_s,
        "kernel fixed time": st.kernel_fixed_s,
        "stall": st.stall_s,
        "SM contention": st.sm_s,
        "DP exchange": st.exchange_s,
    }


def summarize_run(raw, itl: bool = True) -> dict:
    """Throughput (output tokens / makespan, as nano-vLLM's bench.py) and TTFT/TPOT percentiles
    of a raw run (engramsim.measure.timing.summarize is another thing: timing statistics).
    `itl`: also the inter-token latencies (see vllm_bench_names)."""
    first = np.array([q.first_token_s - q.arrival_s for q in raw.seqs])
    tpot = np.array([(q.finish_s - q.first_token_s) / (q.out - 1) for q in raw.seqs if q.out > 1])
    out = sum(q.out for q in raw.seqs)
    pct = lambda a, p: float(np.percentile(a, p)) if len(a) else None
    return dict(
        throughput_tok_s=out / raw.makespan_s,
        makespan_s=raw.makespan_s,
        output_tokens=out,
        ttft_p50_s=pct(first, 50),
        ttft_p99_s=pct(first, 99),
        tpot_p50_s=pct(tpot, 50),
        tpot_p99_s=pct(tpot, 99),
        bench=vllm_bench_names(raw, first, tpot, out, itl),
    )


def vllm_bench_names(raw, ttft_s, tpot_s, output_tokens: int, itl: bool = True) -> dict:
    """The figures `vllm bench serve` reports, under its names and units (vllm/benchmarks/
    serve.py): throughputs per second of `duration`, latencies in ms as mean, median and p99
    (np.percentile, as vLLM). TPOT counts requests with more than one output token; ITL is
    every gap between consecutive tokens of a request; E2EL is arrival to last token. With
    `itl` False, the ITL figures are None: a sweep, whose rows have none, skips every gap
    between tokens (their array and its percentiles were ~8% of a paper-table4 sweep config)."""
    gaps = _inter_token_s(raw.seqs) if itl else None
    e2el = np.array([q.finish_s - q.arrival_s for q in raw.seqs])
    out = {
        "duration": raw.makespan_s,
        "completed": len(raw.seqs),
        "total_input_tokens": int(sum(q.prompt_len for q in raw.seqs)),
        "total_output_tokens": output_tokens,
        "request_throughput": len(raw.seqs) / raw.makespan_s,
        "output_throughput": output_tokens / raw.makespan_s,
        "total_token_throughput": (output_tokens + sum(q.prompt_len for q in raw.seqs)) / raw.makespan_s,
    }
    for name, values in (("ttft", ttft_s), ("tpot", tpot_s), ("itl", gaps), ("e2el", e2el)):
        if values is None:
            out[f"mean_{name}_ms"] = out[f"median_{name}_ms"] = out[f"p99_{name}_ms"] = None
            continue
        ms = 1e3 * np.asarray(values, dtype=float)
        has = ms.size > 0
        out[f"mean_{name}_ms"] = float(ms.mean()) if has else None
        out[f"median_{name}_ms"] = float(np.median(ms)) if has else None
        out[f"p99_{name}_ms"] = float(np.percentile(ms, 99)) if has else None
    return out


def _inter_token_s(seqs) -> np.ndarray:
    """Every request's q.itl_s, concatenated in order: one np.diff over all token times, less
    the gaps that would join one request to the next (the same floats, in the same order, as a
    diff per request, without a small array per request)."""
    lens = [len(q.token_s) for q in seqs]
    times = np.fromiter(itertools.chain.from_iterable(q.token_s for q in seqs), float, sum(lens))
    # The join after request j is gap ends[j] - 1 (ends: where each request's times stop);
    # an empty request adds no join of its own, nor does the first or last position.
    ends = np.cumsum(lens, dtype=np.intp)[:-1]
    joins = np.unique(ends[(ends > 0) & (ends < len(times))]) - 1
    return np.delete(np.diff(times), joins)


def resource_usage(raw) -> dict:
    """Per resource kind: what it carried and its mean utilisation over the run."""
    table: dict[str, dict] = {}
    for r in raw.resources:
        row = table.setdefault(r.kind, {"unit": r.unit, "moved": 0.0, "capacity": 0.0})
        row["moved"] += r.units
        row["capacity"] += r.capacity
    return {
        kind: {
            "moved": row["moved"] * UNIT_SCALE[row["unit"]],
            "unit": RESOURCE_UNITS[row["unit"]],
            "utilization": row["moved"] / (row["capacity"] * raw.makespan_s),
        }
        for kind, row in table.items()
        if row["moved"] > 0
    }


def describe_bound(tier: str, stall_s: float, gpu_time_s: float, limited_s: dict, prefetch: bool) -> str:
    share = stall_s / gpu_time_s if gpu_time_s else 0.0
    if tier in ("hbm", "unified"):
        return f"in-{'memory' if tier == 'unified' else 'HBM'} gather at the Engram layer; no host traffic"
    limiter = max(limited_s, key=limited_s.get) if limited_s else "latency"
    mode = "fetch hidden by prefetch" if prefetch else "synchronous fetch"
    if share < 0.005:
        return f"compute-bound; {mode} (fetches limited by {limiter})"
    return f"stalled {100 * share:.1f}% of GPU time; fetches limited by {limiter}" + (
        "" if prefetch else " (synchronous)"
    )


@dataclass(frozen=True)
class SimReport:
    model: str
    hardware: str
    workload: str
    gpus: int
    tp: int
    seed: int
    prefetch: bool
    rows_source: str
    baseline_tok_s: float
    baseline: dict
    runs: list[RunResult]

    @classmethod
    def build(cls, scenario, baseline_summary: dict, baseline_raw, runs: list[RunResult]) -> SimReport:
        base = dict(baseline_summary)
        base.update(base.pop("bench", {}))
        base["steps"] = baseline_raw.stats.steps
        base["preemptions"] = baseline_raw.preemptions
        return cls(
            model=scenario.model.name,
            hardware=scenario.hw.name,
            workload=scenario.workload.name,
            gpus=scenario.gpus,
            tp=scenario.tp,
            seed=scenario.seed,
            prefetch=scenario.prefetch,
            rows_source=scenario.rows.source,
            baseline_tok_s=base["throughput_tok_s"],
            baseline=base,
            runs=runs,
        )

    def to_dict(self) -> dict:
        d = {"schema_version": SCHEMA_VERSION, **asdict(self)}
        d["runs"] = [r.to_dict() for r in self.runs]
        return d

    def __rich_console__(self, console, options):
        from engramsim.report.console import render_sim_report

        yield from render_sim_report(self, options)
