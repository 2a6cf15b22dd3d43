"""Profile -> Hardware: fit the figures the simulator uses from a measured profile.

Fits (each from the profile's long-format rows):
  link         t = latency + bytes / bandwidth over the pinned h2d / d2h size sweep
               (least squares on relative error, so 4 KiB and 1 GiB points weigh alike)
  gather       seconds per row against table size: s_per_row = a + b * log2(table_bytes), over
               the largest measured sizes; a larger table is evaluated along that line and
               flagged `extrapolated` (random access over more memory misses caches and TLBs)
  host         gather_mlp = measured rows/s per thread x dram latency (so the simulator's
               rows/s = mlp / latency reproduces the measurement); dram_bw = memcpy traffic
  ssd          cold pread 4 KiB: IOPS (best queue depth) and queue-depth-1 latency
  hash         t = call + tokens x per-token over the measured batch sizes (one size: ns per
               token at it); the call cost also scales an engine's host costs (ref_hash_call_us)
  uva          t = t0 + rows / rate over rows per call -> max outstanding reads at the base's
               round trip

Whatever was not measured comes from the base preset. `Calibration.provenance` maps every
TOML key path to "measured: ...", "inherited: <base>" or "extrapolated: ...".
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from engramsim import costs
from engramsim.errors import UserError
from engramsim.fileio import write_atomic
from engramsim.hardware import (
    GPU,
    SECTIONS,
    SSD,
    Hardware,
    Host,
    Link,
    hardware_from_dict,
    hardware_to_dict,
    load_hardware,
)
from engramsim.presets import load_toml
from engramsim.profile_io import Profile, load_profile
from engramsim.units import GiB, MiB

# --- fits -------------------------------------------------------------------------------------


def fit_line(x, y, relative: bool = True) -> tuple[float, float]:
    """Least-squares (intercept, slope) of y = a + b x; `relative` weighs each point by 1/y."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a line fit needs two or more distinct x values")
    w = 1.0 / y if relative else np.ones_like(y)
    design = np.stack([np.ones_like(x), x], axis=1) * w[:, None]
    (a, b), *_ = np.linalg.lstsq(design, y * w, rcond=None)
    return float(a), float(b)


def fit_link(rows: list[dict]) -> tuple[float, float]:
    """(latency_s, bandwidth B/s) from copy rows with `params.bytes` and `median_s`."""
    a, b = fit_line([r["params"]["bytes"] for r in rows], [r["median_s"] for r in rows])
    if b <= 0:
        raise ValueError("copy time does not grow with size")
    return max(a, 0.0), 1.0 / b


@dataclass(frozen=True)
class GatherCurve:
    """Seconds per gathered row against table size: a + b log2(table_bytes), b >= 0."""

    intercept_s: float
    slope_s_per_doubling: float
    min_table_bytes: float
    max_table_bytes: float

    def at(self, table_bytes: float) -> tuple[float, bool]:
        """(seconds per row, extrapolated?) for a table of `table_bytes`."""
        s = self.intercept_s + self.slope_s_per_doubling * math.log2(table_bytes)
        return max(s, 1e-12), table_bytes > self.max_table_bytes


def fit_gather_curve(rows: list[dict], min_fit_bytes: float = 32 * MiB, points: int = 4) -> GatherCurve:
    """Fit seconds per row (median_s / rows) over the tables of at least `min_fit_bytes` (the
    largest two if fewer), at most the `points` largest: tables that fit in the caches say
    nothing about large ones."""
    by_size = {}
    for r in rows:
        by_size.setdefault(r["params"]["table_bytes"], []).append(r["median_s"] / r["params"]["rows"])
    large = [s for s in sorted(by_size) if s >= min_fit_bytes]
    sizes = (large if len(large) >= 2 else sorted(by_size)[-2:])[-points:]
    if not sizes:
        raise ValueError("no gather rows")
    cost = [float(np.median(by_size[s])) for s in sizes]
    if len(sizes) == 1:
        a, b = cost[0], 0.0
    else:
        a, b = fit_line(np.log2(sizes), cost)
        if b < 0:  # a larger table is never cheaper per row: flat at the largest measurement
            a, b = cost[-1], 0.0
    if b == 0.0:
        a = cost[-1]
    return GatherCurve(a, b, float(min(sizes)), float(max(sizes)))


