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
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from engramsim.errors import UserError

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
    def new(cls, host: dict, gpu: dict | None, quick: bool = False) -> "Profile":
        return cls(created=datetime.now(timezone.utc).isoformat(timespec="seconds"), host=host, gpu=gpu,
                   quick=quick)

    def add(self, rec: dict):
        (self.skipped if "reason" in rec else self.measurements).append(rec)

    def find(self, name: str, **params) -> list[dict]:
        """Measured rows of benchmark `name` whose params include every given key=value."""
        return [m for m in self.measurements
                if m["name"] == name and all(m["params"].get(k) == v for k, v in params.items())]

    @property
    def label(self) -> str:
        device = self.gpu["name"] if self.gpu else "cpu"
        return f"{self.host.get('hostname', 'unknown')} / {device}"

    def to_dict(self) -> dict:
        return {"schema_version": SCHEMA_VERSION, "created": self.created, "partial": self.partial,
                "quick": self.quick, "host": self.host, "gpu": self.gpu,
                "measurements": self.measurements, "skipped": self.skipped}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "unknown"


def default_path(profile: Profile, directory: Path = PROFILE_DIR) -> Path:
    """profiles/<host>-<gpu or cpu>-<date>.json"""
    device = profile.gpu["name"] if profile.gpu else "cpu"
    date = profile.created[:10]
    return Path(directory) / f"{_slug(profile.host.get('hostname', 'host'))}-{_slug(device)}-{date}.json"


def check_writable(path: Path | str):
    """Fail now, before minutes of measuring, if `path` cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a file path")
    parent = path.parent
    if not parent.is_dir():
        raise UserError(f"{path}: directory {parent} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise UserError(f"{path}: cannot write there ({e.strerror})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{path}: file is not writable")


def write_atomic(path: Path | str, data: str | bytes):
    """Write text or bytes to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # as an ordinary new file would be, not mkstemp's owner-only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_profile(profile: Profile, path: Path | str) -> Path:
    path = Path(path)
    write_atomic(path, json.dumps(profile.to_dict(), indent=1, default=_jsonable) + "\n")
    return path


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return str(value)


def load_profile(path: Path | str) -> Profile:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"{path}: cannot read profile ({e.strerror})") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON, truncated? ({e})") from None
    return profile_from_dict(data, str(path), path)


def profile_from_dict(data, where: str, path: Path | None = None) -> Profile:
    if not isinstance(data, dict) or "schema_version" not in data or "measurements" not in data:
        raise UserError(f"{where}: not an engramsim profile (no schema_version/measurements)")
    if data["schema_version"] != SCHEMA_VERSION:
        raise UserError(f"{where}: profile schema_version {data['schema_version']!r} is not supported "
                        f"(this engramsim reads {SCHEMA_VERSION})")
    for key, kind in (("host", dict), ("measurements", list), ("skipped", list), ("created", str)):
        if not isinstance(data.get(key, [] if key == "skipped" else None), kind):
            raise UserError(f"{where}: '{key}' must be a {kind.__name__}")
    if data.get("gpu") is not None and not isinstance(data["gpu"], dict):
        raise UserError(f"{where}: 'gpu' must be an object or null")
    for i, m in enumerate(data["measurements"]):
        _check_row(m, f"{where}: measurements[{i}]", ("median_s", "p10_s", "p90_s"))
    for i, s in enumerate(data.get("skipped", [])):
        _check_row(s, f"{where}: skipped[{i}]", ())
        if not isinstance(s.get("reason"), str):
            raise UserError(f"{where}: skipped[{i}] needs a 'reason' string")
    return Profile(created=data["created"], host=data["host"], gpu=data.get("gpu"),
                   measurements=data["measurements"], skipped=data.get("skipped", []),
                   partial=bool(data.get("partial", False)), quick=bool(data.get("quick", False)), source=path)


def _check_row(row, where: str, times: tuple[str, ...]):
    if not isinstance(row, dict) or not isinstance(row.get("name"), str) or not isinstance(row.get("params"), dict):
        raise UserError(f"{where} needs a 'name' string and a 'params' object")
    for key in times:
        value = row.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or math.isinf(value):
            raise UserError(f"{where} ({row['name']}): '{key}' must be a non-negative number, got {value!r}")
    if times and (not isinstance(row.get("n"), int) or row["n"] < 1):
        raise UserError(f"{where} ({row['name']}): 'n' must be a whole number >= 1")
