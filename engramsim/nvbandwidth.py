"""nvbandwidth's JSON output (`nvbandwidth -j`, github.com/NVIDIA/nvbandwidth) as hardware figures.

The file is `{"nvbandwidth": {"version", ..., "testcases": [{"name", "status",
"bandwidth_description", "bandwidth_matrix", "sum", ...}]}}`. A matrix holds numbers as strings,
one row per source (the CPU for host tests, a GPU otherwise) and one column per GPU, "N/A" where
a pair was not measured. Each GPU's cell is its own link measured alone, so a figure here is the
mean over the measured cells (with their spread in the provenance).

Testcases used, and what they set (TOML keys of the hardware model):

  host_to_device_memcpy_ce   link.h2d_GBps            copy-engine H2D, pinned host memory
  device_to_host_memcpy_ce   link.d2h_GBps            copy-engine D2H
  host_device_latency_sm     link.read_round_trip_us  a GPU kernel's dependent reads of host memory
  host_to_device_memcpy_sm   link.max_outstanding_reads   a GPU kernel reading host memory in bulk:
                             by Little's law, reads in flight = bandwidth x round trip / request
                             bytes (a lower bound if the link itself limited the copy)
  device_to_host_memcpy_sm   (reported, not used: the simulator writes nothing to the host)
  device_local_copy          gpu.hbm_efficiency       copy bytes x 2 (read + write) / hbm_bw_GBps

Testcases whose status is not "Passed" (Waived, Error, Not Found) are skipped with a note.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from engramsim.errors import UserError
from engramsim.presets import load_json

USED = (
    "host_to_device_memcpy_ce",
    "device_to_host_memcpy_ce",
    "host_device_latency_sm",
    "host_to_device_memcpy_sm",
    "device_to_host_memcpy_sm",
    "device_local_copy",
)


@dataclass(frozen=True)
class Testcase:
    name: str
    values: tuple[float, ...]  # measured cells (GB/s, or ns for latency tests)
    unit: str  # "GB/s" or "ns"

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    def describe(self) -> str:
        spread = (
            "" if len(self.values) == 1 else f", {min(self.values):g}-{max(self.values):g} over {len(self.values)} GPUs"
        )
        return f"nvbandwidth {self.name} (mean {self.mean:.4g} {self.unit}{spread})"


@dataclass(frozen=True)
class NvbandwidthRun:
    version: str
    testcases: dict[str, Testcase]
    notes: tuple[str, ...]


def load_nvbandwidth(path: str | Path) -> NvbandwidthRun:
    """Read an `nvbandwidth -j` file; anything of another shape is one clear error."""
    data = load_json(path, "nvbandwidth", hint="; expected the output of `nvbandwidth -j`")
    run = parse_nvbandwidth(data, str(path))
    if not run.testcases:  # calibrating from it would write the base preset back, marked calibrated
        why = f" ({run.notes[0]})" if run.notes else ""
        raise UserError(f"{path}: no measured testcase that calibrate uses ({', '.join(USED)}){why}")
    return run


def parse_nvbandwidth(data, where: str) -> NvbandwidthRun:
    body = data.get("nvbandwidth") if isinstance(data, dict) else None
    if not isinstance(body, dict) or not isinstance(body.get("testcases"), list):
        raise UserError(
            f'{where}: not nvbandwidth JSON: expected {{"nvbandwidth": {{"testcases": [...]}}}} '
            f"(the output of `nvbandwidth -j`)"
        )
    notes, cases = [], {}
    if body.get("error"):
        notes.append(f"nvbandwidth reported an error: {body['error']}")
    for i, case in enumerate(body["testcases"]):
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            raise UserError(f"{where}: testcases[{i}] has no name")
        name, status = case["name"], case.get("status")
        if name not in USED:
            continue
        if status != "Passed":
            why = f": {case['error']}" if case.get("error") else ""
            notes.append(f"skipped nvbandwidth {name}: status {status!r}, not 'Passed'{why}")
            continue
        values = _cells(case, f"{where}: testcases[{i}] ({name})")
        if not values:
            notes.append(f"skipped nvbandwidth {name}: no measured cell")
            continue
        unit = (
            "ns"
            if str(case.get("bandwidth_description", "")).rstrip().endswith("(ns)") or "latency" in name
            else "GB/s"
        )
        cases[name] = Testcase(name, values, unit)
    return NvbandwidthRun(str(body.get("version", "?")), cases, tuple(notes))


def _cells(case: dict, where: str) -> tuple[float, ...]:
    matrix = case.get("bandwidth_matrix")
    if not isinstance(matrix, list) or not all(isinstance(row, list) for row in matrix):
        raise UserError(f"{where}: bandwidth_matrix must be a list of rows")
    values = []
    for row in matrix:
        for cell in row:
            if cell in ("N/A", None, ""):
                continue
            try:
                v = float(cell)
            except (TypeError, ValueError):
                raise UserError(f"{where}: bandwidth_matrix cell {cell!r} is not a number") from None
            if not math.isfinite(v) or v < 0:
                raise UserError(f"{where}: bandwidth_matrix cell {cell!r} is not a non-negative number")
            if v > 0:
                values.append(v)
    return tuple(values)


def apply_nvbandwidth(cal, run: NvbandwidthRun, base_hw) -> None:
    """Set the figures `run` measured on a Calibration (engramsim.calibrate), marked measured."""
    cases = run.testcases
    for name, key in (("host_to_device_memcpy_ce", "link.h2d_GBps"), ("device_to_host_memcpy_ce", "link.d2h_GBps")):
        if name in cases:
            cal.set(key, round(cases[name].mean, 3), f"measured: {cases[name].describe()}")
    round_trip_s = base_hw.link.read_round_trip_s
    if "host_device_latency_sm" in cases:
        lat = cases["host_device_latency_sm"]
        round_trip_s = lat.mean * 1e-9
        cal.set("link.read_round_trip_us", round(lat.mean / 1e3, 4), f"measured: {lat.describe()}")
    if "host_to_device_memcpy_sm" in cases:
        sm = cases["host_to_device_memcpy_sm"]
        req = base_hw.link.read_request_bytes
        outstanding = max(1, round(sm.mean * 1e9 * round_trip_s / req))
        rtt_from = "measured" if "host_device_latency_sm" in cases else "inherited"
        cal.set(
            "link.max_outstanding_reads",
            int(outstanding),
            f"measured: {sm.describe()} x {rtt_from} read_round_trip_us / read_request_bytes {req} "
            "(Little's law; a lower bound if the link limited the copy)",
        )
    if "device_to_host_memcpy_sm" in cases:
        cal.notes.append(
            f"{cases['device_to_host_memcpy_sm'].describe()}: read, not used (no GPU writes to host are modeled)"
        )
    if "device_local_copy" in cases:
        local = cases["device_local_copy"]
        eff = min(1.0, 2 * local.mean * 1e9 / base_hw.gpu.hbm_bw_Bps)
        cal.set(
            "gpu.hbm_efficiency",
            round(eff, 4),
            f"measured: {local.describe()} x 2 (read + write) over hbm_bw_GBps {base_hw.gpu.hbm_bw_Bps / 1e9:g}",
        )
    cal.notes.extend(run.notes)
    if not cases:
        cal.notes.append("the nvbandwidth file has none of the testcases used: " + ", ".join(USED))
