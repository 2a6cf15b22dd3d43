"""Sweep results on disk: .csv, .jsonl or .parquet (with pyarrow or polars), written atomically
and read back for `--resume`."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from engramsim.errors import UserError
from engramsim.fileio import check_output, dumps_json, input_file, write_atomic

FORMATS = (".csv", ".jsonl", ".parquet")


def check_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix not in FORMATS:
        raise UserError(f"--out {path}: give a file ending in {', '.join(FORMATS)}")
    if path.suffix == ".parquet":
        _parquet_lib()
    return check_output(path, "--out")


def read_rows(path: Path) -> list[dict]:
    """The rows a results file holds ([] when there is none yet)."""
    if not path.exists():
        return []
    input_file(path, "--resume results")
    try:
        if path.suffix == ".csv":
            with open(path, newline="") as f:
                # The key is a hex hash: it stays text even when it looks like a number.
                return [{k: v if k == "key" else _from_csv(v) for k, v in row.items()} for row in csv.DictReader(f)]
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return _read_parquet(path)
    except (OSError, ValueError, csv.Error) as e:
        raise UserError(f"--resume: cannot read {path}: {e}") from None


def write_rows(path: Path, rows: list[dict]):
    """Replace `path` with all `rows` at once: a reader never sees half a file."""
    if path.suffix == ".parquet":
        data = _parquet_bytes(rows)
    elif path.suffix == ".jsonl":
        data = "".join(dumps_json(r, indent=None) + "\n" for r in rows).encode()
    else:
        data = _csv_text(rows).encode()
    write_atomic(path, data)


def _csv_text(rows: list[dict]) -> str:
    names = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if v is None else v for k, v in r.items()})
    return out.getvalue()


def _from_csv(text: str):
    """CSV holds text: give back the None, bools and numbers the rows had."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _parquet_lib() -> str:
    for name in ("pyarrow", "polars"):
        try:
            __import__(name)
            return name
        except ImportError:
            continue
    raise UserError("writing .parquet needs pyarrow or polars (pip install pyarrow); or use .csv or .jsonl")


def _parquet_bytes(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    if _parquet_lib() == "pyarrow":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), buf)
    else:
        import polars as pl

        pl.DataFrame(rows, infer_schema_length=None).write_parquet(buf)
    return buf.getvalue()


def _read_parquet(path: Path) -> list[dict]:
    if _parquet_lib() == "pyarrow":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    import polars as pl

    return pl.read_parquet(path).to_dicts()
