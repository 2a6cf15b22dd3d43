"""Hostile input, generated: every numeric preset key and every numeric flag, given a bad value,
exits 2 with one line on stderr and no traceback. Runs the CLI in-process, so it stays fast."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engramsim.calibrate import to_toml
from engramsim.cli import main
from engramsim.hardware import PARTS_DIR
from engramsim.presets import PRESET_DIRS, load_toml, preset_names

# A workload small enough that a run which got past loading would still finish at once.
TINY_WORKLOAD = {
    "name": "tiny",
    "kind": "offline",
    "num_seqs": 2,
    "input_len_min": 8,
    "input_len_max": 16,
    "output_len_min": 2,
    "output_len_max": 4,
    "engine": {"max_num_seqs": 4},
}


def run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def assert_one_line_error(code, err):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err


def merged(kind: str, name: str) -> dict:
    """A preset's TOML data with hardware parts merged into their sections."""
    data = load_toml(PRESET_DIRS[kind] / f"{name}.toml")
    for table in data.values():
        if isinstance(table, dict) and "part" in table:
            part = load_toml(PARTS_DIR / f"{table.pop('part')}.toml")
            table.update({**part, **table})
    return data


def numeric_keys(data: dict) -> list[tuple[str | None, str]]:
    keys = []
    for key, value in data.items():
        if isinstance(value, dict):
            keys += [(key, k) for k, v in value.items() if _numeric(v)]
        elif _numeric(value):
            keys.append((None, key))
    return keys


def _numeric(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or (isinstance(v, list) and v != [])


PRESETS = [(kind, name) for kind in ("hardware", "model", "workload", "engine") for name in preset_names(kind)]
bad_numbers = st.sampled_from([float("nan"), float("inf"), float("-inf"), -1, -1e-9, 1e30, 10**30, -(10**30)])
bad_values = st.one_of(bad_numbers, st.sampled_from(["", "fast", True, [], [1.5], {"a": 1}]))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.sampled_from(PRESETS), st.data())
def test_a_bad_value_anywhere_in_a_preset_is_one_line(tmp_path, preset, data):
    kind, name = preset
    table = merged(kind, name)
    section, key = data.draw(st.sampled_from(numeric_keys(table)))
    value = data.draw(bad_values)
    (table[section] if section else table)[key] = value
    if isinstance(value, dict):  # a table where a number belongs: written as an inline table
        text = (
            to_toml({k: v for k, v in table.items() if k != section})
            + f"\n[{section}]\n"
            + "\n".join(f"{k} = {{a = 1}}" if k == key else to_toml({k: v}).strip() for k, v in table[section].items())
            if section
            else to_toml({**table, key: 0}).replace(f"{key} = 0", f"{key} = {{a = 1}}")
        )
    else:
        text = to_toml(table)
    path = tmp_path / f"bad-{kind}.toml"
    path.write_text(text)
    workload = tmp_path / "tiny.toml"
    workload.write_text(to_toml(TINY_WORKLOAD))
    flag = {"hardware": "--hw", "model": "--model", "workload": "--workload", "engine": "--engine"}[kind]
    argv = ["simulate", "--tier", "dram-copy", "--workload", workload, flag, path]
    code, err = run_cli(argv)
    assert_one_line_error(code, err)
    assert str(path) in err and (key in err or section in err), err


NUMERIC_FLAGS = [
    ("simulate", "--gpus"),
    ("simulate", "--tp"),
    ("simulate", "--seed"),
    ("simulate", "--hbm-cache-gib"),
    ("simulate", "--ssd-dram-hit"),
    ("simulate", "--ssd-dram-cache-gib"),
    ("simulate", "--max-seqs"),
    ("simulate", "--max-steps"),
    ("simulate", "--dp"),
    ("simulate", "--ep"),
    ("simulate", "--gpu-memory-utilization"),
    ("simulate", "--max-num-batched-tokens"),
    ("simulate", "--max-num-seqs"),
    ("simulate", "--max-model-len"),
    ("calibrate PROFILE", "--table-GiB"),
    ("profile", "--seed"),
    ("cache", "--lfu-accesses"),
    ("cache", "--layer"),
    ("memory", "--gpus"),
    ("memory", "--tp"),
    ("memory", "--dp"),
    ("memory", "--ep"),
    ("memory", "--context"),
    ("memory", "--max-model-len"),
    ("memory", "--max-num-batched-tokens"),
    ("memory", "--max-num-seqs"),
    ("memory", "--max-capture-size"),
    ("memory", "--memory-utilization"),
    ("memory", "--hbm-cache-gib"),
    ("plan", "--gpus"),
    ("plan", "--tp"),
    ("plan", "--ep"),
    ("plan", "--hbm-cache-gib"),
    ("plan", "--concurrency"),
    ("plan", "--max-p99-ttft-ms"),
    ("plan", "--max-p99-tpot-ms"),
    ("plan", "--min-tok-s"),
    ("plan", "--max-overhead-pct"),
    ("plan", "--seed"),
    ("plan", "--workers"),
    ("sweep grid.toml", "--workers"),
]
bad_flag_values = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "1e30", "1e400", "", "abc", "0x10", "--"]),
    st.floats(max_value=-1e-12),
    st.integers(max_value=-1).map(str),
    st.floats(min_value=1e16, allow_infinity=True).map(str),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.sampled_from(NUMERIC_FLAGS), bad_flag_values)
