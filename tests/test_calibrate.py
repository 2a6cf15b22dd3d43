"""Calibration from a synthetic profile whose figures are known: link fit, gather curve and
its extrapolation, host, SSD, hash, UVA; the TOML loads as a hardware model; bad input."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engramsim.calibrate import (
    GatherCurve,
    calibrate,
    cpu_device_from_profile,
    fit_gather_curve,
    fit_line,
    fit_link,
    hardware_from_profile,
    write_calibration,
)
from engramsim.cli import main
from engramsim.hardware import load_hardware
from engramsim.measure.plan import record
from engramsim.measure.timing import Stats
from engramsim.profile_io import Profile, save_profile

GiB, MiB = 2**30, 2**20
H2D_BW, D2H_BW, LINK_LAT = 50e9, 40e9, 10e-6
ROW_A, ROW_B = 40e-9, 5e-9  # seconds per row = ROW_A + ROW_B * log2(table_bytes / 64 MiB)
SIZES = [4 * MiB, 64 * MiB, 256 * MiB, 1 * GiB]


def st_(t):
    return Stats(t, t * 0.95, t * 1.05, 5)


def per_row(size):
    # cache-resident 4 MiB is cheap and off the curve: the fit must ignore it
    return 5e-9 if size < 32 * MiB else ROW_A + ROW_B * math.log2(size / (64 * MiB))


def synthetic(gpu=True) -> Profile:
    p = Profile(
        created="2026-01-01T00:00:00+00:00",
        gpu={"name": "H200", "memory_bytes": 141 * GiB} if gpu else None,
        host={
            "hostname": "lab",
            "cpu_model": "Lab CPU",
            "cpu_cores": 16,
            "cpu_cores_usable": 16,
            "memory_total_bytes": 128 * GiB,
            "scratch_disk": {"device": "/dev/nvme0n1", "fstype": "ext4"},
        },
    )
    add = p.add
    for size in SIZES:
        for threads in (1, 4):
            rows = 65536
            t = per_row(size) * rows / (threads * 0.75 if threads > 1 else 1)
            add(
                record(
                    "dram_gather",
                    {"table_bytes": size, "row_bytes": 160, "rows": rows, "threads": threads, "dist": "uniform"},
                    st_(t),
                    rows=rows,
                    bytes=rows * 160,
                )
            )
            if gpu:
                add(
                    record(
                        "hbm_gather",
                        {"table_bytes": size, "row_bytes": 160, "rows": rows, "threads": 1, "dist": "uniform"},
                        st_(rows * 160 / 1e12),
                        rows=rows,
                        bytes=rows * 160,
                    )
                )
    for rows in (1, 1024):  # rows-per-call sweep: 2 us per call + the per-row cost
        add(
            record(
                "dram_gather",
                {"table_bytes": GiB, "row_bytes": 160, "rows": rows, "threads": 1, "dist": "uniform"},
                st_(2e-6 + rows * per_row(GiB)),
                rows=rows,
                bytes=rows * 160,
            )
        )
    add(record("memcpy", {"bytes": 256 * MiB, "threads": 16}, st_(256 * MiB / 10e9), bytes=256 * MiB))
    add(record("memcpy", {"bytes": 256 * MiB, "threads": 1}, st_(256 * MiB / 4e9), bytes=256 * MiB))
    for tokens, ns in ((128, 400.0), (4096, 50.0)):
        add(record("hash", {"tokens": tokens}, st_(tokens * ns * 1e-9), tokens=tokens))
    add(
        record(
            "cpu_matmul",
            {"dtype": "fp32", "m": 256, "k": 2048, "n": 8192, "threads": 16},
            st_(2 * 256 * 2048 * 8192 / 100e9),
            flops=2 * 256 * 2048 * 8192,
        )
    )
    for qd, iops in ((1, 10_000), (8, 60_000)):
        for cache, scale in (("cold", 1), ("warm", 20)):
            t = 256 / (iops * scale)
            add(
                record(
                    "ssd_read",
                    {"method": "pread", "cache": cache, "row_bytes": 4096, "queue_depth": qd, "file_bytes": GiB},
                    st_(t),
                    ops=256,
                    bytes=256 * 4096,
                    latency_us=t * qd / 256 * 1e6,
                )
            )
    if gpu:
        for size in (4096, 65536, 2**20, 2**24, 2**28):
            for name, bw in (("h2d", H2D_BW), ("d2h", D2H_BW)):
                add(record(name, {"memory": "pinned", "bytes": size}, st_(LINK_LAT + size / bw), bytes=size))
        for rows in (1, 1024, 65536):  # 0.1 us per 160-byte row (2 read requests)
            add(
                record(
                    "uva_gather",
                    {"table_bytes": GiB, "row_bytes": 160, "rows": rows, "threads": 1, "dist": "uniform"},
                    st_(5e-6 + rows * 1e-7),
                    rows=rows,
                    bytes=rows * 160,
                )
            )
    return p


def test_fit_line_is_exact_on_exact_data():
    a, b = fit_line([1, 2, 4, 8], [3 + 2 * x for x in (1, 2, 4, 8)])
    assert a == pytest.approx(3) and b == pytest.approx(2)
    with pytest.raises(ValueError):
        fit_line([5, 5], [1, 2])


@settings(max_examples=40, deadline=None)
@given(st.floats(1e-7, 1e-3), st.floats(1e8, 1e12))
def test_fit_link_recovers_latency_and_bandwidth(latency, bw):
    sizes = [4096 * 16**i for i in range(6)]
    rows = [{"params": {"bytes": s}, "median_s": latency + s / bw} for s in sizes]
    lat, fitted = fit_link(rows)
    assert fitted == pytest.approx(bw, rel=1e-6) and lat == pytest.approx(latency, rel=1e-4, abs=1e-12)


def test_gather_curve_ignores_cache_resident_tables_and_flags_extrapolation():
    rows = [r for r in synthetic().find("dram_gather", threads=1, rows=65536)]
    curve = fit_gather_curve(rows)
    assert curve.min_table_bytes == 64 * MiB and curve.max_table_bytes == GiB
    assert curve.slope_s_per_doubling == pytest.approx(ROW_B)
    assert curve.at(GiB) == (pytest.approx(per_row(GiB)), False)
    s, extrapolated = curve.at(256 * GiB)
    assert extrapolated and s == pytest.approx(ROW_A + ROW_B * 12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(1e-9, 1e-6), min_size=2, max_size=5))
def test_gather_curve_never_gets_cheaper_with_a_larger_table(costs):
    rows = [{"params": {"table_bytes": 2**26 * 4**i, "rows": 10}, "median_s": c * 10} for i, c in enumerate(costs)]
    curve = fit_gather_curve(rows)
    assert curve.slope_s_per_doubling >= 0
    assert curve.at(2**40)[0] >= curve.at(2**26)[0] > 0


def test_calibration_recovers_the_known_figures():
    cal = calibrate(synthetic(), base="h800")
    hw = cal.hardware()
    base = load_hardware("h800")
    assert hw.link.h2d_Bps == pytest.approx(H2D_BW, rel=1e-3) and hw.link.d2h_Bps == pytest.approx(D2H_BW, rel=1e-3)
    assert hw.link.latency_s == pytest.approx(LINK_LAT, rel=1e-2)
    # rows/s per thread = mlp / latency must reproduce the measured 1-thread rate at 1 GiB
    assert hw.host.gather_mlp / hw.host.dram_latency_s == pytest.approx(1 / per_row(GiB), rel=1e-3)
    assert hw.host.dram_latency_s == base.host.dram_latency_s
    assert hw.host.dram_bw_Bps == pytest.approx(20e9, rel=1e-3) and hw.host.dram_efficiency == 1.0
    # 51.2 us at 128 tokens, 204.8 us at 4,096: 153.6 us / 3,968 tokens per token, the rest per call.
    assert hw.host.hash_s_per_token == pytest.approx(153.6e-6 / 3968, rel=1e-3) and hw.host.cpu_cores == 16
    assert hw.host.hash_call_s == pytest.approx(51.2e-6 - 128 * 153.6e-6 / 3968, rel=1e-3)
    assert hw.ssd.read_iops == pytest.approx(60_000, rel=1e-3) and hw.ssd.devices == 1
    assert hw.ssd.latency_s == pytest.approx(100e-6, rel=1e-3)
    assert hw.gpu.name == "H200" and hw.gpu.hbm_bytes == pytest.approx(141 * GiB, rel=1e-3)
    assert hw.gpu.gather_efficiency == pytest.approx(1e12 / base.gpu.hbm_bw_Bps, rel=1e-3)
    # 2 requests per 160-byte row at 1e7 rows/s over a 1.5 us round trip: 30 reads in flight
    assert hw.link.max_outstanding_reads == round(2 * 1e7 * base.link.read_round_trip_s)
    prov = hw.provenance
    assert prov["link.h2d_GBps"].startswith("measured") and prov["gpu.bf16_dense_tflops"] == "inherited: h800"
    assert prov["host.dram_latency_ns"] == "inherited: h800" and prov["host.gather_mlp"].startswith("measured")


def test_a_larger_table_is_extrapolated_and_flagged():
    hw = calibrate(synthetic(), table_GiB=256).hardware()
    assert hw.provenance["host.gather_mlp"].startswith("extrapolated")
    assert hw.host.gather_mlp / hw.host.dram_latency_s == pytest.approx(1 / (ROW_A + ROW_B * 12), rel=1e-3)
    assert hw.provenance["gpu.gather_efficiency"].startswith("extrapolated")


def test_cpu_only_profile_keeps_the_base_gpu_and_link():
    cal = calibrate(synthetic(gpu=False), base="h100")
    base = load_hardware("h100")
    hw = cal.hardware()
    assert hw.gpu == base.gpu and hw.link == base.link
    assert any("no GPU" in n for n in cal.notes)


def test_written_toml_loads_with_provenance(tmp_path):
    profile_path = save_profile(synthetic(), tmp_path / "lab.json")
    out = write_calibration(calibrate(synthetic()), tmp_path / "lab.toml")
    hw = load_hardware(out)
    assert hw == hardware_from_profile(profile_path)
    assert {v.split(":")[0] for v in hw.provenance.values()} == {"measured", "inherited"}


def test_cpu_device_figures():
    cpu = cpu_device_from_profile(synthetic(gpu=False))
    assert cpu["matmul_flops"]["fp32"] == pytest.approx(100e9)
    assert cpu["memcpy_Bps"] == pytest.approx(10e9)
    assert cpu["gather_rows_per_s_per_thread"] == pytest.approx(1 / per_row(GiB))
    assert cpu["gather_rows_per_s"][4] == pytest.approx(3 / per_row(GiB))
    assert cpu["gather_call_overhead_s"] == pytest.approx(2e-6, rel=1e-3)
    assert isinstance(cpu["gather_curve"], GatherCurve)
    assert cpu["ssd"]["pread_cold"] == {
        "row_bytes": 4096,
        "iops": pytest.approx(60_000),
        "latency_s": pytest.approx(100e-6),
    }
    assert cpu["ssd"]["pread_warm"]["iops"] == pytest.approx(1.2e6)
    assert cpu["hash_s_per_token"] == pytest.approx(50e-9)
    assert cpu["overlap"] == {"matmul_slowdown": None, "gather_slowdown": None}


def test_cli_calibrate_writes_a_loadable_model(tmp_path, capsys):
    profile_path = save_profile(synthetic(), tmp_path / "lab.json")
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(profile_path), "--base", "h100", "--table-GiB", "100"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "extrapolated" in out
    written = load_hardware(tmp_path / "lab.toml")
    assert written.host.cpu_cores == 16
    # The file holds exactly the model the library calibrates (figures, not just keys).
    assert written == hardware_from_profile(profile_path, base="h100", table_GiB=100)


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        ([], "not valid JSON"),
        (["--base", "nope"], "unknown hardware preset"),
        (["--table-GiB", "-1"], "'--table-GiB': must be a number in (0, 1048576]"),
        (["--table-GiB", "inf"], "'--table-GiB': must be a number in (0, 1048576]"),
        (["--table-GiB", "nan"], "'--table-GiB': must be a number in (0, 1048576]"),
    ],
)
def test_cli_calibrate_bad_input(tmp_path, capsys, argv_tail, message):
    path = tmp_path / "p.json"
    path.write_text('{"schema_version": 1, "meas' if not argv_tail else save_profile(synthetic(), path).read_text())
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(path), *argv_tail])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and err.count("\n") == 1


def test_a_bad_fit_never_replaces_a_good_model_and_names_its_flag(tmp_path, capsys):
    profile_path = save_profile(synthetic(), tmp_path / "lab.json")
    with pytest.raises(SystemExit):
        main(["calibrate", str(profile_path)])
    good = (tmp_path / "lab.toml").read_text()
    capsys.readouterr()
    # A 1-byte table puts the gather curve below its floor: a thread would gather 1e12 rows/s.
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(profile_path), "--table-GiB", "1e-9"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert "'gather_mlp'" in err and "--table-GiB 1e-09" in err
    assert (tmp_path / "lab.toml").read_text() == good
    assert [p.name for p in tmp_path.iterdir()] == ["lab.json", "lab.toml"]  # no temporary left


def test_partial_profiles_say_how_much_was_used(tmp_path, capsys):
    profile = synthetic()
    profile.partial = True
    path = save_profile(profile, tmp_path / "part.json")
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 0
    measured = len(profile.measurements)
    assert err.startswith(f"warning: partial profile (interrupted): only {measured} measured points from ")


def test_simulate_says_how_much_of_a_partial_profile_it_used(tmp_path, capsys):
    profile = synthetic()
    profile.partial = True
    path = save_profile(profile, tmp_path / "part.json")
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--profile", str(path), "--tier", "dram-copy", "--workload", "fixed", "--max-seqs", "16"])
    err = capsys.readouterr().err
    assert e.value.code == 0 and err.count("\n") == 1
    assert err.startswith(
        f"warning: --profile {path}: partial profile (interrupted): only "
        f"{len(profile.measurements)} measured points from "
    )
