"""Hardware presets: GPUs, their host link, host memory, CXL memory and NVMe SSDs.

A server preset (hwmodels/<name>.toml) has tables [gpu], [link], [host], [cxl] and [ssd].
Host, CXL and SSD tables usually name a shared part (`part = "ddr5-2s-4800"`, a file under
hwmodels/parts/) and may override any of its keys, so a part's numbers and sources live once.
TOML keys carry units (`hbm_bw_GBps`); the dataclasses hold SI units (bytes, seconds, FLOP/s).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from engramsim.errors import UserError
from engramsim.presets import PRESET_DIRS, build, load_toml, resolve, spec

GB, GiB, MiB, US, NS = 1e9, 2.0**30, 2.0**20, 1e-6, 1e-9
PARTS_DIR = PRESET_DIRS["hardware"] / "parts"


@dataclass(frozen=True)
class GPU:
    name: str = spec("name", kind=str)
    bf16_flops: float = spec("bf16_dense_tflops", scale=1e12)
    # Device memory as the device reports it (nvidia-smi / NVML memory.total, rocm-smi VRAM
    # total), in MiB: marketed "GB" figures are neither MiB nor GiB.
    hbm_bytes: float = spec("hbm_MiB", scale=MiB, hi=2**24)
    hbm_bw_Bps: float = spec("hbm_bw_GBps", scale=GB)
    # Fractions of peak that real kernels reach (documented per preset).
    matmul_efficiency: float = spec("matmul_efficiency", hi=1.0)
    hbm_efficiency: float = spec("hbm_efficiency", hi=1.0)
    # Random-row gathers move whole 32-byte sectors and reach a lower fraction of HBM bandwidth.
    gather_efficiency: float = spec("gather_efficiency", hi=1.0)
    # Fixed host cost of one step of a CPU standing in for the accelerator (`engramsim validate`
    # fits it on its measured baseline). A server's engine costs live in engine presets.
    step_overhead_s: float = spec("step_overhead_us", scale=US, lo=0, lo_open=False, default=0.0)
    kernel_launch_s: float = spec("kernel_launch_us", scale=US, lo=0, lo_open=False, default=5.0)
    # GPU-to-GPU bandwidth per direction (NVLink) and the fixed cost of one all-reduce, for
    # tensor-parallel replicas: each layer all-reduces its attention and MLP outputs.
    nvlink_Bps: float = spec("nvlink_GBps", scale=GB, default=0.0, lo=0, lo_open=False)
    allreduce_latency_s: float = spec("allreduce_latency_us", scale=US, lo=0, lo_open=False, default=0.0)
    # Fixed host cost of each layer's forward (operator dispatch when kernels are not captured
    # in a graph); 0 for engines that replay CUDA graphs.
    layer_overhead_s: float = spec("layer_overhead_us", scale=US, lo=0, lo_open=False, default=0.0)
    # Fixed cost of the Engram fusion at each Engram layer per step (operator dispatch when it
    # is not captured in a graph; measured by `engramsim validate` on a CPU).
    engram_module_overhead_s: float = spec("engram_module_overhead_us", scale=US, lo=0, lo_open=False, default=0.0)
    # ...and its cost per token beyond the roofline (small-tensor elementwise work on a CPU).
    engram_module_s_per_token: float = spec("engram_module_ns_per_token", scale=NS, lo=0, lo_open=False, default=0.0)
    # A CPU standing in for the accelerator (`engramsim validate` on a CPU-only machine): its
    # compute runs on `compute_threads` host cores and competes with CPU gather threads.
    compute_on_host: bool = spec("compute_on_host", kind=bool, default=False)
    compute_threads: int = spec("compute_threads", lo=0, lo_open=False, kind=int, default=0)


@dataclass(frozen=True)
class Link:
    """One GPU's host link (PCIe or NVLink-C2C), per direction."""
    kind: str = spec("kind", kind=str)
    h2d_Bps: float = spec("h2d_GBps", scale=GB)
    d2h_Bps: float = spec("d2h_GBps", scale=GB)
    # Fixed cost of one DMA copy: launch, descriptor setup and completion.
    latency_s: float = spec("latency_us", scale=US)
    # Round trip of one zero-copy read request from the GPU to host memory and back.
    read_round_trip_s: float = spec("read_round_trip_us", scale=US, default=1.5)
    # Zero-copy reads: each request carries `read_request_bytes` of payload plus per-packet
    # overhead, and at most `max_outstanding_reads` can be in flight over one round trip.
    read_request_bytes: int = spec("read_request_bytes", kind=int, default=128)
    packet_overhead_bytes: int = spec("packet_overhead_bytes", lo=0, lo_open=False, kind=int, default=24)
    max_outstanding_reads: int = spec("max_outstanding_reads", kind=int, default=512)


