"""Profile file round trip and validation; `profile`, `profile show` and `profile compare` CLI."""

import io
import json

import pytest
from rich.console import Console

from engramsim.cli import main
from engramsim.errors import UserError
from engramsim.fileio import check_output
from engramsim.measure.plan import record
from engramsim.measure.timing import Stats
from engramsim.profile_io import Profile, default_path, load_profile, save_profile
from engramsim.report.profile import ProfileComparison, ProfileReport


def make_profile(scale=1.0, gpu=None, partial=False) -> Profile:
    p = Profile(
        created="2026-01-02T03:04:05+00:00",
        host={"hostname": "box", "cpu_model": "Test CPU", "cpu_cores": 4},
        gpu=gpu,
        partial=partial,
        quick=True,
    )
    s = lambda t: Stats(t * scale, t * scale * 0.9, t * scale * 1.1, 5)  # noqa: E731
    p.add(
        record(
            "dram_gather",
            {"table_bytes": 2**30, "row_bytes": 160, "rows": 65536, "threads": 1, "dist": "uniform"},
            s(0.01),
            rows=65536,
            bytes=65536 * 160,
        )
    )
    p.add(record("memcpy", {"bytes": 2**27, "threads": 4}, s(0.02), bytes=2**27))
    p.add(
        record(
            "ssd_read",
            {"method": "pread", "cache": "cold", "row_bytes": 4096, "queue_depth": 1, "file_bytes": 2**28},
            s(0.025),
            ops=256,
            bytes=256 * 4096,
            latency_us=97.6,
        )
    )
    p.add({"name": "hbm_gather", "params": {}, "reason": "no CUDA device: CPU subset only"})
    return p


def render(obj) -> str:
    buf = io.StringIO()
    Console(file=buf, width=160).print(obj)
    return buf.getvalue()


def run_cli(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_round_trip_keeps_every_field(tmp_path):
    p = make_profile(partial=True, gpu={"name": "H200", "memory_bytes": 141e9})
    path = save_profile(p, tmp_path / "p.json")
    q = load_profile(path)
    assert q.to_dict() == json.loads(json.dumps(p.to_dict()))
    assert q.partial and q.gpu["name"] == "H200" and q.source == path
    assert [f.name for f in tmp_path.iterdir()] == ["p.json"]  # no temporary file left behind
    data = json.loads(path.read_text())
    assert data["schema_version"] == 1 and data["skipped"][0]["reason"].startswith("no CUDA")


def test_find_matches_name_and_param_subset():
    p = make_profile()
    assert len(p.find("dram_gather", threads=1, row_bytes=160)) == 1
    assert p.find("dram_gather", threads=2) == [] and p.find("nope") == []


def test_default_path_names_host_device_and_date():
    assert default_path(make_profile(), "profiles").as_posix() == "profiles/box-cpu-2026-01-02.json"
    gpu = make_profile(gpu={"name": "NVIDIA H200", "memory_bytes": 1})
    assert default_path(gpu, "x").name == "box-nvidia-h200-2026-01-02.json"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"schema_version": 1, "measurem', "not valid JSON"),
        ("[1, 2, 3]", "not an engramsim profile"),
        ('{"name": "h800"}', "not an engramsim profile"),
        ('{"schema_version": 7, "measurements": []}', "schema_version 7 is not supported"),
        (
            '{"schema_version": 1, "created": "x", "host": {}, "measurements": [{"name": "m", "params": {}, '
            '"median_s": -1, "p10_s": 0, "p90_s": 0, "n": 1}]}',
            "'median_s' must be a finite number >= 0",
        ),
        ('{"schema_version": 1, "created": "x", "host": {}, "measurements": [{"name": "m"}]}', "needs a 'name'"),
    ],
)
def test_bad_profiles_are_one_line_user_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message) as err:
        load_profile(path)
    assert "\n" not in str(err.value)