def _main_gather_rows(profile: Profile, name: str, threads: int = 1, row_bytes: int | None = None) -> list[dict]:
    """Uniform gathers at the largest rows per call, for one thread count and row size
    (the measured row size closest to 160 B, an Engram-27B row, unless given)."""
    rows = [r for r in profile.find(name, dist="uniform", threads=threads)]
    if not rows:
        return []
    if row_bytes is None:
        row_bytes = min({r["params"]["row_bytes"] for r in rows}, key=lambda b: (abs(b - 160), b))
    rows = [r for r in rows if r["params"]["row_bytes"] == row_bytes]
    most = max(r["params"]["rows"] for r in rows)
    return [r for r in rows if r["params"]["rows"] == most]


def _best(rows: list[dict], key: str) -> dict | None:
    rows = [r for r in rows if r.get(key) is not None]
    return max(rows, key=lambda r: r[key]) if rows else None


# --- the CPU as a device (for validation on a CPU-only machine) -------------------------------


def cpu_device_from_profile(profile: Profile | str | Path) -> dict:
    """The fitted figures that describe this CPU machine as if the CPU were the accelerator.

    SI units; a figure whose benchmark is absent is None.
      cpu_model, cores, dram_bytes
      matmul_flops            {dtype: best FLOP/s over the measured decoder-layer shapes}
      matmul_points           [{dtype, m, k, n, flops_per_s}] every measured shape
      memcpy_Bps              bytes copied per second (best thread count); DRAM traffic is 2x
      gather_rows_per_s       {threads: rows/s} at the largest table, uniform, ~160 B rows
      gather_rows_per_s_per_thread   one thread, largest table
      gather_curve            GatherCurve (per-row seconds vs table bytes; extrapolate with .at())
      gather_call_overhead_s  fixed cost of one gather call (fit over rows per call)
      ssd                     {"<method>_<cache>": {"iops": best, "latency_s": qd1 4 KiB}}
      hash_s_per_token        Engram hash at the largest batch
      hash_fit                (call s, per-token s) over the batch sizes, or None with one size
      overlap                 {"matmul_slowdown", "gather_slowdown"} with one gather thread
    """
    profile = profile if isinstance(profile, Profile) else load_profile(profile)
    host = profile.host
    out: dict = {
        "cpu_model": host.get("cpu_model"),
        "cores": host.get("cpu_cores_usable") or host.get("cpu_cores"),
        "dram_bytes": host.get("memory_total_bytes"),
    }
    mm = profile.find("cpu_matmul")
    out["matmul_points"] = [
        {**{k: r["params"][k] for k in ("dtype", "m", "k", "n")}, "flops_per_s": r["flops"] / r["median_s"]} for r in mm
    ]
    out["matmul_flops"] = {}
    for p in out["matmul_points"]:
        out["matmul_flops"][p["dtype"]] = max(out["matmul_flops"].get(p["dtype"], 0.0), p["flops_per_s"])
    best_copy = _best(profile.find("memcpy"), "GBps")
    out["memcpy_Bps"] = best_copy["GBps"] * 1e9 if best_copy else None
    out.update(_gather_figures(profile))
    out["ssd"] = _ssd_figures(profile)
    hashes = profile.find("hash")
    out["hash_s_per_token"] = max(hashes, key=lambda r: r["tokens"])["ns_per_token"] * 1e-9 if hashes else None
    out["hash_fit"] = _hash_fit(hashes)
    out["overlap"] = {
        f"{stage}_slowdown": (r[0]["slowdown"] if r else None)
        for stage, r in (
            ("matmul", profile.find("overlap", path="cpu", stage="matmul", **{"with": "gather"})),
            ("gather", profile.find("overlap", path="cpu", stage="gather", **{"with": "matmul"})),
        )
    }
    return out