@dataclass(frozen=True)
class Host:
    name: str = spec("name", kind=str)
    dram_bw_Bps: float = spec("dram_bw_GBps", scale=GB)
    dram_latency_s: float = spec("dram_latency_ns", scale=NS)
    dram_bytes: float = spec("dram_GiB", scale=GiB)
    # Fraction of peak DRAM bandwidth that loads and stores sustain (STREAM-like).
    dram_efficiency: float = spec("dram_efficiency", hi=1.0)
    cpu_cores: int = spec("cpu_cores", kind=int)
    # CPU threads one GPU's engine uses to gather rows into pinned staging (dram-copy path).
    gather_threads_per_gpu: int = spec("gather_threads_per_gpu", kind=int)
    # Cache misses one gather thread keeps in flight: rows/s per thread = mlp / latency.
    gather_mlp: float = spec("gather_mlp")
    # Engram n-gram hash, CPU, per token (all heads of one layer).
    hash_s_per_token: float = spec("hash_ns_per_token", scale=NS)
    # Fixed cost of one hash call (one Engram layer): array setup and per-head loop overhead.
    hash_call_s: float = spec("hash_call_us", scale=US, lo=0, lo_open=False, default=0.0)
    # Hash heads per layer of the measured hash (orders x heads per order): a layer with more
    # heads costs proportionally more per token (0: no scaling).
    hash_heads: int = spec("hash_heads", lo=0, lo_open=False, kind=int, default=0)
    # NUMA nodes of one host (sockets, or Grace CPUs): a per-NUMA table copy is this many copies.
    numa_nodes: int = spec("numa_nodes", kind=int, default=1, hi=64)


@dataclass(frozen=True)
class CXL:
    name: str = spec("name", kind=str)
    devices: int = spec("devices", kind=int)
    device_bw_Bps: float = spec("device_bw_GBps", scale=GB)
    device_bytes: float = spec("device_GiB", scale=GiB)
    latency_s: float = spec("latency_ns", scale=NS)
    # A pool behind a switch: every host's traffic crosses it (0 = direct-attached expander).
    switch_bw_Bps: float = spec("switch_bw_GBps", scale=GB, lo=0, lo_open=False, default=0.0)
    switch_latency_s: float = spec("switch_latency_ns", scale=NS, lo=0, lo_open=False, default=0.0)

    @property
    def pooled(self) -> bool:
        return self.switch_bw_Bps > 0

    @property
    def total_latency_s(self) -> float:
        return self.latency_s + self.switch_latency_s


@dataclass(frozen=True)
class SSD:
    name: str = spec("name", kind=str)
    devices: int = spec("devices", kind=int)
    read_iops: float = spec("read_iops_per_device")
    read_bw_Bps: float = spec("read_bw_GBps_per_device", scale=GB)
    latency_s: float = spec("read_latency_us", scale=US)
    device_bytes: float = spec("device_GiB", scale=GiB)
    page_bytes: int = spec("page_bytes", kind=int, default=4096)
    queue_depth: int = spec("queue_depth_per_device", kind=int, default=128)


@dataclass(frozen=True)
class Hardware:
    name: str
    description: str
    gpus_per_host: int
    gpu: GPU
    link: Link
    host: Host
    cxl: CXL | None = None
    ssd: SSD | None = None
    source: Path | None = field(default=None, compare=False)
    # Which figures came from a measured profile (calibrated models) and which were inherited.
    provenance: dict = field(default_factory=dict, compare=False)


SECTIONS = {"gpu": GPU, "link": Link, "host": Host, "cxl": CXL, "ssd": SSD}
TOP_KEYS = {"name", "description", "gpus_per_host", "provenance", *SECTIONS}


def load_hardware(name_or_path: str | Path) -> Hardware:
    path = resolve("hardware", name_or_path)
    return hardware_from_dict(load_toml(path), str(path), path)


def hardware_from_dict(data: dict, where: str, path: Path | None = None) -> Hardware:
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(TOP_KEYS))})")
    for required in ("gpu", "link", "host"):
        if required not in data:
            raise UserError(f"{where}: missing table [{required}]")
    gpus = data.get("gpus_per_host", 8)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise UserError(f"{where}: 'gpus_per_host' must be a whole number >= 1, got {gpus!r}")
    sections = {name: build(cls, _with_part(data[name], f"{where} [{name}]"), f"{where} [{name}]")
                for name, cls in SECTIONS.items() if name in data}
    return Hardware(name=str(data.get("name", path.stem if path else "custom")),
                    description=str(data.get("description", "")), gpus_per_host=gpus,
                    source=path, provenance=dict(data.get("provenance", {})), **sections)


def hardware_to_dict(hw: Hardware) -> dict:
    """A Hardware back into TOML units (the inverse of hardware_from_dict, parts resolved)."""
    data = {"name": hw.name, "description": hw.description, "gpus_per_host": hw.gpus_per_host}
    for section in SECTIONS:
        obj = getattr(hw, section)
        if obj is None:
            continue
        table = {}
        for f in fields(obj):
            meta = f.metadata
            if "key" not in meta:
                continue
            value = getattr(obj, f.name)
            if meta["kind"] in (int, float):
                value = value / meta["scale"] if meta["scale"] != 1 else value
                value = int(round(value)) if meta["kind"] is int else float(value)
            elif meta["kind"] is list:
                value = list(value)
            table[meta["key"]] = value
        data[section] = table
    return data


def _with_part(table: dict, where: str) -> dict:
    """Merge a section's named part (hwmodels/parts/<part>.toml) under its own overrides."""
    if not isinstance(table, dict) or "part" not in table:
        return table
    merged = load_toml(_part_path(table["part"], where))
    merged.update({k: v for k, v in table.items() if k != "part"})
    return merged


def _part_path(part, where: str) -> Path:
    path = PARTS_DIR / f"{part}.toml"
    if not isinstance(part, str) or not path.is_file():
        known = ", ".join(sorted(p.stem for p in PARTS_DIR.glob("*.toml")))
        raise UserError(f"{where}: unknown part {part!r} (known: {known})")
    return path


def with_cxl_part(hw: Hardware, part: str) -> Hardware:
    """`hw` with its CXL memory swapped for a part under hwmodels/parts/ (`simulate --cxl`)."""
    path = _part_path(part, "--cxl")
    return replace(hw, cxl=build(CXL, load_toml(path), str(path)))
