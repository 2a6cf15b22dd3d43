"""Files in and out, for every loader and writer of engramsim.

- Inputs: `input_file` stats a path before opening it and accepts only a regular file, so a
  directory, a device or a FIFO given as an input is one line of error and never a wait on a
  FIFO; `read_input_text` also turns bytes that are not UTF-8 into one line.
- Outputs: `check_output` fails before the work starts if a path cannot be written, and
  `atomic_output` / `write_atomic` write through a temporary file beside the target (fsync,
  rename, the temporary removed on any failure) with the mode the umask gives a new file.
- JSON: `jsonable` turns numpy values, tuples, paths and non-finite floats into what JSON holds.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
from pathlib import Path

from engramsim.errors import UserError


def input_file(path: str | Path, what: str = "input") -> Path:
    """`path` if it is a readable regular file; otherwise one line saying what it is instead."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"{what} file not found: {path}") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise UserError(f"{path}: {what} must be a regular file, this is {_file_kind(mode)}")
    if not os.access(path, os.R_OK):
        raise UserError(f"{path}: {what} file is not readable")
    return path


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def read_input_bytes(path: str | Path, what: str = "input") -> bytes:
    path = input_file(path, what)
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror})") from None


def read_input_text(path: str | Path, what: str = "input") -> str:
    """The UTF-8 text of a regular file; binary or other encodings give one line."""
    data = read_input_bytes(path, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {e.start}: {data[e.start : e.start + 1]!r})") from None
    if "\x00" in text:
        raise UserError(f"{path}: {what} is binary (it contains NUL bytes), expected text")
    return text


def check_output(path: str | Path, flag: str) -> Path:
    """Fail now, before minutes of work, if `path` (given by `flag`) cannot be written."""
    path = Path(path)
    where = f"{flag} {path}"
    if path.is_dir():
        raise UserError(f"{where}: is a directory, expected a file path")
    if path.exists() and not path.is_file():
        raise UserError(f"{where}: exists and is not a regular file")
    if not path.parent.is_dir():
        raise UserError(f"{where}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise UserError(f"{where}: directory {path.parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserError(f"{where}: file is not writable")
    try:  # permission bits can say yes where the file system says no (/proc, read-only mounts)
        fd, probe = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError(f"{where}: cannot write in {path.parent} ({e.strerror})") from None
    return path


def check_output_dir(path: str | Path, flag: str, create: bool = False) -> Path:
    """A directory that files will be written into (`create` makes it and its parents)."""
    path = Path(path)
    if create and not path.exists():
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"{flag} {path}: cannot create the directory ({e.strerror})") from None
    if not path.is_dir():
        raise UserError(f"{flag} {path}: not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: directory is not writable")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | Path):
    """A binary file object whose content replaces `path` only if the block completes."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise UserError(f"cannot write {path} ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a new file gets the umask's mode
        os.replace(tmp, path)
    except OSError as e:  # a full disk or a vanished directory late in a run: one line, no file
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"cannot write {path} ({e.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    """Write `data` (text is UTF-8) to `path` atomically."""
    with atomic_output(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def jsonable(value):
    """`value` with numpy scalars and arrays, tuples and paths made plain, and non-finite floats
    as None (JSON has no NaN or infinity)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def dumps_json(value, indent: int | None = 2) -> str:
    """Strict JSON text of `value` (see `jsonable`): never `NaN` or `Infinity`."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)