def test_unwritable_destinations_are_caught(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        check_output(tmp_path / "missing" / "p.json", "--out")
    with pytest.raises(UserError, match="--out .*is a directory"):
        check_output(tmp_path, "--out")
    check_output(tmp_path / "ok.json", "--out")
    assert list(tmp_path.iterdir()) == []  # the probe leaves nothing


def test_report_groups_by_path_with_rates_and_skips():
    text = render(ProfileReport(make_profile(partial=True)))
    for part in (
        "host DRAM",
        "SSD",
        "GB/s",
        "µs/row",
        "IOPS",
        "skipped",
        "no CUDA device",
        "PARTIAL",
        "no GPU: CPU subset only",
        "table_bytes=1 GiB",
    ):
        assert part in text
    assert "0.1526" in text  # 10 ms / 65536 rows in µs/row


def test_comparison_matches_points_and_shows_the_time_ratio():
    a, b = make_profile(), make_profile(scale=2.0)
    b.add(record("hash", {"tokens": 8}, Stats(1e-6, 1e-6, 1e-6, 1), tokens=8))
    cmp = ProfileComparison(a, b)
    assert len(cmp.matched()) == 3
    text = render(cmp)
    assert "3 points in both; 0 only in A, 1 only in B" in text
    assert text.count("2.00") >= 3


def test_cli_show_and_compare(tmp_path, capsys):
    a = save_profile(make_profile(), tmp_path / "a.json")
    b = save_profile(make_profile(scale=0.5), tmp_path / "b.json")
    code, out, _ = run_cli(["profile", "show", str(a)], capsys)
    assert code == 0 and "host DRAM" in out and "0.1526" in out  # 10 ms / 65536 rows in µs/row
    code, out, _ = run_cli(["profile", "compare", str(a), str(b)], capsys)
    assert code == 0 and out.count("0.50") >= 3  # each of the 3 matched points took half the time


@pytest.mark.parametrize(
    "argv", [["profile", "show", "{bad}"], ["profile", "compare", "{good}", "{bad}"], ["profile", "show", "{missing}"]]
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv):
    good = save_profile(make_profile(), tmp_path / "good.json")
    bad = tmp_path / "bad.json"
    bad.write_text(good.read_text()[:50])
    paths = {"{good}": str(good), "{bad}": str(bad), "{missing}": str(tmp_path / "nope.json")}
    code, _, err = run_cli([paths.get(a, a) for a in argv], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ")


def test_cli_unwritable_out_fails_before_measuring(tmp_path, capsys, monkeypatch):
    import engramsim.measure.run as run

    monkeypatch.setattr(run, "run_profile", lambda *a, **k: pytest.fail("measured before checking --out"))
    code, _, err = run_cli(["profile", "--quick", "--out", str(tmp_path / "no" / "p.json")], capsys)
    assert code == 2 and "does not exist" in err


def test_cli_unknown_benchmark_exit_2(capsys):
    code, _, err = run_cli(["profile", "--only", "memcpy,warp_drive"], capsys)
    assert code == 2 and "unknown benchmark 'warp_drive'" in err


def test_cli_profile_measures_and_saves(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "p.json"
    code, text, _ = run_cli(
        ["profile", "--quick", "--only", "hash,cxl", "--out", str(out), "--scratch", str(tmp_path)], capsys
    )
    assert code == 0 and f"profile: {out}" in text
    p = load_profile(out)
    names = {r["name"] for r in p.measurements + p.skipped}
    assert names == {"hash", "cxl"} and p.quick and not p.partial


@pytest.mark.parametrize(
    "rows, message",
    [
        ([], "has no measurements"),
        ([{"median_s": 0.0, "p10_s": 0.0, "p90_s": 0.0}], "'median_s' is 0"),
        ([{"median_s": 2.0, "p10_s": 0.5, "p90_s": 1.0}], r"lies outside \[p10_s, p90_s\]"),
        ([{"median_s": float("nan"), "p10_s": 0.5, "p90_s": 1.0}], "'median_s' must be a finite number"),
        ([{"median_s": 1.0, "p10_s": 0.5, "p90_s": float("inf")}], "'p90_s' must be a finite number"),
    ],
)
def test_implausible_measurements_are_rejected_at_load(tmp_path, rows, message):
    data = make_profile().to_dict()
    data["measurements"] = [{"name": "memcpy", "params": {}, "n": 3, **r} for r in rows]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))  # Python writes NaN and Infinity, as a broken tool might
    with pytest.raises(UserError, match=message) as err:
        load_profile(path)
    assert "\n" not in str(err.value)


def _interrupted_profile(measured: bool) -> Profile:
    p = make_profile() if measured else Profile(created="2026-01-02T03:04:05+00:00", host={"hostname": "box"}, gpu=None)
    p.partial = True
    return p


@pytest.mark.parametrize("measured", [False, True])
def test_ctrl_c_during_measuring_saves_only_what_was_measured(tmp_path, capsys, monkeypatch, measured):
    import engramsim.measure.run as run

    monkeypatch.setattr(run, "run_profile", lambda *a, **k: _interrupted_profile(measured))
    out = tmp_path / "p.json"
    code, _, err = run_cli(["profile", "--quick", "--out", str(out)], capsys)
    assert code == 130 and err.count("\n") == 1
    if measured:
        assert err.startswith(f"interrupted: saved 3 measured points to {out}") and load_profile(out).partial
    else:
        assert err.startswith("interrupted before any point was measured") and not out.exists()
    assert list(tmp_path.iterdir()) == ([out] if measured else [])


@pytest.mark.parametrize(
    "where",
    [
        "engramsim.measure.import_torch",
        "engramsim.measure.run.select",
        "engramsim.measure.run.run_profile",
        "engramsim.commands.profile.save_profile",
        "engramsim.report.profile.ProfileReport",
    ],
)
def test_ctrl_c_at_any_moment_of_profile_is_one_line_and_130(tmp_path, capsys, monkeypatch, where):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupt)
    if where.endswith("save_profile") or where.endswith("ProfileReport"):
        import engramsim.measure.run as run

        monkeypatch.setattr(run, "run_profile", lambda *a, **k: make_profile())
    code, _, err = run_cli(["profile", "--quick", "--out", str(tmp_path / "p.json")], capsys)
    assert code == 130 and err.count("\n") == 1, err
    assert [p.name for p in tmp_path.iterdir()] in ([], ["p.json"])  # never a temporary file
