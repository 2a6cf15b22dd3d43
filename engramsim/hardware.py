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
from engramsim.topology import RDMA, Topology, check_rdma, check_topology, single_socket
from engramsim.units import GB, NS, US, GiB, MiB

PARTS_DIR = PRESET_DIRS["hardware"] / "parts"
MAX_GPUS_PER_HOST = 1024  # one NVLink domain: 72 GPUs in an NVL72 rack today


# Upper bounds (`hi`) reject typos and absurd magnitudes, with room far beyond today's parts:
# a B200 has ~2,250 dense BF16 TFLOPS, 180 GiB of HBM at 8 TB/s, 900 GB/s of NVLink, so a GPU is
# bounded at 1e5 TFLOPS, 16 TiB, 1 PB/s and 100 TB/s. Host links (PCIe Gen5 x16 ~64 GB/s,
# NVLink-C2C 450 GB/s), DRAM (a few hundred GB/s, 100 ns, up to 32 TiB per host), CXL and SSDs
# (~3M IOPS, 14 GB/s, NVMe queue depth 65,536) are bounded at 100-10,000x today's figures.
# Latencies and per-step costs are bounded at 1 s (10 s per step), core and thread counts at
# 100,000, and device counts at 4,096 per host or pool.
@dataclass(frozen=True)
class GPU:
    name: str = spec("name", kind=str)
    bf16_flops: float = spec("bf16_dense_tflops", scale=1e12, hi=1e5)
    # Device memory as the device reports it (nvidia-smi / NVML memory.total, rocm-smi VRAM
    # total), in MiB: marketed "GB" figures are neither MiB nor GiB.
    hbm_bytes: float = spec("hbm_MiB", scale=MiB, hi=2**24)
    hbm_bw_Bps: float = spec("hbm_bw_GBps", scale=GB, hi=1e6)
    # Fractions of peak that real kernels reach (documented per preset).
    matmul_efficiency: float = spec("matmul_efficiency", hi=1.0)
    hbm_efficiency: float = spec("hbm_efficiency", hi=1.0)
    # Random-row gathers move whole 32-byte sectors and reach a lower fraction of HBM bandwidth.
    gather_efficiency: float = spec("gather_efficiency", hi=1.0)
    # Fixed host cost of one step of a CPU standing in for the accelerator (`engramsim validate`
    # fits it on its measured baseline). A server's engine costs live in engine presets.
    step_overhead_s: float = spec("step_overhead_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e7)
    kernel_launch_s: float = spec("kernel_launch_us", scale=US, lo=0, lo_open=False, default=5.0, hi=1e6)
    # GPU-to-GPU bandwidth per direction (NVLink) and the fixed cost of one all-reduce, for
    # tensor-parallel replicas: each layer all-reduces its attention and MLP outputs. The same
    # small-message floor starts each all-gather and reduce-scatter of an expert-parallel token
    # exchange (`costs.ep_exchange_s`).
    nvlink_Bps: float = spec("nvlink_GBps", scale=GB, default=0.0, lo=0, lo_open=False, hi=1e5)
    allreduce_latency_s: float = spec("allreduce_latency_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e6)
    # Fixed host cost of each layer's forward (operator dispatch when kernels are not captured
    # in a graph); 0 for engines that replay CUDA graphs.
    layer_overhead_s: float = spec("layer_overhead_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e6)
    # GPU time every kernel takes beyond its roofline, even replayed in a CUDA graph: its grid's
    # launch, ramp-up and tail, and the wait on the kernel before it. Tiny kernels cost about this
    # much each; a step of many pays it many times (`costs.kernels_fixed_s`).
    kernel_fixed_s: float = spec("kernel_fixed_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e6)
    # Fixed cost of the Engram fusion at each Engram layer per step (operator dispatch when it
    # is not captured in a graph; measured by `engramsim validate` on a CPU).
    engram_module_overhead_s: float = spec(
        "engram_module_overhead_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e6
    )
    # ...and its cost per token beyond the roofline (small-tensor elementwise work on a CPU).
    engram_module_s_per_token: float = spec(
        "engram_module_ns_per_token", scale=NS, lo=0, lo_open=False, default=0.0, hi=1e9
    )
    # A CPU standing in for the accelerator (`engramsim validate` on a CPU-only machine): its
    # compute runs on `compute_threads` host cores and competes with CPU gather threads.
    compute_on_host: bool = spec("compute_on_host", kind=bool, default=False)
    compute_threads: int = spec("compute_threads", lo=0, lo_open=False, kind=int, default=0, hi=1e5)
    # A CPU BLAS multiplies a few rows as one matrix-vector product per row, each streaming
    # all the weights, and packs the weights into one matrix product above that: up to
    # `gemv_max_rows` rows a matmul costs rows x weight bytes / `gemv_GBps` (`engramsim
    # validate` fits both on its baseline; 0 = off, the roofline alone).
    gemv_max_rows: int = spec("gemv_max_rows", lo=0, lo_open=False, kind=int, default=0, hi=1e5)
    gemv_Bps: float = spec("gemv_GBps", scale=GB, default=0.0, lo=0, lo_open=False, hi=1e6)
    # ...and whether, above it, packing the weights and multiplying run one after the other (a
    # single-threaded BLAS: the two terms add) rather than overlapping (the roofline's max).
    packed_serial: bool = spec("packed_serial", kind=bool, default=False)
    # The LM head of a CPU stand-in, priced apart: its weights (vocab x hidden, far larger than
    # a layer's) stream from memory, not cache. Up to `gemv_max_rows` rows: rows x weight bytes
    # / `head_gemv_GBps`; above, packing (weight bytes / `head_weights_GBps`) then multiplying
    # (FLOPs / `head_GFLOPs`). `engramsim validate` fits them on its baseline's timed heads;
    # 0 = off, the head is priced as any matmul.
    head_gemv_Bps: float = spec("head_gemv_GBps", scale=GB, default=0.0, lo=0, lo_open=False, hi=1e6)
    head_weights_Bps: float = spec("head_weights_GBps", scale=GB, default=0.0, lo=0, lo_open=False, hi=1e6)
    head_flops: float = spec("head_GFLOPs", scale=1e9, default=0.0, lo=0, lo_open=False, hi=1e8)


@dataclass(frozen=True)
class Link:
    """One GPU's host link (PCIe or NVLink-C2C), per direction."""

    kind: str = spec("kind", kind=str)
    h2d_Bps: float = spec("h2d_GBps", scale=GB, hi=1e5)
    d2h_Bps: float = spec("d2h_GBps", scale=GB, hi=1e5)
    # Fixed cost of one DMA copy: launch, descriptor setup and completion.
    latency_s: float = spec("latency_us", scale=US, hi=1e6)
    # Round trip of one zero-copy read request from the GPU to host memory and back.
    read_round_trip_s: float = spec("read_round_trip_us", scale=US, default=1.5, hi=1e6)
    # Zero-copy reads: each request carries `read_request_bytes` of payload plus per-packet
    # overhead, and at most `max_outstanding_reads` can be in flight over one round trip.
    read_request_bytes: int = spec("read_request_bytes", kind=int, default=128, hi=65536)
    packet_overhead_bytes: int = spec("packet_overhead_bytes", lo=0, lo_open=False, kind=int, default=24, hi=65536)
    max_outstanding_reads: int = spec("max_outstanding_reads", kind=int, default=512, hi=1e7)


@dataclass(frozen=True)
class Host:
    name: str = spec("name", kind=str)
    dram_bw_Bps: float = spec("dram_bw_GBps", scale=GB, hi=1e5)
    dram_latency_s: float = spec("dram_latency_ns", scale=NS, hi=1e6)
    dram_bytes: float = spec("dram_GiB", scale=GiB, hi=1048576)
    # Fraction of peak DRAM bandwidth that loads and stores sustain (STREAM-like).
    dram_efficiency: float = spec("dram_efficiency", hi=1.0)
    cpu_cores: int = spec("cpu_cores", kind=int, hi=1e5)
    # CPU threads one GPU's engine uses to gather rows into pinned staging (dram-copy path).
    gather_threads_per_gpu: int = spec("gather_threads_per_gpu", kind=int, hi=1e5)
    # Cache misses one gather thread keeps in flight: rows/s per thread = mlp / latency.
    gather_mlp: float = spec("gather_mlp", hi=1e4)
    # Engram n-gram hash, CPU, per token (all heads of one layer).
    hash_s_per_token: float = spec("hash_ns_per_token", scale=NS, hi=1e9)
    # Fixed cost of one hash call (one Engram layer): array setup and per-head loop overhead.
    hash_call_s: float = spec("hash_call_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e7)
    # Hash heads per layer of the measured hash (orders x heads per order): a layer with more
    # heads costs proportionally more per token (0: no scaling).
    hash_heads: int = spec("hash_heads", lo=0, lo_open=False, kind=int, default=0, hi=4096)
    # NUMA nodes of one host (sockets, or Grace CPUs): a per-NUMA table copy is this many copies.
    numa_nodes: int = spec("numa_nodes", kind=int, default=1, hi=64)
    # What handing one layer's fetch to a prefetch thread costs the thread that runs the model,
    # per Engram layer and step (waking the thread, taking turns at Python's interpreter lock).
    # `engramsim validate` times it alone on a CPU; 0 elsewhere (engines hand fetches to a
    # stream or to threads outside the interpreter).
    prefetch_handoff_s: float = spec("prefetch_handoff_us", scale=US, lo=0, lo_open=False, default=0.0, hi=1e6)


@dataclass(frozen=True)
class CXL:
    name: str = spec("name", kind=str)
    devices: int = spec("devices", kind=int, hi=4096)
    device_bw_Bps: float = spec("device_bw_GBps", scale=GB, hi=1e5)
    device_bytes: float = spec("device_GiB", scale=GiB, hi=1048576)
    latency_s: float = spec("latency_ns", scale=NS, hi=1e6)
    # A pool behind a switch: every host's traffic crosses it (0 = direct-attached expander).
    switch_bw_Bps: float = spec("switch_bw_GBps", scale=GB, lo=0, lo_open=False, default=0.0, hi=1e6)
    switch_latency_s: float = spec("switch_latency_ns", scale=NS, lo=0, lo_open=False, default=0.0, hi=1e6)

    @property
    def pooled(self) -> bool:
        return self.switch_bw_Bps > 0

    @property
    def total_latency_s(self) -> float:
        return self.latency_s + self.switch_latency_s


@dataclass(frozen=True)
class SSD:
    name: str = spec("name", kind=str)
    devices: int = spec("devices", kind=int, hi=4096)
    read_iops: float = spec("read_iops_per_device", hi=1e9)
    read_bw_Bps: float = spec("read_bw_GBps_per_device", scale=GB, hi=1e4)
    latency_s: float = spec("read_latency_us", scale=US, hi=1e6)
    device_bytes: float = spec("device_GiB", scale=GiB, hi=1048576)
    page_bytes: int = spec("page_bytes", kind=int, default=4096, hi=1048576)
    queue_depth: int = spec("queue_depth_per_device", kind=int, default=128, hi=65536)
    # Random-read IOPS of one device measured at these queue depths (4 KiB reads): a one-box
    # engine keeps only as many reads in flight as it has readers, far below the rated depth.
    iops_qd: tuple = spec("iops_queue_depths", kind=list, hi=65536, default=())
    iops_at_qd: tuple = spec("iops_at_queue_depths", kind=list, hi=1e8, default=())

    def __post_init__(self):
        if len(self.iops_qd) != len(self.iops_at_qd) or list(self.iops_qd) != sorted(set(self.iops_qd)):
            raise UserError(f"SSD {self.name}: iops_queue_depths must rise strictly and match iops_at_queue_depths")


@dataclass(frozen=True)
class OS:
    """How the operating system turns a file read into device reads, and what each costs a core.

    mmap faults read `mmap_readahead_pages` pages around the missing one (Linux read-around,
    macOS cluster reads) unless the engine asks for random access; pread of a buffered file
    reads whole pages through the page cache; O_DIRECT and io_uring read the row's own blocks.
    """

    name: str = spec("name", kind=str)
    page_bytes: int = spec("page_bytes", kind=int, hi=2**21)
    mmap_readahead_pages: int = spec("mmap_readahead_pages", kind=int, hi=4096)
    # CPU time of one read, on the thread that issues it: a pread system call (and its copy),
    # a major page fault, or one io_uring submission and completion.
    pread_cpu_s: float = spec("pread_cpu_us", scale=US, lo=0, lo_open=False, hi=1000)
    fault_cpu_s: float = spec("fault_cpu_us", scale=US, lo=0, lo_open=False, hi=1000)
    io_uring_cpu_s: float = spec("io_uring_cpu_us", scale=US, lo=0, lo_open=False, hi=1000, default=0.0)
    # Unified memory: what the OS keeps out of the engine's reach (a machine's own figure).
    reserved_bytes: float = spec("reserved_GiB", scale=GiB, lo=0, lo_open=False, hi=4096, default=0.0)


KINDS = ("discrete", "unified")


@dataclass(frozen=True)
class Hardware:
    name: str
    description: str
    gpus_per_host: int
    gpu: GPU
    host: Host
    link: Link | None = None
    cxl: CXL | None = None
    ssd: SSD | None = None
    topology: Topology | None = None
    rdma: RDMA | None = None
    os: OS | None = None
    # discrete: the GPU has its own memory behind a host link. unified: one pool (the [gpu]
    # memory: size, bandwidth) holds weights, KV, tables, caches and the OS; the CPU reads the
    # same pool ([host] describes its CPU side), and there is no host link.
    kind: str = "discrete"
    source: Path | None = field(default=None, compare=False)
    # Which figures came from a measured profile (calibrated models) and which were inherited.
    provenance: dict = field(default_factory=dict, compare=False)

    @property
    def topo(self) -> Topology:
        """The host's topology; a preset without [topology] is one socket with every GPU on it."""
        return self.topology or single_socket(self.gpus_per_host, self.host.dram_bytes)

    @property
    def unified(self) -> bool:
        return self.kind == "unified"


SECTIONS = {
    "gpu": GPU,
    "link": Link,
    "host": Host,
    "cxl": CXL,
    "ssd": SSD,
    "topology": Topology,
    "rdma": RDMA,
    "os": OS,
}
TOP_KEYS = {"name", "description", "gpus_per_host", "provenance", "kind", *SECTIONS}


def load_hardware(name_or_path: str | Path) -> Hardware:
    path = resolve("hardware", name_or_path)
    return hardware_from_dict(load_toml(path), str(path), path)


def hardware_from_dict(data: dict, where: str, path: Path | None = None) -> Hardware:
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(TOP_KEYS))})")
    kind = data.get("kind", "discrete")
    if kind not in KINDS:
        raise UserError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    for required in ("gpu", "host") + (() if kind == "unified" else ("link",)):
        if required not in data:
            raise UserError(f"{where}: missing table [{required}]")
    for forbidden in ("link", "cxl"):
        if kind == "unified" and forbidden in data:
            raise UserError(f"{where}: a unified-memory machine has no [{forbidden}] (one pool, no host link)")
    gpus = data.get("gpus_per_host", 8)
    if isinstance(gpus, bool) or not isinstance(gpus, int) or not 1 <= gpus <= MAX_GPUS_PER_HOST:
        raise UserError(f"{where}: 'gpus_per_host' must be a whole number in [1, {MAX_GPUS_PER_HOST}], got {gpus!r}")
    if not isinstance(data.get("provenance", {}), dict):
        raise UserError(f"{where}: 'provenance' must be a table")
    sections = {
        name: build(cls, _with_part(data[name], f"{where} [{name}]"), f"{where} [{name}]")
        for name, cls in SECTIONS.items()
        if name in data
    }
    topo = sections.get("topology")
    if topo:
        check_topology(topo, gpus, f"{where} [topology]")
        if sections["host"].numa_nodes != topo.sockets:
            raise UserError(
                f"{where} [topology]: 'sockets' is {topo.sockets} but [host] 'numa_nodes' is "
                f"{sections['host'].numa_nodes}"
            )
    if "rdma" in sections:
        check_rdma(sections["rdma"], topo or single_socket(gpus, 0.0), gpus, f"{where} [rdma]")
    return Hardware(
        name=str(data.get("name", path.stem if path else "custom")),
        description=str(data.get("description", "")),
        gpus_per_host=gpus,
        kind=kind,
        source=path,
        provenance=dict(data.get("provenance", {})),
        **sections,
    )


def hardware_to_dict(hw: Hardware) -> dict:
    """A Hardware back into TOML units (the inverse of hardware_from_dict, parts resolved)."""
    data = {"name": hw.name, "description": hw.description, "gpus_per_host": hw.gpus_per_host}
    if hw.unified:
        data["kind"] = hw.kind
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
                if not value:
                    continue  # an empty list is the default (e.g. NICs not placed behind switches)
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


def with_nic_part(hw: Hardware, part: str) -> Hardware:
    """`hw` with its RDMA NICs swapped for a NIC part (`simulate --nic`); the host's NIC count,
    placement and remote store stay."""
    if hw.rdma is None:
        raise UserError(f"--nic: {hw.name} has no [rdma] table to swap the NIC of")
    path = _part_path(part, "--nic")
    nic_keys = (
        "name",
        "nic_Gbps",
        "read_latency_us",
        "reads_in_flight",
        "header_bytes",
        "doorbell_us",
        "doorbell_batch",
    )
    table = {k: v for k, v in hardware_to_dict(hw)["rdma"].items() if k not in nic_keys} | load_toml(path)
    return replace(hw, rdma=build(RDMA, table, str(path)))
