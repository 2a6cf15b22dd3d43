"""Run sweep configs: group those that share a no-Engram baseline into one task, run the
baseline once per task, and turn every placement's result into one flat row.

A task is a plain list of configs, so it can run in this process, a worker process or a Ray
task alike; its rows depend only on its configs (each simulation is deterministic), which is
why every executor gives identical rows.
"""

from __future__ import annotations

from engramsim.errors import UserError
from engramsim.sim.run import check_placement, check_work, run_baseline, simulate
from engramsim.sim.work import DEFAULT_MAX_STEPS
from engramsim.sweep import build

# Row fields after the axes, named as `vllm bench serve` names them where they overlap.
METRICS = (
    "fits",
    "output_throughput",
    "baseline_output_throughput",
    "overhead_pct",
    "tok_s_per_gpu",
    "tok_s_per_user",
    "kv_tokens_per_rank",
    "mean_ttft_ms",
    "p99_ttft_ms",
    "mean_tpot_ms",
    "p99_tpot_ms",
    "duration_s",
    "stall_s",
    "bound_by",
    "problems",
)
# The per-rank HBM plan of each row (GiB; engramsim.capacity.plan_memory's parts), for the memory plot.
MEMORY = (
    "weights",
    "engram_table",
    "hot_cache",
    "activations",
    "cuda_graphs",
    "non_torch",
    "indexer",
    "engram_staging",
    "kv",
)


def make_tasks(configs: list[dict], min_tasks: int = 1) -> list[list[int]]:
    """Indices of configs grouped by shared baseline, in first-seen order. When there are fewer
    groups than `min_tasks`, the largest are split (each part reruns its baseline) so that
    every worker has work."""
    groups: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(build.baseline_key(config), []).append(i)
    tasks = list(groups.values())
    while tasks and len(tasks) < min_tasks:
        largest = max(tasks, key=len)
        if len(largest) < 2:
            break
        tasks.remove(largest)
        half = len(largest) // 2
        tasks += [largest[:half], largest[half:]]
    return sorted(tasks)


def run_task(configs: list[dict], max_steps: float | None = DEFAULT_MAX_STEPS) -> list[dict]:
    """One row per config, in order. A config the simulator rejects (a layout that does not
    divide, a backbone that does not fit) gets a row that says why, as does each config of a
    task whose one run is estimated above `max_steps` (configs sharing a baseline share the
    estimate: it depends on the backbone, workload and layout only)."""
    try:
        scenario = build.scenario(configs[0])
        check_work(scenario, 1, max_steps)
        requests = scenario.workload.requests(scenario.seed)
        baseline = run_baseline(scenario, requests, itl=False)  # rows report no inter-token latency
        drawn = (scenario.workload, scenario.seed)  # the requests' source: reused while it stays
    except UserError as e:
        return [problem_row(c, str(e)) for c in configs]
    rows = {}
    by_scenario: dict[str, list[int]] = {}
    for i, config in enumerate(configs):
        by_scenario.setdefault(build.scenario_key(config), []).append(i)
    for members in by_scenario.values():
        placements = {}
        try:
            scenario = build.scenario(configs[members[0]])
        except UserError as e:
            rows.update({i: problem_row(configs[i], str(e)) for i in members})
            continue
        for i in members:
            try:  # e.g. a DRAM cache given both as a size and as a hit rate, a path the server lacks
                placements[i] = build.placement(configs[i], scenario.hw)
                check_placement(scenario, placements[i])
            except UserError as e:
                placements.pop(i, None)
                rows[i] = problem_row(configs[i], str(e))
        try:
            same = (scenario.workload, scenario.seed) == drawn
            report = simulate(
                scenario,
                list(placements.values()),
                baseline=baseline,
                max_steps=None,
                requests=requests if same else None,
                itl=False,
            )
        except UserError as e:
            rows.update({i: problem_row(configs[i], str(e)) for i in placements})
            continue
        rows.update({i: result_row(configs[i], run) for i, run in zip(placements, report.runs)})
    return [rows[i] for i in range(len(configs))]


def result_row(config: dict, run) -> dict:
    """One config's figures; latency and throughput come from the run's `vllm bench serve`
    figures (RunResult.bench), under the same names."""
    bench = run.bench
    tok_s, mean_tpot_ms = bench["output_throughput"], bench["mean_tpot_ms"]
    row = dict(
        fits=run.fits,
        output_throughput=tok_s,
        baseline_output_throughput=run.baseline_tok_s,
        overhead_pct=run.overhead_pct,
        tok_s_per_gpu=None if tok_s is None else tok_s / config["gpus"],
        # What one user sees while decoding: 1 / mean TPOT.
        tok_s_per_user=1e3 / mean_tpot_ms if mean_tpot_ms else None,
        kv_tokens_per_rank=run.kv_tokens_per_rank,
        **{k: bench[k] for k in ("mean_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "p99_tpot_ms")},
        duration_s=bench["duration"],
        stall_s=run.stall_s,
        bound_by=run.bound,
        problems="; ".join(run.problems),
    )
    row.update({f"mem_{part}_GiB": run.hbm_GiB_per_gpu.get(part) for part in MEMORY})
    return row


def problem_row(config: dict, problem: str) -> dict:
    row = {name: None for name in METRICS}
    row.update(fits=False, bound_by="not simulated", problems=problem)
    row.update({f"mem_{part}_GiB": None for part in MEMORY})
    return row
