"""The one input helper, the one atomic writer and the one JSON-safe converter."""

import json
import math
import os
import stat

import numpy as np
import pytest

from engramsim.errors import UserError
from engramsim.fileio import atomic_output, dumps_json, input_file, jsonable, read_input_text, write_atomic


def test_atomic_write_replaces_the_file_with_the_umask_mode(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    old_mask = os.umask(0o027)
    try:
        write_atomic(target, "new ✓")
    finally:
        os.umask(old_mask)
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output(target) as f:
            raise KeyboardInterrupt
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_an_os_error_while_writing_is_one_line_and_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"good")
    with pytest.raises(UserError, match="cannot write .*out.bin .No space left on device"):
        with atomic_output(target):
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    with pytest.raises(UserError, match="cannot write"):
        write_atomic(tmp_path / "gone" / "x.txt", "text")


def test_check_output_tries_the_directory_the_file_system_refuses():
    from engramsim.fileio import check_output

    with pytest.raises(UserError, match="--timeline /proc/x.json: cannot write in /proc"):
        check_output("/proc/x.json", "--timeline")


def test_input_file_accepts_only_readable_regular_files(tmp_path):
    good = tmp_path / "a.txt"
    good.write_text("hello")
    assert input_file(good) == good and read_input_text(good) == "hello"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, kind in ((tmp_path, "a directory"), (fifo, "a FIFO"), ("/dev/null", "a character device")):
        with pytest.raises(UserError, match=f"must be a regular file, this is {kind}"):
            input_file(path, "text")
    with pytest.raises(UserError, match="text file not found"):
        input_file(tmp_path / "nope", "text")
    latin = tmp_path / "l.txt"
    latin.write_bytes(b"caf\xe9")
    with pytest.raises(UserError, match=r"not UTF-8 text \(byte 3: b'\\xe9'\)"):
        read_input_text(latin, "text")


def test_jsonable_makes_numpy_tuples_and_non_finite_values_plain():
    value = {
        "a": np.int64(3),
        "b": (1, np.float32(0.5)),
        "c": np.arange(3),
        "d": math.nan,
        4: -math.inf,
        "e": tmp_path_like(),
    }
    assert jsonable(value) == {"a": 3, "b": [1, 0.5], "c": [0, 1, 2], "d": None, "4": None, "e": "some/where"}
    assert json.loads(dumps_json({"x": math.inf, "y": [np.nan]})) == {"x": None, "y": [None]}


def tmp_path_like():
    from pathlib import Path

    return Path("some/where")
