"""Where sweep tasks run: in this process, in local worker processes, or on a Ray cluster.

Every executor calls `on_result(task_index, rows)` as tasks finish (in any order); the sweep
puts rows back in grid order, so the executor never changes the output.
"""

from __future__ import annotations

import os
import socket
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from urllib.parse import urlparse

from engramsim.errors import UserError
from engramsim.presets import ROOT
from engramsim.sim.work import DEFAULT_MAX_STEPS
from engramsim.sweep.runner import run_task

EXECUTORS = ("local", "ray")


def preflight(executor: str, workers: int, address: str | None):
    """Reject bad executor settings before any work starts."""
    if workers < 1:
        raise UserError("--workers must be at least 1")
    if executor not in EXECUTORS:
        raise UserError(f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})")
    if executor != "ray" and address:
        raise UserError("--ray-address needs --executor ray")
    if executor == "ray":
        _import_ray()
        if address and address != "auto":
            _check_reachable(address)


def run_tasks(
    tasks: list[list[dict]],
    on_result,
    executor: str = "local",
    workers: int = 1,
    address: str | None = None,
    max_steps: float | None = DEFAULT_MAX_STEPS,
):
    """`max_steps`: each task's work limit (runner.run_task)."""
    preflight(executor, workers, address)
    if executor == "ray":
        _run_ray(tasks, on_result, workers, address, max_steps)
    elif workers == 1 or len(tasks) == 1:
        for i, task in enumerate(tasks):
            on_result(i, run_task(task, max_steps))
    else:
        _run_processes(tasks, on_result, workers, max_steps)


def _run_processes(tasks, on_result, workers: int, max_steps):
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        pending = {pool.submit(run_task, task, max_steps): i for i, task in enumerate(tasks)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                on_result(pending.pop(future), future.result())


def _run_ray(tasks, on_result, workers: int, address: str | None, max_steps):
    ray = _import_ray()
    if address:
        # A remote cluster gets this checkout (code and presets) as its working directory.
        kwargs = dict(address=address, runtime_env={"working_dir": str(ROOT), "excludes": [".git"]})
    else:
        # A local cluster's workers import this checkout, not whatever engramsim is installed.
        kwargs = dict(num_cpus=workers, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        ray.init(log_to_driver=False, configure_logging=False, **kwargs)
    except Exception as e:  # Ray raises many kinds; the user needs one line
        raise UserError(f"cannot start Ray{' at ' + address if address else ''}: {_first_line(e)}") from None
    try:
        remote = ray.remote(num_cpus=1)(run_task)
        refs = {remote.remote(task, max_steps): i for i, task in enumerate(tasks)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                on_result(refs[ref], ray.get(ref))
    finally:
        ray.shutdown()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'engramsim[cluster]' (or pip install ray)") from None
    return ray


def _check_reachable(address: str, timeout_s: float = 3.0):
    """Fail in seconds, with one line, instead of letting Ray retry an address that is down."""
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise UserError(f"--ray-address {address!r}: give host:port or ray://host:port (or auto)")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        raise UserError(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