def _gather_figures(profile: Profile, name: str = "dram_gather") -> dict:
    one = _main_gather_rows(profile, name)
    if not one:
        return {
            "gather_rows_per_s": {},
            "gather_rows_per_s_per_thread": None,
            "gather_curve": None,
            "gather_call_overhead_s": None,
        }
    curve = fit_gather_curve(one)
    row_bytes, largest = one[0]["params"]["row_bytes"], max(r["params"]["table_bytes"] for r in one)
    per_threads = {}
    for r in profile.find(
        name, dist="uniform", row_bytes=row_bytes, table_bytes=largest, rows=one[0]["params"]["rows"]
    ):
        per_threads[r["params"]["threads"]] = r["rows_per_s"]
    sweep = sorted(
        profile.find(name, dist="uniform", threads=1, row_bytes=row_bytes, table_bytes=largest),
        key=lambda r: r["params"]["rows"],
    )
    overhead = None
    if len({r["params"]["rows"] for r in sweep}) >= 2:
        overhead = max(fit_line([r["params"]["rows"] for r in sweep], [r["median_s"] for r in sweep])[0], 0.0)
    return {
        "gather_rows_per_s": per_threads,
        "gather_rows_per_s_per_thread": per_threads.get(1),
        "gather_curve": curve,
        "gather_call_overhead_s": overhead,
        "gather_row_bytes": row_bytes,
    }


def _ssd_figures(profile: Profile) -> dict:
    figures = {}
    for method in ("pread", "mmap"):
        for cache in ("cold", "warm"):
            rows = profile.find("ssd_read", method=method, cache=cache)
            if not rows:
                continue
            page = max(
                (r for r in rows if r["params"]["row_bytes"] <= 4096),
                key=lambda r: r["params"]["row_bytes"],
                default=rows[0],
            )["params"]["row_bytes"]
            at_page = [r for r in rows if r["params"]["row_bytes"] == page]
            qd1 = [r for r in at_page if r["params"]["queue_depth"] == 1]
            figures[f"{method}_{cache}"] = {
                "row_bytes": page,
                "iops": max(r["iops"] for r in at_page),
                "latency_s": qd1[0]["latency_us"] * 1e-6 if qd1 else None,
            }
    return figures


# --- profile -> hardware model ----------------------------------------------------------------


@dataclass
class Calibration:
    """A hardware model as TOML data, with where every figure came from."""

    data: dict
    provenance: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def set(self, path: str, value, why: str):
        section, key = path.split(".")
        self.data[section][key] = value
        self.provenance[path] = why

    def hardware(self, where: str = "calibrated profile") -> Hardware:
        return hardware_from_dict({**self.data, "provenance": dict(self.provenance)}, where)


def calibrate(
    profile: Profile | None, base: str = "h800", table_GiB: float | None = None, nvbandwidth=None
) -> Calibration:
    """Fit what `profile` measured onto the base preset. `table_GiB` evaluates the gather
    curves at that table size (flagged extrapolated beyond the measured sizes). `nvbandwidth`
    (engramsim.nvbandwidth.NvbandwidthRun) sets the link and HBM figures it measured, over the
    profile's."""
    base_hw = load_hardware(base)
    data = hardware_to_dict(base_hw)
    sources = ([f"the profile of {profile.label} ({profile.created})"] if profile else []) + (
        [f"nvbandwidth {nvbandwidth.version}"] if nvbandwidth else []
    )
    host = profile.host.get("hostname", "host") if profile else "nvbandwidth"
    data["name"] = f"{host}-calibrated"
    data["description"] = f"calibrated from {' and '.join(sources)}; unmeasured figures from {base}"
    cal = Calibration(data)
    for section in SECTIONS:
        for key in data.get(section, {}):
            cal.provenance[f"{section}.{key}"] = f"inherited: {base}"
    if profile:
        _calibrate_host(cal, profile, base_hw, table_GiB)
        _calibrate_ssd(cal, profile)
        _calibrate_os(cal, profile)
        _calibrate_gpu(cal, profile, base_hw, table_GiB)
        _calibrate_link(cal, profile, base_hw)
    if nvbandwidth:
        from engramsim.nvbandwidth import apply_nvbandwidth

        apply_nvbandwidth(cal, nvbandwidth, base_hw)
    cal.data["provenance"] = cal.provenance
    if profile:
        cal.notes.insert(0, profile_usage(profile, cal))
    return cal


