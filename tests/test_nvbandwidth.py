"""calibrate --nvbandwidth: nvbandwidth's `-j` JSON into link and HBM figures.

tests/fixtures/nvbandwidth-h800.json has the shape NVIDIA/nvbandwidth's json_output.cpp writes
(string cells, "N/A" for unmeasured pairs, a Waived testcase); its H2D/D2H copy-engine figures
are the published H800 PCIe Gen5 ones (55.3 / 55.1 GB/s), the others are illustrative.
"""

import json
import tomllib
from pathlib import Path

import pytest

from engramsim.calibrate import calibrate
from engramsim.errors import UserError
from engramsim.hardware import load_hardware
from engramsim.nvbandwidth import load_nvbandwidth, parse_nvbandwidth
from tests.clikit import run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "nvbandwidth-h800.json"


def test_figures_are_taken_and_marked_measured():
    cal = calibrate(None, "h200", nvbandwidth=load_nvbandwidth(FIXTURE))
    link, prov = cal.data["link"], cal.provenance
    assert link["h2d_GBps"] == pytest.approx(55.3) and link["d2h_GBps"] == pytest.approx(55.1)
    assert prov["link.h2d_GBps"].startswith(
        "measured: nvbandwidth host_to_device_memcpy_ce (mean 55.3 GB/s, 55.2-55.4 over 4 GPUs)"
    )
    rtt_us = (1102.5 + 1098.3 + 1110.0 + 1105.2) / 4 / 1e3
    assert link["read_round_trip_us"] == pytest.approx(rtt_us, abs=1e-4)
    # Little's law: 50.75 GB/s x 1.104 us / 128 B in flight.
    assert link["max_outstanding_reads"] == round(50.75e9 * rtt_us * 1e-6 / 128)
    h200 = load_hardware("h200")
    assert cal.data["gpu"]["hbm_efficiency"] == pytest.approx(2 * 1350.35e9 / h200.gpu.hbm_bw_Bps, abs=1e-4)
    for key in (
        "link.h2d_GBps",
        "link.d2h_GBps",
        "link.read_round_trip_us",
        "link.max_outstanding_reads",
        "gpu.hbm_efficiency",
    ):
        assert prov[key].startswith("measured: nvbandwidth"), key
    assert prov["link.latency_us"].startswith("inherited: h200")
    assert any("skipped nvbandwidth device_to_host_memcpy_sm: status 'Waived'" in n for n in cal.notes)
    hw = cal.hardware()
    assert hw.link.h2d_Bps == pytest.approx(55.3e9)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"results": []}, "not nvbandwidth JSON"),
        ({"nvbandwidth": {"testcases": {}}}, "not nvbandwidth JSON"),
        ([1, 2], "not nvbandwidth JSON"),
        (
            {
                "nvbandwidth": {
                    "testcases": [
                        {"name": "host_to_device_memcpy_ce", "status": "Passed", "bandwidth_matrix": [["fast"]]}
                    ]
                }
            },
            "is not a number",
        ),
        ({"nvbandwidth": {"testcases": [{"status": "Passed"}]}}, "has no name"),
    ],
)
def test_other_shapes_are_one_clear_error(data, message):
    with pytest.raises(UserError, match=message):
        parse_nvbandwidth(data, "x.json")


def test_no_used_testcase_is_said():
    run = parse_nvbandwidth(
        {
            "nvbandwidth": {
                "testcases": [
                    {"name": "device_to_device_memcpy_read_ce", "status": "Passed", "bandwidth_matrix": [["N/A", "1"]]}
                ]
            }
        },
        "x",
    )
    cal = calibrate(None, "h800", nvbandwidth=run)
    assert any("none of the testcases used" in n for n in cal.notes)
    assert all(v.startswith("inherited") for v in cal.provenance.values())


def test_cli_writes_a_loadable_model(tmp_path):
    out = tmp_path / "mine.toml"
    r = run_cli("calibrate", "--nvbandwidth", FIXTURE, "--base", "h800", "--out", out)
    assert r.returncode == 0, r.stderr
    data = tomllib.loads(out.read_text())
    assert data["link"]["h2d_GBps"] == pytest.approx(55.3)
    assert data["provenance"]["link.h2d_GBps"].startswith("measured: nvbandwidth")
    assert load_hardware(out).link.h2d_Bps == pytest.approx(55.3e9)
    assert "Waived" in r.stdout


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not JSON"),
        (json.dumps({"benchmarks": []}), "not nvbandwidth JSON"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    r = run_cli("calibrate", "--nvbandwidth", bad)
    assert r.returncode == 2 and message in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    r = run_cli("calibrate")
    assert r.returncode == 2 and "--nvbandwidth" in r.stderr
