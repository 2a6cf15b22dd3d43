"""PNG figures of sweep and plan results (matplotlib, the `plot` extra), three panels each:

Pareto front    tokens/s per GPU (what the owner pays for) against tokens/s per user (what a
                user feels): the front is where one can only be bought with the other;
overhead        Engram overhead against HBM hot-row cache size, a line per tier;
HBM plan        per placement, what each GPU's usable HBM holds, as stacked bars.
"""

from __future__ import annotations

import io

from engramsim.errors import UserError
from engramsim.fileio import check_output
from engramsim.plan import pareto_front

MEMORY_PARTS = (
    ("weights", "#4c72b0"),
    ("engram_table", "#c44e52"),
    ("hot_cache", "#dd8452"),
    ("activations", "#8172b3"),
    ("cuda_graphs", "#937860"),
    ("non_torch", "#8c8c8c"),
    ("indexer", "#da8bc3"),
    ("engram_staging", "#ccb974"),
    ("kv", "#55a868"),
)
MAX_LINES = 8
MAX_BARS = 12


def plot_rows(rows: list[dict], configs: list[dict], axes: list[str], path: str, title: str):
    """A sweep's rows (aligned with its configs)."""
    points = [dict(r, label=_label(c, axes), tier=c["tier"], cache=_cache(c)) for r, c in zip(rows, configs)]
    fitting = [p for p in points if p["fits"] and p["tok_s_per_gpu"] and p["tok_s_per_user"]]
    group_keys = [a for a in axes if a not in ("tier", "hbm_cache_gib")]
    _draw(
        fitting,
        pareto_front(fitting),
        group_keys,
        configs_by_key={r["key"]: c for r, c in zip(rows, configs)},
        path=path,
        title=title,
    )


def plot_plan(result, path: str):
    # Off-GPU tiers share one HBM plan per cache size, so the bars name the placement that way.
    placement = lambda c: "table in HBM" if c["tier"] == "hbm" else f"table off GPU, {c['cache_GiB']:g} GiB cache"
    points = [
        dict(c, label=f"{c['hw']} x{c['gpus']} TP{c['tp']}, {placement(c)}", cache=c["cache_GiB"])
        for c in result.choices
    ]
    front = [dict(c, label=f"{c['hw']} x{c['gpus']} TP{c['tp']} {c['tier']}") for c in result.pareto]
    title = f"engramsim plan: {result.model}, {result.workload}, {len(result.choices)} feasible of {result.candidates}"
    _draw(
        points,
        front,
        ["hw", "engine", "gpus", "tp", "ep"],
        configs_by_key={c["key"]: c for c in result.choices},
        path=path,
        title=title,
    )


