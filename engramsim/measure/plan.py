"""Pure planning logic shared by every benchmark: which points to measure in each mode, which
sizes fit the memory budget, index streams, and the long-format records a profile stores.

Nothing here imports torch, so all of it runs (and is tested) anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engramsim.measure.timing import Stats
from engramsim.units import GiB, KiB, MiB


@dataclass(frozen=True)
class Config:
    """The sweep of every benchmark. `quick` keeps a 2-core CPU machine under a minute."""

    quick: bool
    point_budget_s: float  # wall-time bound of one measured point (warm-up + repeats)
    repeats: int
    memory_fraction: float  # share of (free memory - margin) one table may take
    memory_margin_bytes: int
    threads: tuple[int, ...]
    # dram_gather / cxl / hbm_gather
    table_bytes: tuple[int, ...]
    row_bytes: tuple[int, ...]
    rows_per_call: tuple[int, ...]
    zipf_s: float
    # memcpy
    memcpy_bytes: int
    # ssd_read
    ssd_file_bytes: int
    ssd_row_bytes: tuple[int, ...]
    ssd_queue_depths: tuple[int, ...]
    ssd_reads_per_call: int
    # hash
    hash_tokens: tuple[int, ...]
    # cpu_matmul and overlap: (dtype, M, K, N); a decoder layer's MLP up-projection shape
    matmul_shapes: tuple[tuple[str, int, int, int], ...]
    # h2d / d2h
    link_bytes: tuple[int, ...]


def make_config(quick: bool, cores: int) -> Config:
    all_threads = tuple(sorted({1, 2, 4, 8, cores} & set(range(1, cores + 1)) | {cores}))
    if quick:
        return Config(
            quick=True,
            point_budget_s=0.25,
            repeats=5,
            memory_fraction=0.25,
            memory_margin_bytes=2 * GiB,
            threads=tuple(sorted({1, cores})),
            table_bytes=(4 * MiB, 64 * MiB, 256 * MiB, 1 * GiB),
            row_bytes=(160, 256),
            rows_per_call=(1, 1024, 65536),
            zipf_s=1.0,
            memcpy_bytes=128 * MiB,
            ssd_file_bytes=256 * MiB,
            ssd_row_bytes=(256, 4096),
            ssd_queue_depths=tuple(sorted({1, cores})),
            ssd_reads_per_call=256,
            hash_tokens=(128, 4096),
            matmul_shapes=(("fp32", 16, 2048, 8192), ("fp32", 256, 2048, 8192), ("bf16", 16, 2048, 2048)),
            link_bytes=tuple(4 * KiB * 16**i for i in range(5)) + (64 * MiB,),
        )
    return Config(
        quick=False,
        point_budget_s=1.0,
        repeats=11,
        memory_fraction=0.5,
        memory_margin_bytes=4 * GiB,
        threads=all_threads,
        table_bytes=tuple(MiB * 4**i for i in range(9)),  # 1 MiB .. 64 GiB, as far as memory allows
        row_bytes=(128, 160, 256, 320, 512),
        rows_per_call=(1, 16, 256, 4096, 65536, 1 << 20),
        zipf_s=1.0,
        memcpy_bytes=1 * GiB,
        ssd_file_bytes=4 * GiB,
        ssd_row_bytes=(256, 4096, 16384),
        ssd_queue_depths=(1, 4, 16, 64),
        ssd_reads_per_call=2048,
        hash_tokens=(16, 256, 4096, 65536),
        matmul_shapes=(
            ("fp32", 16, 4096, 14336),
            ("fp32", 512, 4096, 14336),
            ("bf16", 16, 4096, 14336),
            ("bf16", 512, 4096, 14336),
        ),
        link_bytes=tuple(4 * KiB * 4**i for i in range(10)) + (1 * GiB,),  # 4 KiB .. 1 GiB
    )


def memory_budget(free_bytes: int, margin_bytes: int, fraction: float) -> int:
    """Bytes one benchmark may allocate: a fraction of what is free beyond a safety margin."""
    return max(0, int((free_bytes - margin_bytes) * fraction))


def fit_sizes(sizes, budget_bytes: int, what: str = "memory") -> tuple[list[int], list[tuple[int, str]]]:
    """Split `sizes` into those within `budget_bytes` and (size, reason) for those beyond it."""
    kept, skipped = [], []
    for size in sizes:
        if size <= budget_bytes:
            kept.append(size)
        else:
            skipped.append((size, f"needs {size / GiB:.2f} GiB, {what} budget is {budget_bytes / GiB:.2f} GiB"))
    return kept, skipped


def sizes_within(name: str, sizes, budget_bytes: int, what: str = "memory", key: str = "table_bytes"):
    """Yield a skip record for each size beyond the budget; return the sizes within it.
    Use as `kept = yield from sizes_within(...)` inside a benchmark generator."""
    kept, too_big = fit_sizes(sizes, budget_bytes, what)
    for size, reason in too_big:
        yield skipped(name, {key: size}, reason)
    return kept


def uniform_indices(n_rows: int, count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n_rows, size=count, dtype=np.int64)


def zipf_indices(n_rows: int, count: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """Row ids whose popularity follows a Zipf law of exponent `s` over `n_rows` rows.

    Ranks come from the inverse CDF of the continuous power law on [1, n_rows + 1); a fixed
    bijection (multiplication by a large prime mod n_rows) then scatters hot ranks across the
    table, as hashing does, so the hottest rows are not neighbours.
    """
    u = rng.random(count)
    n = float(n_rows)
    if abs(s - 1.0) < 1e-9:
        x = (n + 1.0) ** u
    else:
        x = ((n + 1.0) ** (1.0 - s) * u + (1.0 - u)) ** (1.0 / (1.0 - s))
    ranks = np.minimum(np.floor(x).astype(np.int64) - 1, n_rows - 1)
    return scatter(ranks, n_rows)


SCATTER_PRIME = 2_147_483_647  # 2^31 - 1


def scatter(ranks: np.ndarray, n_rows: int) -> np.ndarray:
    """A bijection of [0, n_rows): rank * p mod n_rows with p prime and not dividing n_rows."""
    p = SCATTER_PRIME if n_rows % SCATTER_PRIME else 1_000_000_007
    return (ranks.astype(object) * p % n_rows).astype(np.int64) if n_rows > 2**32 else (ranks * p) % n_rows


DERIVED = {  # work key -> (derived key, function of (work, median_s))
    "bytes": ("GBps", lambda w, t: w / t / 1e9),
    "rows": ("rows_per_s", lambda w, t: w / t),
    "ops": ("iops", lambda w, t: w / t),
    "flops": ("GFLOPs", lambda w, t: w / t / 1e9),
    "tokens": ("ns_per_token", lambda w, t: t / w * 1e9),
}


def record(name: str, params: dict, stats: Stats, **work) -> dict:
    """One measured point, long format: raw times, the work done per call, derived rates.

    `work` takes `bytes`, `rows`, `ops`, `flops`, `tokens` (per timed call) and any extra
    figures (e.g. `slowdown`); rates are derived from the median, never replacing it.
    """
    row = {
        "name": name,
        "params": dict(params),
        "median_s": stats.median_s,
        "p10_s": stats.p10_s,
        "p90_s": stats.p90_s,
        "n": stats.n,
    }
    for key, value in work.items():
        row[key] = value
        if key in DERIVED and stats.median_s > 0 and value:
            derived, fn = DERIVED[key]
            row[derived] = fn(value, stats.median_s)
    if work.get("rows") and stats.median_s > 0:
        row["us_per_row"] = stats.median_s / work["rows"] * 1e6
    return row


def skipped(name: str, params: dict, reason: str) -> dict:
    return {"name": name, "params": dict(params), "reason": reason}


def gather_points(
    config: Config, sizes: list[int], threads: tuple[int, ...] | None = None, max_out_bytes: int = 256 * MiB
):
    """The points of a row-gather sweep (DRAM, CXL, HBM, UVA): parameter dicts.

    Main grid: table size x row bytes x threads, uniform indices, `main_rows` per call.
    Zipf: each table size, first row size, one thread. Rows per call: largest table only.
    """
    threads = threads or config.threads
    main_rows = 65536
    rb0 = config.row_bytes[0]
    for size in sizes:
        for rb in config.row_bytes:
            for t in threads:
                yield {"table_bytes": size, "row_bytes": rb, "rows": main_rows, "threads": t, "dist": "uniform"}
        yield {"table_bytes": size, "row_bytes": rb0, "rows": main_rows, "threads": 1, "dist": "zipf"}
    for rows in config.rows_per_call:
        if rows != main_rows and rows * rb0 <= max_out_bytes and sizes:
            yield {"table_bytes": max(sizes), "row_bytes": rb0, "rows": rows, "threads": 1, "dist": "uniform"}


def indices(point: dict, zipf_s: float, rng: np.random.Generator) -> np.ndarray:
    n_rows = point["table_bytes"] // point["row_bytes"]
    if point["dist"] == "zipf":
        return zipf_indices(n_rows, point["rows"], zipf_s, rng)
    return uniform_indices(n_rows, point["rows"], rng)


@dataclass
class Context:
    """What every benchmark receives: the sweep, torch (imported lazily by the runner), the
    scratch directory for files, and the seed of its index streams."""

    config: Config
    torch: object
    scratch: object
    seed: int = 0

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)
