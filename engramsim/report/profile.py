"""Rich rendering of profiles: results grouped by memory path, and two profiles compared."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rich import box
from rich.table import Table
from rich.text import Text

from engramsim.profile_io import Profile
from engramsim.report.width import compact, key_values

PATHS = [  # (path title, benchmark names) in the order a reader follows a lookup
    ("HBM", ("hbm_gather",)),
    ("host DRAM", ("dram_gather", "memcpy")),
    ("CXL memory", ("cxl",)),
    ("host link (copy engine)", ("h2d", "d2h", "h2d_d2h")),
    ("zero-copy reads (UVA)", ("uva_gather",)),
    ("dram-copy pipeline", ("copy_pipeline",)),
    ("SSD", ("ssd_read",)),
    ("compute and hashing", ("cpu_matmul", "hash")),
    ("interference", ("overlap",)),
]
RATES = [  # (record key, column title, format)
    ("GBps", "GB/s", "{:,.2f}"),
    ("us_per_row", "µs/row", "{:,.4f}"),
    ("rows_per_s", "rows/s", "{:,.3g}"),
    ("iops", "IOPS", "{:,.0f}"),
    ("latency_us", "lat µs", "{:,.1f}"),
    ("GFLOPs", "GFLOP/s", "{:,.1f}"),
    ("ns_per_token", "ns/token", "{:,.1f}"),
    ("slowdown", "slowdown", "{:.2f}x"),
]
BYTE_KEYS = ("bytes", "table_bytes", "file_bytes", "copy_bytes")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if float(n).is_integer() else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n}"


def format_params(params: dict) -> str:
    return " ".join(
        f"{k}={human_bytes(v) if k in BYTE_KEYS and isinstance(v, (int, float)) else v}" for k, v in params.items()
    )


def time_text(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def group_of(name: str) -> str:
    return next((title for title, names in PATHS if name in names), "other")


def _group(rows: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {title: [] for title, _ in PATHS}
    groups["other"] = []
    for r in rows:
        groups[group_of(r["name"])].append(r)
    return {title: rows for title, rows in groups.items() if rows}


def header(profile: Profile) -> Text:
    gpu = profile.gpu["name"] if profile.gpu else "no GPU: CPU subset only"
    host = profile.host
    text = Text.assemble(
        ("engramsim profile", "bold"),
        f"  {host.get('hostname', '?')} · {host.get('cpu_model', '?')} "
        f"· {host.get('cpu_cores', '?')} cores · {gpu} · {profile.created}"
        f"{' · quick' if profile.quick else ''}",
    )
    if profile.partial:
        text.append("  PARTIAL (interrupted)", style="bold yellow")
    return text


@dataclass
class ProfileReport:
    profile: Profile

    def __rich_console__(self, console, options):
        if compact(options):
            yield from self._compact()
            return
        yield header(self.profile)
        for title, rows in _group(self.profile.measurements).items():
            yield measurement_table(title, rows)
        if self.profile.skipped:
            t = Table(title="skipped", title_justify="left", header_style="bold")
            for col in ("benchmark", "params", "reason"):
                t.add_column(col, overflow="fold")
            for s in self.profile.skipped:
                t.add_row(s["name"], format_params(s["params"]), s["reason"])
            yield t

    def _compact(self):
        """At most 80 columns: each point's benchmark and params in one folding column, then
        its median, spread and rates (one per line)."""
        yield compact_header(self.profile)
        for title, rows in _group(self.profile.measurements).items():
            t = _compact_table(title, ("median", "p10/p90", "rates"))
            for r in rows:
                t.add_row(_point(r), time_text(r["median_s"]), _spread(r), _rates(r))
            yield t
        if self.profile.skipped:
            yield Text("skipped", style="bold")
            yield key_values(
                [(s["name"], f"{format_params(s['params'])}: {s['reason']}") for s in self.profile.skipped]
            )


def compact_header(profile: Profile, tag: str = "") -> Table:
    host = profile.host
    return key_values(
        [
            (
                f"{tag}engramsim profile",
                f"{host.get('hostname', '?')} · {profile.created}"
                + (" · quick" if profile.quick else "")
                + (" · PARTIAL (interrupted)" if profile.partial else ""),
            ),
            (
                "machine",
                f"{host.get('cpu_model', '?')} · {host.get('cpu_cores', '?')} cores · "
                f"{profile.gpu['name'] if profile.gpu else 'no GPU: CPU subset only'}",
            ),
        ]
    )


def _compact_table(title: str, columns) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    t.add_column("benchmark, params", overflow="fold", ratio=1, min_width=16)
    for col in columns:
        t.add_column(col, justify="right", no_wrap=True)
    return t


def _point(r: dict) -> str:
    return f"{r['name']} {format_params(r['params'])}"


def _spread(r: dict) -> str:
    med = r["median_s"]
    if not med:
        return ""
    return f"{100 * (r['p10_s'] / med - 1):+.0f}/{100 * (r['p90_s'] / med - 1):+.0f}%"


def _rates(r: dict) -> str:
    """Every rate the point has, one per line (the column stays narrow; the row grows)."""
    return "\n".join(f"{fmt.format(r[key])} {col}" for key, col, fmt in RATES if r.get(key) is not None)


def measurement_table(title: str, rows: list[dict]) -> Table:
    rates = [r for r in RATES if any(row.get(r[0]) is not None for row in rows)]
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column("benchmark", no_wrap=True)
    t.add_column("params", overflow="fold", ratio=1)
    t.add_column("median", justify="right")
    t.add_column("p10-p90", justify="right")
    for _, col, _ in rates:
        t.add_column(col, justify="right")
    for r in rows:
        cells = [(fmt.format(r[key]) if r.get(key) is not None else "") for key, _, fmt in rates]
        t.add_row(
            r["name"],
            format_params(r["params"]),
            time_text(r["median_s"]),
            f"{time_text(r['p10_s'])}-{time_text(r['p90_s'])}",
            *cells,
        )
    return t


def _key(row: dict) -> tuple[str, str]:
    return row["name"], json.dumps(row["params"], sort_keys=True)


@dataclass
class ProfileComparison:
    """Points measured in both profiles, matched by benchmark and params: B/A of the median
    time (below 1: B is faster) and of the main rate."""

    a: Profile
    b: Profile

    def matched(self) -> list[tuple[dict, dict]]:
        b_rows = {_key(r): r for r in self.b.measurements}
        return [(ra, b_rows[_key(ra)]) for ra in self.a.measurements if _key(ra) in b_rows]

    def __rich_console__(self, console, options):
        if compact(options):
            yield from self._compact()
            return
        pairs = self.matched()
        yield Text.assemble(("A ", "bold"), header(self.a))
        yield Text.assemble(("B ", "bold"), header(self.b))
        only_a = len(self.a.measurements) - len(pairs)
        only_b = len(self.b.measurements) - len(pairs)
        yield Text(f"{len(pairs)} points in both; {only_a} only in A, {only_b} only in B", style="dim")
        groups: dict[str, list] = {}
        for ra, rb in pairs:
            groups.setdefault(group_of(ra["name"]), []).append((ra, rb))
        for title, group in groups.items():
            t = Table(title=title, title_justify="left", header_style="bold")
            t.add_column("benchmark", no_wrap=True)
            t.add_column("params", overflow="fold", ratio=1)
            for col, just in (
                ("A median", "right"),
                ("B median", "right"),
                ("B/A time", "right"),
                ("rate", "left"),
                ("A", "right"),
                ("B", "right"),
            ):
                t.add_column(col, justify=just, no_wrap=True)
            for ra, rb in group:
                ratio = rb["median_s"] / ra["median_s"] if ra["median_s"] else float("inf")
                style = "green" if ratio < 0.95 else ("red" if ratio > 1.05 else "")
                rate = next(
                    ((k, col, fmt) for k, col, fmt in RATES if ra.get(k) is not None and rb.get(k) is not None), None
                )
                rate_cells = (
                    [rate[1], rate[2].format(ra[rate[0]]), rate[2].format(rb[rate[0]])] if rate else ["", "", ""]
                )
                t.add_row(
                    ra["name"],
                    format_params(ra["params"]),
                    time_text(ra["median_s"]),
                    time_text(rb["median_s"]),
                    Text(f"{ratio:.2f}", style=style),
                    *rate_cells,
                )
            yield t

    def _compact(self):
        """At most 80 columns: the point in one folding column, A and B medians, B/A."""
        pairs = self.matched()
        yield compact_header(self.a, "A ")
        yield compact_header(self.b, "B ")
        yield Text(
            f"{len(pairs)} points in both; {len(self.a.measurements) - len(pairs)} only in A, "
            f"{len(self.b.measurements) - len(pairs)} only in B",
            style="dim",
        )
        groups: dict[str, list] = {}
        for ra, rb in pairs:
            groups.setdefault(group_of(ra["name"]), []).append((ra, rb))
        for title, group in groups.items():
            t = _compact_table(title, ("A median", "B median", "B/A"))
            for ra, rb in group:
                ratio = rb["median_s"] / ra["median_s"] if ra["median_s"] else float("inf")
                style = "green" if ratio < 0.95 else ("red" if ratio > 1.05 else "")
                t.add_row(
                    _point(ra), time_text(ra["median_s"]), time_text(rb["median_s"]), Text(f"{ratio:.2f}", style=style)
                )
            yield t


@dataclass
class CalibrationReport:
    """The figures a calibration measured or extrapolated (inherited ones are counted)."""

    calibration: object
    path: str

    def __rich_console__(self, console, options):
        prov = self.calibration.provenance
        t = Table(title="calibrated figures", title_justify="left", header_style="bold")
        for col in ("key", "value", "source"):
            t.add_column(col, overflow="fold")
        for key, why in prov.items():
            if why.startswith("inherited"):
                continue
            section, name = key.split(".")
            style = "yellow" if why.startswith("extrapolated") else ""
            t.add_row(key, str(self.calibration.data[section][name]), Text(why, style=style))
        yield t
        inherited = sum(why.startswith("inherited") for why in prov.values())
        yield Text(f"{inherited} figures inherited from the base preset (see [provenance] in the file)", style="dim")
        for note in self.calibration.notes:
            yield Text(f"note: {note}", style="yellow")
        yield Text(f"wrote {self.path}  (engramsim simulate --hw {self.path})")