def _draw(points, front, group_keys, configs_by_key, path: str, title: str):
    plt = _pyplot()
    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(19, 6.2), gridspec_kw={"width_ratios": [1, 1, 1.15]})
    _pareto_panel(a1, points, front)
    _overhead_panel(a2, points, group_keys, configs_by_key)
    _memory_panel(a3, points)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _pareto_panel(ax, points, front):
    ax.set_title("Pareto front")
    if not points:
        ax.text(0.5, 0.5, "no config fits", ha="center", transform=ax.transAxes)
        return
    ax.scatter(
        [p["tok_s_per_user"] for p in points],
        [p["tok_s_per_gpu"] for p in points],
        s=18,
        color="0.65",
        label=f"configs that fit ({len(points)})",
    )
    ax.plot(
        [p["tok_s_per_user"] for p in front],
        [p["tok_s_per_gpu"] for p in front],
        "o-",
        color="#c44e52",
        label="Pareto front",
    )
    for p in front[:8]:
        ax.annotate(
            p["label"], (p["tok_s_per_user"], p["tok_s_per_gpu"]), fontsize=7, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel("output tokens/s per user (1 / mean TPOT)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")


def _overhead_panel(ax, points, group_keys, configs_by_key):
    """A line per tier (and per value of the other axes while that stays legible; beyond it,
    only the group of the first point, named in the title: a median over a population that
    changes with cache size would draw steps that are not there)."""
    ax.set_title("Engram overhead vs HBM hot-row cache")
    off_gpu = [p for p in points if p["tier"] != "hbm" and p["overhead_pct"] is not None]
    group = lambda p: _group(p, group_keys, configs_by_key)
    restricted = len({group(p) for p in off_gpu}) * len({p["tier"] for p in off_gpu}) > MAX_LINES
    if restricted:
        shown = group(off_gpu[0])
        off_gpu = [p for p in off_gpu if group(p) == shown]
        ax.set_title(f"Engram overhead vs HBM hot-row cache\nat {shown}")
    lines: dict[str, dict[float, float]] = {}
    for p in off_gpu:
        name = p["tier"] if restricted else " ".join(filter(None, [p["tier"], group(p)]))
        lines.setdefault(name, {}).setdefault(p["cache"], p["overhead_pct"])
    for i, (name, by_cache) in enumerate(sorted(lines.items())):
        xs = sorted(by_cache)
        # Distinct markers and dashes, so tiers with equal overheads stay visible on top of each other.
        ax.plot(
            xs,
            [by_cache[x] for x in xs],
            marker="os^vD<>p"[i % 8],
            linestyle=("-", "--", ":", "-.")[i % 4],
            markersize=7 - (i % 4),
            label=name,
        )
    if not lines:
        ax.text(0.5, 0.5, "no off-GPU tier fits", ha="center", transform=ax.transAxes)
    elif all(len(by_cache) == 1 for by_cache in lines.values()):
        ax.text(
            0.5,
            0.5,
            "one cache size only:\nsweep hbm_cache_gib to draw this curve",
            ha="center",
            transform=ax.transAxes,
            color="0.4",
        )
    ax.set_xlabel("HBM hot-row cache per GPU (GiB)")
    ax.set_ylabel("throughput overhead vs no-Engram baseline (%)")
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=8)


def _memory_panel(ax, points):
    ax.set_title("HBM plan per rank")
    shown, seen = [], set()
    for p in points:
        plan = tuple(p.get(f"mem_{part}_GiB") or 0.0 for part, _ in MEMORY_PARTS)
        # One bar per distinct plan: configs that differ only in tier share a plan.
        if not p.get("mem_kv_GiB") and not p.get("mem_weights_GiB") or tuple(round(x, 1) for x in plan) in seen:
            continue
        seen.add(tuple(round(x, 1) for x in plan))
        shown.append((p["label"], plan))
        if len(shown) == MAX_BARS:
            break
    labels = [s[0] for s in shown]
    left = [0.0] * len(shown)
    for j, (part, color) in enumerate(MEMORY_PARTS):
        widths = [s[1][j] for s in shown]
        ax.barh(range(len(shown)), widths, left=left, color=color, label=part)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("GiB per rank (of the usable HBM)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=5)
    ax.grid(axis="x", alpha=0.3)


def _group(p, keys, configs_by_key) -> str:
    config = configs_by_key.get(p.get("key"), {})
    return " ".join(f"{k}={config.get(k, p.get(k))}" for k in keys if k in config or k in p)


def _label(config: dict, axes: list[str]) -> str:
    return (
        " ".join(f"{config[a]:g}" if isinstance(config[a], float) else str(config[a]) for a in axes) or config["tier"]
    )


def _cache(config: dict) -> float:
    return 0.0 if config["tier"] == "hbm" else config["hbm_cache_gib"]


def check_plot_path(path: str):
    """Fail before a long run, not after it: matplotlib is there and the folder exists."""
    _pyplot()
    check_output(path, "--plot")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("--plot needs matplotlib: pip install 'engramsim[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str):
    from engramsim.fileio import write_atomic

    check_plot_path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_atomic(path, buf.getvalue())