def _table_bytes(curve: GatherCurve, table_GiB: float | None) -> float:
    return table_GiB * GiB if table_GiB else curve.max_table_bytes


def _curve_why(name: str, curve: GatherCurve, at: float, extrapolated: bool, table_GiB: float | None) -> str:
    span = f"fit over {curve.min_table_bytes / GiB:.3g}-{curve.max_table_bytes / GiB:.3g} GiB"
    where = f"--table-GiB {table_GiB:g}" if table_GiB else f"{at / GiB:.3g} GiB"
    if extrapolated:
        return f"extrapolated: {name} {span}, evaluated at {where}"
    return f"measured: {name} ({span}, at {where})"


def _calibrate_host(cal: Calibration, profile: Profile, base_hw: Hardware, table_GiB):
    host = profile.host
    if host.get("cpu_model"):
        cal.set("host.name", host["cpu_model"], "measured: /proc/cpuinfo")
    if host.get("cpu_cores"):
        cal.set("host.cpu_cores", int(host["cpu_cores"]), "measured: os.cpu_count")
    if host.get("memory_total_bytes"):
        cal.set("host.dram_GiB", round(host["memory_total_bytes"] / GiB, 3), "measured: /proc/meminfo")
    cpu = cpu_device_from_profile(profile)
    if cpu["memcpy_Bps"]:
        cal.set(
            "host.dram_bw_GBps",
            round(2 * cpu["memcpy_Bps"] / 1e9, 3),
            "measured: memcpy (read + write traffic, sustained)",
        )
        cal.set("host.dram_efficiency", 1.0, "measured: memcpy is already a sustained figure")
    curve = cpu["gather_curve"]
    if curve:
        at = _table_bytes(curve, table_GiB)
        s_per_row, extrapolated = curve.at(at)
        mlp = base_hw.host.dram_latency_s / s_per_row
        cal.set(
            "host.gather_mlp",
            round(mlp, 4),
            _curve_why("dram_gather", curve, at, extrapolated, table_GiB)
            + f"; rows/s per thread x inherited dram_latency_ns {base_hw.host.dram_latency_s * 1e9:g}",
        )
    if cpu["hash_fit"]:
        call_s, per_token_s = cpu["hash_fit"]
        why = f"measured: hash, a + b x tokens through {len({r['tokens'] for r in profile.find('hash')})} batch sizes"
        cal.set("host.hash_call_us", round(call_s * 1e6, 3), why)
        cal.set("host.hash_ns_per_token", round(per_token_s * 1e9, 3), why)
        heads = {r["params"].get("heads") for r in profile.find("hash")} - {None}
        if len(heads) == 1:
            cal.set("host.hash_heads", heads.pop(), "measured: hash heads of the profiled layer")
    elif cpu["hash_s_per_token"]:
        cal.set("host.hash_ns_per_token", round(cpu["hash_s_per_token"] * 1e9, 3), "measured: hash (largest batch)")


def _hash_fit(hashes: list[dict]) -> tuple[float, float] | None:
    """(seconds per call, seconds per token) by least squares over the measured batch sizes: the
    call cost is what engines pay per step and layer, and what scales an engine's host costs."""
    if len({r["tokens"] for r in hashes}) < 2:
        return None
    per_token, call = np.polyfit([r["tokens"] for r in hashes], [r["median_s"] for r in hashes], 1)
    return max(call, 0.0), max(per_token, 0.0)


