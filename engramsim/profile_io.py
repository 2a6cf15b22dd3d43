"""The profile file: schema v1, long format, written atomically, loaded with validation.

    {"schema_version": 1, "created": ISO-8601, "partial": bool, "quick": bool,
     "host": {...}, "gpu": {...} or null,
     "measurements": [{"name", "params": {...}, "median_s", "p10_s", "p90_s", "n",
                       work per call ("bytes", "rows", "ops", "flops", "tokens") and derived
                       rates ("GBps", "rows_per_s", "us_per_row", "iops", "GFLOPs", "ns_per_token")}],
     "skipped": [{"name", "params", "reason"}]}

One row per measured point, so a new benchmark needs no schema change. Derived rates are
added next to the raw times, never instead of them.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from engramsim.errors import UserError
from engramsim.fileio import dumps_json, read_input_text, write_atomic

SCHEMA_VERSION = 1
PROFILE_DIR = Path(__file__).resolve().parent.parent / "profiles"


@dataclass
class Profile:
    created: str
    host: dict
    gpu: dict | None
    measurements: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    partial: bool = False
    quick: bool = False
    source: Path | None = field(default=None, compare=False)

    @classmethod
    def new(cls, host: dict, gpu: dict | None, quick: bool = False) -> Profile:
        return cls(created=datetime.now(UTC).isoformat(timespec="seconds"), host=host, gpu=gpu, quick=quick)

    def add(self, rec: dict):
        (self.skipped if "reason" in rec else self.measurements).append(rec)

    def find(self, name: str, **params) -> list[dict]:
        """Measured rows of benchmark `name` whose params include every given key=value."""
        return [
            m
            for m in self.measurements
            if m["name"] == name and all(m["params"].get(k) == v for k, v in params.items())
        ]

    @property
    def label(self) -> str:
        device = self.gpu["name"] if self.gpu else "cpu"
        return f"{self.host.get('hostname', 'unknown')} / {device}"

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "partial": self.partial,
            "quick": self.quick,
            "host": self.host,
            "gpu": self.gpu,
            "measurements": self.measurements,
            "skipped": self.skipped,
        }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


def default_path(profile: Profile, directory: Path = PROFILE_DIR) -> Path:
    """profiles/<host>-<gpu or cpu>-<date>.json"""
    device = profile.gpu["name"] if profile.gpu else "cpu"
    date = profile.created[:10]
    return Path(directory) / f"{_slug(profile.host.get('hostname', 'host'))}-{_slug(device)}-{date}.json"


def save_profile(profile: Profile, path: Path | str) -> Path:
    path = Path(path)
    write_atomic(path, dumps_json(profile.to_dict(), indent=1) + "\n")
    return path


def load_profile(path: Path | str) -> Profile:
    text = read_input_text(path, "profile")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON, truncated? ({e})") from None
    return profile_from_dict(data, str(path), path)


def profile_from_dict(data, where: str, path: Path | None = None) -> Profile:
    if not isinstance(data, dict) or "schema_version" not in data or "measurements" not in data:
        raise UserError(f"{where}: not an engramsim profile (no schema_version/measurements)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise UserError(
            f"{where}: profile schema_version {data['schema_version']!r} is not supported "
            f"(this engramsim reads {SCHEMA_VERSION})"
        )
    for key, kind in (("host", dict), ("measurements", list), ("skipped", list), ("created", str)):
        if not isinstance(data.get(key, [] if key == "skipped" else None), kind):
            raise UserError(f"{where}: '{key}' must be a {kind.__name__}")
    if data.get("gpu") is not None and not isinstance(data["gpu"], dict):
        raise UserError(f"{where}: 'gpu' must be an object or null")
    if not data["measurements"]:
        raise UserError(f"{where}: the profile has no measurements")
    for i, m in enumerate(data["measurements"]):
        _check_row(m, f"{where}: measurements[{i}]", ("median_s", "p10_s", "p90_s"))
    for i, s in enumerate(data.get("skipped", [])):
        _check_row(s, f"{where}: skipped[{i}]", ())
        if not isinstance(s.get("reason"), str):
            raise UserError(f"{where}: skipped[{i}] needs a 'reason' string")
    return Profile(
        created=data["created"],
        host=data["host"],
        gpu=data.get("gpu"),
        measurements=data["measurements"],
        skipped=data.get("skipped", []),
        partial=bool(data.get("partial", False)),
        quick=bool(data.get("quick", False)),
        source=path,
    )


def _check_row(row, where: str, times: tuple[str, ...]):
    if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("params"), dict):
        raise UserError(f"{where} needs a 'name' string and a 'params' object")
    for key in times:
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise UserError(f"{where} ({row['name']}): '{key}' must be a finite number >= 0, got {value!r}")
    if times and (isinstance(row.get("n"), bool) or not isinstance(row.get("n"), int) or row["n"] < 1):
        raise UserError(f"{where} ({row['name']}): 'n' must be a whole number >= 1")
    if times:
        _check_spread(row, where)


def _check_spread(row: dict, where: str):
    """A measured time is positive and its median lies within its own [p10, p90]."""
    median, p10, p90 = row["median_s"], row["p10_s"], row["p90_s"]
    if median == 0:
        raise UserError(f"{where} ({row['name']}): 'median_s' is 0, a measurement that took no time")
    if not p10 <= median <= p90:
        raise UserError(
            f"{where} ({row['name']}): 'median_s' {median!r} lies outside [p10_s, p90_s] = [{p10!r}, {p90!r}]"
        )