def test_a_bad_numeric_flag_is_one_line(tmp_path, command_flag, value):
    command, flag = command_flag
    argv = command.replace("PROFILE", str(tmp_path / "p.json")).split() + [f"{flag}={value}"]
    code, err = run_cli(argv)
    assert_one_line_error(code, err)
    assert flag in err, err


PRICE_KEYS = ["amortize_years", "dram_usd_per_GB", "cxl_usd_per_GB", "ssd_usd_per_GB", "usd_per_gpu_hour"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    st.sampled_from(PRICE_KEYS),
    st.sampled_from(["nan", "inf", "-inf", "-1", "1e30", "1" + "0" * 30, '"cheap"', "true", "[]", "{ a = 1 }"]),
)
def test_a_bad_price_is_one_line(tmp_path, key, value):
    """Prices have nested tables ([gpu.h100]), so the bad value goes into the file's own text."""
    import re

    text = (PRESET_DIRS["prices"] / "cloud-2026.toml").read_text()
    text, n = re.subn(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    assert n == 1
    path = tmp_path / "prices.toml"
    path.write_text(text)
    code, err = run_cli(["plan", "--prices", path])
    assert_one_line_error(code, err)
    assert str(path) in err and key in err, err


def bad_files(tmp_path: Path) -> dict[str, Path]:
    """One of each kind of file that is not a readable text input."""
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)))
    latin = tmp_path / "latin1.toml"
    latin.write_bytes('name = "caf\xe9"\n'.encode("latin-1"))
    nul = tmp_path / "nul.toml"
    nul.write_bytes(b"name = 1\x00\n")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    return {
        "binary": binary,
        "latin-1": latin,
        "nul": nul,
        "fifo": fifo,
        "directory": tmp_path,
        "device": Path("/dev/null"),
        "missing": tmp_path / "missing.toml",
    }


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--hw"],
        ["simulate", "--model"],
        ["simulate", "--workload"],
        ["simulate", "--engine"],
        ["calibrate", "--nvbandwidth"],
        ["simulate", "--profile"],
        ["simulate", "--trace"],
        ["calibrate"],
        ["profile", "show"],
        ["trace", "--text"],
        ["trace", "--ids"],
        ["trace", "--tokenizer"],
        ["cache", "--trace"],
        ["plan", "--prices"],
        ["sweep"],
    ],
)
def test_any_file_given_as_an_input_is_one_line(tmp_path, argv):
    for kind, path in bad_files(tmp_path).items():
        code, err = run_cli([*argv, path])  # a FIFO would block here if it were opened
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, (kind, err)
        assert str(path) in err or f"'{path}'" in err, (kind, err)


@pytest.mark.parametrize(
    "argv, where",
    [
        (["trace", "--save", "{tmp}/missing/t.npz"], "--save"),
        (["trace", "--save", "{tmp}/adir.npz"], "--save"),
        (["cache", "--plot", "{tmp}/missing/c.png"], "--plot"),
        (["calibrate", "{profile}", "--out", "{tmp}/missing/x.toml"], "--out"),
        (["profile", "--out", "{tmp}/adir.npz"], "--out"),
        (["profile", "--scratch", "{tmp}/missing"], "--scratch"),
        (["validate", "--scratch", "{tmp}/missing"], "--scratch"),
        (["simulate", "--timeline", "{tmp}/adir.npz"], "--timeline"),
        (["sweep", "{tmp}/grid.toml", "--out", "{tmp}/missing/rows.csv"], "--out"),
        (["plan", "--plot", "{tmp}/missing/p.png"], "--plot"),
    ],
)
def test_output_paths_are_checked_before_any_work(tmp_path, argv, where):
    pytest.importorskip("torch") if argv[0] in ("profile", "validate") else None
    (tmp_path / "adir.npz").mkdir()
    profile = tmp_path / "p.json"
    from engramsim.profile_io import save_profile
    from tests.test_calibrate import synthetic

    save_profile(synthetic(), profile)
    code, err = run_cli([a.format(tmp=tmp_path, profile=profile) for a in argv])
    assert_one_line_error(code, err)
    assert where in err