def _calibrate_ssd(cal: Calibration, profile: Profile):
    cold = cpu_device_from_profile(profile)["ssd"].get("pread_cold")
    if not cold:
        return
    if "ssd" not in cal.data:
        cal.notes.append("ssd_read was measured but the base preset has no [ssd]: not calibrated")
        return
    disk = profile.host.get("scratch_disk", {})
    cal.set("ssd.name", f"{disk.get('device', 'scratch disk')} ({disk.get('fstype', '?')})", "measured: /proc/mounts")
    cal.set("ssd.devices", 1, "measured: one scratch device")
    cal.set(
        "ssd.read_iops_per_device",
        round(cold["iops"], 1),
        f"measured: ssd_read pread cold {cold['row_bytes']} B, best queue depth",
    )
    if cold["latency_s"]:
        cal.set(
            "ssd.read_latency_us",
            round(cold["latency_s"] * 1e6, 3),
            f"measured: ssd_read pread cold {cold['row_bytes']} B, queue depth 1",
        )


def _calibrate_os(cal: Calibration, profile: Profile):
    """The mmap read-around window: the scratch device's read-ahead, as the profile recorded it."""
    disk = profile.host.get("scratch_disk", {})
    ahead = disk.get("read_ahead_bytes")
    if not ahead or "os" not in cal.data:
        return
    pages = max(1, ahead // cal.data["os"]["page_bytes"])
    cal.set(
        "os.mmap_readahead_pages",
        pages,
        f"measured: read_ahead_kb {ahead // 1024} of {disk.get('device', 'the scratch disk')} (/sys/class/bdi)",
    )


def _calibrate_gpu(cal: Calibration, profile: Profile, base_hw: Hardware, table_GiB):
    if profile.gpu is None:
        cal.notes.append("no GPU in the profile: [gpu] and [link] are the base preset's")
        return
    cal.set("gpu.name", profile.gpu["name"], "measured: torch/NVML")
    cal.set("gpu.hbm_MiB", round(profile.gpu["memory_bytes"] / MiB), "measured: torch/NVML total memory")
    one = _main_gather_rows(profile, "hbm_gather")
    if one:
        curve = fit_gather_curve(one)
        at = _table_bytes(curve, table_GiB)
        s_per_row, extrapolated = curve.at(at)
        bps = one[0]["params"]["row_bytes"] / s_per_row
        eff = min(1.0, bps / base_hw.gpu.hbm_bw_Bps)
        cal.set(
            "gpu.gather_efficiency",
            round(eff, 4),
            _curve_why("hbm_gather", curve, at, extrapolated, table_GiB)
            + f"; over inherited hbm_bw_GBps {base_hw.gpu.hbm_bw_Bps / 1e9:g}",
        )
    mm = profile.find("overlap", path="gpu", stage="matmul", **{"with": "none"})
    if mm:
        eff = min(1.0, mm[0]["GFLOPs"] * 1e9 / base_hw.gpu.bf16_flops)
        cal.set("gpu.matmul_efficiency", round(eff, 4), "measured: overlap bf16 matmul over inherited peak")


def _calibrate_link(cal: Calibration, profile: Profile, base_hw: Hardware):
    latencies = []
    for name in ("h2d", "d2h"):
        rows = profile.find(name, memory="pinned")
        if len(rows) >= 2:
            latency, bw = fit_link(rows)
            cal.set(f"link.{name}_GBps", round(bw / 1e9, 3), f"measured: {name} pinned size sweep (fit)")
            latencies.append(latency)
    if latencies:
        cal.set("link.latency_us", round(float(np.mean(latencies)) * 1e6, 3), "measured: h2d/d2h pinned fit intercept")
    uva = sorted(
        _main_gather_rows(profile, "uva_gather") and profile.find("uva_gather", dist="uniform", threads=1),
        key=lambda r: r["params"]["rows"],
    )
    largest = max((r["params"]["table_bytes"] for r in uva), default=None)
    sweep = [r for r in uva if r["params"]["table_bytes"] == largest]
    if len({r["params"]["rows"] for r in sweep}) >= 2:
        rb = sweep[0]["params"]["row_bytes"]
        _, s_per_row = fit_line([r["params"]["rows"] for r in sweep], [r["median_s"] for r in sweep])
        if s_per_row > 0:
            requests = math.ceil(rb / base_hw.link.read_request_bytes)
            outstanding = requests / s_per_row * base_hw.link.read_round_trip_s
            cal.set(
                "link.max_outstanding_reads",
                max(1, int(round(outstanding))),
                f"measured: uva_gather rows sweep ({rb} B rows) x inherited read_round_trip_us",
            )


def hardware_from_profile(profile_path: str | Path, base: str = "h800", table_GiB: float | None = None) -> Hardware:
    """The hardware model of the profiled machine: measured figures over the base preset."""
    profile = load_profile(profile_path)
    return check_calibration(calibrate(profile, base, table_GiB))


# --- the machine a validation runs on ----------------------------------------------------------
# `engramsim validate` describes the machine its real model ran on to the simulator: the CPU
# standing in for the accelerator on a CPU-only machine, or the GPU over a server preset.

GPU_BASE_PRESET = "h200"


def cpu_hardware(cpu: dict, threads: int, row_bytes: int, table_bytes: float) -> Hardware:
    """This machine, with its CPU standing in for the GPU, from `cpu_device_from_profile`."""
    _require(cpu, "matmul_flops", "memcpy_Bps", "gather_rows_per_s_per_thread", "hash_s_per_token")
    read_Bps = 2 * cpu["memcpy_Bps"]  # memcpy moves each byte twice; a read-only stream, once
    per_thread = _rows_per_s(cpu, 1, table_bytes)
    inline = _rows_per_s(cpu, threads, table_bytes)
    sector = -(-row_bytes // costs.GPU_SECTOR_BYTES) * costs.GPU_SECTOR_BYTES
    latency_s = 100e-9  # nominal; the gather rate below is what was measured
    gpu = GPU(
        name=f"{cpu.get('cpu_model') or 'CPU'} as device",
        bf16_flops=cpu["matmul_flops"]["fp32"],
        hbm_bytes=float(cpu["dram_bytes"]),
        hbm_bw_Bps=read_Bps,
        matmul_efficiency=1.0,
        hbm_efficiency=1.0,
        gather_efficiency=min(1.0, inline * sector / read_Bps),
        kernel_launch_s=cpu.get("gather_call_overhead_s") or 0.0,
        compute_on_host=True,
        compute_threads=threads,
    )
    # The prefetch thread gathers straight into the buffer the Engram layer reads: no link copy.
    link = Link(kind="none (CPU: staging is used in place)", h2d_Bps=1e15, d2h_Bps=1e15, latency_s=1e-9)
    host = Host(
        name="this machine",
        dram_bw_Bps=read_Bps,
        dram_latency_s=latency_s,
        dram_bytes=float(cpu["dram_bytes"]),
        dram_efficiency=1.0,
        cpu_cores=int(cpu["cores"]),
        gather_threads_per_gpu=1,
        gather_mlp=per_thread * latency_s,
        hash_s_per_token=cpu["hash_s_per_token"],
    )
    return Hardware(
        name="this-machine",
        description="this CPU as the accelerator, from a profile",
        gpus_per_host=1,
        gpu=gpu,
        link=link,
        host=host,
        ssd=_page_reads(cpu),
    )


def gpu_hardware(profile: Profile, threads: int, table_bytes: float) -> Hardware:
    """This machine with its GPU, from a profile that measured it, over the h200 preset.

    The real run is one GPU alone on its host, gathering with the harness's torch threads, and
    its engine overheads are fitted from the validation's baseline: the preset's engine figures
    (fitted to nano-vLLM on 8 GPUs) are zeroed rather than inherited.
    """
    if profile.gpu is None:
        raise UserError("the profile has no GPU measurements: run `engramsim profile` on this GPU machine first")
    cal = calibrate(profile, base=GPU_BASE_PRESET, table_GiB=table_bytes / GiB)
    hw = cal.hardware(f"calibration of the profile over {GPU_BASE_PRESET}")
    gpu = replace(hw.gpu, step_overhead_s=0.0, layer_overhead_s=0.0)
    host = replace(hw.host, gather_threads_per_gpu=max(1, threads))
    return replace(hw, name="this-gpu-machine", gpus_per_host=1, gpu=gpu, host=host)


def machine_hardware(profile: Profile, device: str, threads: int, row_bytes: int, table_bytes: float) -> Hardware:
    """The machine the real model ran on (`device` "cpu" or "cuda"), as the simulator's hardware."""
    if device == "cuda":
        return gpu_hardware(profile, threads, table_bytes)
    return cpu_hardware(cpu_device_from_profile(profile), threads, row_bytes, table_bytes)


def with_page_faults(hw: Hardware, fault_s: float | None) -> Hardware:
    """Page faults timed on the model's own table file replace the profile's generic figure."""
    if not fault_s:
        return hw
    return replace(hw, ssd=_page_fault_ssd(1.0 / fault_s, fault_s))


def _rows_per_s(cpu: dict, threads: int, table_bytes: float) -> float:
    """Measured gather rate, rescaled from the profiled table size to the model's table size."""
    by_threads = cpu.get("gather_rows_per_s") or {}
    rate = by_threads.get(threads) or by_threads.get(max(by_threads, default=1)) or cpu["gather_rows_per_s_per_thread"]
    curve = cpu.get("gather_curve")
    if curve:
        at_table, _ = curve.at(table_bytes)
        at_profiled, _ = curve.at(curve.max_table_bytes)
        if at_table > 0 and at_profiled > 0:
            rate *= at_profiled / at_table
    return rate


def _page_fault_ssd(iops: float, latency_s: float) -> SSD:
    return SSD(
        name="scratch disk (mmap page faults)",
        devices=1,
        read_iops=iops,
        read_bw_Bps=1e12,
        latency_s=latency_s,
        device_bytes=1e15,
        page_bytes=4096,
        queue_depth=1,
    )


def _page_reads(cpu: dict) -> SSD | None:
    """A cold memory-mapped gather faults one page at a time in the gathering thread: queue
    depth one, at the measured mmap page-read latency."""
    cold = (cpu.get("ssd") or {}).get("mmap_cold")
    if not cold:
        return None
    return _page_fault_ssd(cold["iops"], cold["latency_s"])


def _require(cpu: dict, *keys):
    missing = [k for k in keys if not cpu.get(k)]
    if missing:
        raise UserError(f"the profile lacks {', '.join(missing)}: run `engramsim profile --quick` first")


# --- TOML output ------------------------------------------------------------------------------


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, float):
        return repr(float(f"{value:.12g}"))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def to_toml(data: dict, header: str = "") -> str:
    """Scalars first, then one [table] per dict; keys with dots are quoted."""
    key = lambda k: k if k.replace("_", "").isalnum() else json.dumps(k)  # noqa: E731
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"] + [f"{key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_calibration(cal: Calibration, path: str | Path, source: str = "") -> Path:
    """Check the model loads, then replace `path` atomically: a bad fit never clobbers a file."""
    path = Path(path)
    check_calibration(cal)
    header = f"engramsim calibrate {source}\n" + "\n".join(f"note: {n}" for n in cal.notes)
    write_atomic(path, to_toml(cal.data, header))
    hardware_from_dict(load_toml(path), str(path), path)  # what we wrote must load
    return path


def check_calibration(cal: Calibration) -> Hardware:
    """The calibrated model, or one line naming the bad figure and where it came from."""
    try:
        return cal.hardware("calibrated model")
    except UserError as e:
        found = re.search(r"\[(\w+)\]: '(\w+)'", str(e))
        why = cal.provenance.get(f"{found[1]}.{found[2]}") if found else None
        raise UserError(f"{e}" + (f" (this figure is {why})" if why else "")) from None


def profile_usage(profile: Profile, cal: Calibration) -> str:
    """How much of the profile the calibration used, in one line (partial profiles say so)."""
    benchmarks = sorted({m["name"] for m in profile.measurements})
    measured = sum(1 for why in cal.provenance.values() if not why.startswith("inherited"))
    used = (
        f"{len(profile.measurements)} measured points from {len(benchmarks)} benchmarks "
        f"({', '.join(benchmarks)}) gave {measured} of {len(cal.provenance)} figures; the rest are inherited"
    )
    if profile.partial:
        return f"partial profile (interrupted): only {used}"
    return used
