"""`run_sweep`: every config of a grid, each once (or skipped when `--resume` finds its key in
the results file), rows in grid order whatever ran them."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from engramsim.errors import UserError
from engramsim.sim.work import DEFAULT_MAX_STEPS
from engramsim.sweep import build
from engramsim.sweep.executors import preflight, run_tasks
from engramsim.sweep.grid import Grid, config_key
from engramsim.sweep.output import read_rows, write_rows
from engramsim.sweep.runner import make_tasks

FLUSH_EVERY_S = 5.0  # rewrite the results file this often, so an interrupted sweep can resume


@dataclass(frozen=True)
class SweepResult:
    source: str
    axes: list[str]
    rows: list[dict]  # one per config, grid order: key, axes, then the metrics
    ran: int  # configs simulated now
    resumed: int  # configs whose rows came from the results file

    def to_dict(self) -> dict:
        return asdict(self)

    def __rich_console__(self, console, options):
        from engramsim.report.sweep import render_sweep

        yield from render_sweep(self, options.max_width)


def run_sweep(
    grid: Grid,
    out: Path | None = None,
    resume: bool = False,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    progress=None,
    max_steps: float | None = DEFAULT_MAX_STEPS,
) -> SweepResult:
    """Run the grid's configs; `progress(done, total)` is called as configs finish. A config
    whose run is estimated above `max_steps` engine steps gets a row saying so (not simulated)."""
    preflight(executor, workers, address)
    keys = [config_key(c) for c in grid.configs]
    old = {r.get("key"): r for r in read_rows(out)} if resume and out else {}
    todo = [i for i, k in enumerate(keys) if k not in old]
    _check_presets([grid.configs[i] for i in todo], grid.source)
    tasks = make_tasks([grid.configs[i] for i in todo], min_tasks=2 * workers if workers > 1 else 1)
    new: dict[int, dict] = {}
    if progress:
        progress(0, len(todo))
    last_flush = time.monotonic()

    def on_result(task_index: int, task_rows: list[dict]):
        nonlocal last_flush
        for j, metrics in zip(tasks[task_index], task_rows):
            i = todo[j]
            new[i] = {"key": keys[i], **{a: grid.configs[i][a] for a in grid.axes}, **metrics}
        if progress:
            progress(len(new), len(todo))
        if out and time.monotonic() - last_flush > FLUSH_EVERY_S:
            write_rows(out, _merged(keys, new, old))
            last_flush = time.monotonic()

    try:
        if tasks:
            run_tasks(
                [[grid.configs[todo[j]] for j in task] for task in tasks],
                on_result,
                executor,
                workers,
                address,
                max_steps,
            )
    finally:
        # Interrupted or not, the rows done so far reach the file, so --resume can carry on.
        if out and (new or not resume):
            write_rows(out, _merged(keys, new, old))
    rows = [new[i] if i in new else old[k] for i, k in enumerate(keys)]
    return SweepResult(source=grid.source, axes=grid.axes, rows=rows, ran=len(new), resumed=len(keys) - len(new))


def _merged(keys: list[str], new: dict[int, dict], old: dict[str, dict]) -> list[dict]:
    """Rows of the grid done so far, in grid order, then rows of other configs the file held."""
    rows = [new[i] if i in new else old[k] for i, k in enumerate(keys) if i in new or k in old]
    grid_keys = set(keys)
    return rows + [r for k, r in old.items() if k not in grid_keys]


def _check_presets(configs: list[dict], where: str):
    """Load every preset a config names before anything runs: a typo fails in one line now,
    not as a row of problems later."""
    seen = set()
    for config in configs:
        fingerprint = build.baseline_key(config) + str({k: v for k, v in config.items() if k.startswith("model.")})
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        if config["trace"] not in ("", "default", "zipf") and not Path(config["trace"]).is_file():
            raise UserError(f"{where}: trace file not found: {config['trace']}")
        try:
            build.presets(config)
        except UserError as e:
            raise UserError(f"{where}: {e}") from None