def test_an_unusable_cache_directory_names_its_variable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.delenv("ENGRAMSIM_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    code, err = run_cli(["simulate", "--trace", "default", "--tier", "dram-copy", "--workload", "fixed"])
    assert_one_line_error(code, err)
    assert "$XDG_CACHE_HOME" in err


def workload_file(tmp_path, **changes) -> Path:
    data = {**TINY_WORKLOAD, **changes}
    path = tmp_path / "w.toml"
    path.write_text(to_toml(data))
    return path


@pytest.mark.parametrize(
    "argv, estimate",
    [
        (["--gpus", "100000", "--workload", "paper-table4"], "x 100,000 replicas"),
        (["--workload", "{huge}"], "x 1 replicas"),
    ],
)
def test_oversize_simulations_are_refused_with_the_estimate_and_the_flag(tmp_path, monkeypatch, argv, estimate):
    import engramsim.workload as workload

    monkeypatch.setattr(workload.Workload, "requests", lambda *a: pytest.fail("generated requests first"))
    huge = workload_file(tmp_path, num_seqs=10**7, engine={"max_num_seqs": 512})
    code, err = run_cli(["simulate", *[a.format(huge=huge) for a in argv]])
    assert_one_line_error(code, err)
    assert "engine-step equivalents" in err and estimate in err and "lift it with --max-steps " in err


def test_max_steps_lifts_the_limit(tmp_path):
    path = workload_file(tmp_path)
    code, err = run_cli(["simulate", "--workload", path, "--tier", "dram-copy", "--max-steps", "1"])
    assert_one_line_error(code, err)
    needed = int(err.rsplit("--max-steps ", 1)[1])
    assert run_cli(["simulate", "--workload", path, "--tier", "dram-copy", "--max-steps", needed]) == (0, "")


@pytest.mark.parametrize(
    "argv, warning",
    [
        (["--tier", "hbm", "--ssd-dram-hit", "0.5"], "--ssd-dram-hit does nothing without --tier ssd"),
        (["--tier", "dram-copy", "--ssd-dram-cache-gib", "8"], "--ssd-dram-cache-gib does nothing without --tier ssd"),
        (["--tier", "hbm", "--hbm-cache-gib", "1"], "--hbm-cache-gib does nothing without --tier an off-GPU tier"),
        (["--tier", "dram-uva", "--cxl", "cxl-pool"], "--cxl does nothing without --tier cxl-uva or cxl-copy"),
        (
            ["--hw", "rtx-pro-6000", "--tier", "dram-copy", "--numa", "node0", "--gather-socket", "remote"],
            "--numa and --gather-socket do nothing on rtx-pro-6000, a host with one NUMA node",
        ),
    ],
)
def test_flags_that_do_nothing_warn_in_one_line(tmp_path, argv, warning):
    code, err = run_cli(["simulate", "--workload", workload_file(tmp_path), *argv])
    assert code == 0 and err == f"warning: {warning}; ignored\n"


def test_numa_flags_on_a_two_socket_host_say_nothing(tmp_path):
    argv = ["simulate", "--workload", workload_file(tmp_path), "--hw", "h800", "--tier", "dram-copy"]
    assert run_cli([*argv, "--numa", "node0", "--gather-socket", "remote"]) == (0, "")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["simulate", "--tier", "ssd", "--tier", "ssd"], "--tier ssd is given twice"),
        (["simulate", "--hbm-cache-gib", "1", "--hbm-cache-gib", "1.0"], "--hbm-cache-gib 1 is given twice"),
        (["simulate", "--tier", "ssd", "--ssd-dram-hit", "0.5", "--ssd-dram-cache-gib", "1"], "not both"),
        (["cache", "--policy", "lru", "--policy", "lru"], "--policy lru is given twice"),
        (["plan", "--hw", "h100", "--hw", "h100"], "--hw h100 is given twice"),
        (["plan", "--hbm-cache-gib", "1", "--hbm-cache-gib", "1.0"], "--hbm-cache-gib 1 is given twice"),
        (["memory", "--tier", "hbm", "--tier", "hbm"], "--tier hbm is given twice"),
        (["cache", "--lfu-accesses", "0"], "'--lfu-accesses': must be a whole number in [1, 1000000000]"),
    ],
)
def test_contradictory_or_repeated_flags_are_errors(argv, message):
    code, err = run_cli(argv)
    assert_one_line_error(code, err)
    assert message in err


def test_rate_in_an_offline_workload_is_an_error(tmp_path):
    code, err = run_cli(["simulate", "--workload", workload_file(tmp_path, rate_per_s=5.0)])
    assert_one_line_error(code, err)
    assert "rate_per_s does nothing in an offline workload" in err


def test_ctrl_c_during_a_simulation_is_one_line_and_130(monkeypatch):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("engramsim.commands.simulate.simulate", interrupt)
    assert run_cli(["simulate", "--json"]) == (130, "interrupted\n")
