"""Server topology: CPU sockets (NUMA nodes) and their DRAM, which socket each GPU hangs off,
the cross-socket link (UPI / xGMI), PCIe switches that GPUs and NICs share, RDMA NICs and the
remote hosts whose DRAM can hold the table.

A hardware preset may carry a [topology] table and an [rdma] table (whose `part` names a NIC
under hwmodels/parts/). Without [topology] a host is one socket with every GPU on it and no
switch, which is what the simulator assumed before; without [rdma] the `rdma` tier does not exist.
Everything here is data and pure functions of it; `engramsim.sim.tiers` turns it into resources.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engramsim.errors import UserError
from engramsim.presets import spec

GB, GiB, US, NS, KiB = 1e9, 2.0**30, 1e-6, 1e-9, 1024.0

# Where an off-GPU host table lives across the sockets of one host:
#   per-numa    one full copy per socket (NUMA node); every GPU reads the copy on its own socket
#   interleave  one copy, pages interleaved over all sockets (`numactl --interleave`): a GPU reads
#               (sockets-1)/sockets of its rows across the socket link
#   node0       one copy on socket 0 (first touch by rank 0, SGLang's `shared` layout)
NUMA_LAYOUTS = ("per-numa", "interleave", "node0")
# Which socket runs the CPU gather threads of the copy path: the GPU's own or the other one.
GATHER_SOCKETS = ("local", "remote")
# How RDMA-read rows reach the GPU: the NIC writes into GPU memory (GPUDirect RDMA), or into
# pinned host memory followed by a host-to-device copy.
RDMA_PATHS = ("gpudirect", "host")
# How TP ranks look up rows of tables sharded in HBM (SGLang at TP >= 8): each rank gathers only
# its own head shard (`local`, no exchange modelled), gathers its shard for every token and
# all-reduces the assembled embeddings over NVLink (`collective`), or reads the rows it needs
# straight from its peers' HBM (`peer_read`).
HBM_LOOKUPS = ("local", "collective", "peer_read")
# Which rows each TP rank fetches from an off-GPU table: those of the heads its shard owns (vLLM
# cpu_offload, then an exchange between ranks) or every head for every token (SGLang's shared
# host table: "lookups stay local and skip the lookup all-reduce", sgl-project/sglang #40106).
RANK_ROWS = ("shard", "all")


@dataclass(frozen=True)
class Topology:
    sockets: int = spec("sockets", kind=int, hi=16)
    # DRAM behind each socket; the host's bandwidth is divided evenly between sockets.
    socket_dram_GiB: tuple = spec("socket_dram_GiB", kind=list, lo=0, lo_open=False, hi=2**16)
    # The socket whose root complex each GPU's PCIe link reaches (nvidia-smi topo -m, "NUMA Affinity").
    gpu_socket: tuple = spec("gpu_socket", kind=list, lo=0, lo_open=False, hi=15)
    # Cross-socket link bandwidth per direction and the latency it adds to a remote access.
    upi_Bps: float = spec("upi_GBps", scale=GB, hi=2000)
    upi_latency_s: float = spec("upi_latency_ns", scale=NS, lo=0, lo_open=False, hi=1000)
    # PCIe switches: GPU g sits behind switch g // gpus_per_switch (0: no switch, each GPU has
    # its own root port); each switch reaches its socket over one uplink shared by its devices.
    gpus_per_switch: int = spec("gpus_per_switch", kind=int, lo=0, lo_open=False, hi=16, default=0)
    switch_uplink_Bps: float = spec("switch_uplink_GBps", scale=GB, lo=0, lo_open=False, hi=1000, default=0.0)
    # Address translation of a huge pinned table: a read that misses the GPU's TLB for system
    # memory pays a page walk. TLB reach = entries x page size; 0 entries = not modelled.
    sysmem_tlb_entries: int = spec("sysmem_tlb_entries", kind=int, lo=0, lo_open=False, hi=1e7, default=0)
    table_page_bytes: float = spec("table_page_KiB", scale=KiB, hi=2**20, default=4 * KiB)
    page_walk_s: float = spec("page_walk_ns", scale=NS, lo=0, lo_open=False, hi=10000, default=0.0)
    # Peer reads over NVLink (hbm tier, `peer_read` lookups): one load's round trip to a peer
    # GPU's HBM and the loads one GPU keeps in flight to its peers.
    peer_read_latency_s: float = spec("peer_read_latency_ns", scale=NS, hi=100000, default=1000 * NS)
    peer_reads_in_flight: int = spec("peer_reads_in_flight", kind=int, hi=1e7, default=4096)

    def switch_of(self, gpu: int) -> int | None:
        return gpu // self.gpus_per_switch if self.gpus_per_switch else None


def single_socket(gpus_per_host: int, dram_bytes: float) -> Topology:
    """What a preset without [topology] means: one socket, every GPU on it, no switches."""
    return Topology(
        sockets=1, socket_dram_GiB=(dram_bytes / GiB,), gpu_socket=(0,) * gpus_per_host, upi_Bps=1.0, upi_latency_s=0.0
    )


def check_topology(topo: Topology, gpus_per_host: int, where: str) -> None:
    """One line for a topology that cannot be: a GPU on a socket that does not exist, lists of
    the wrong length, a switch without an uplink."""
    if len(topo.socket_dram_GiB) != topo.sockets:
        raise UserError(
            f"{where}: 'socket_dram_GiB' lists {len(topo.socket_dram_GiB)} sockets, 'sockets' says {topo.sockets}"
        )
    if len(topo.gpu_socket) != gpus_per_host:
        raise UserError(f"{where}: 'gpu_socket' gives {len(topo.gpu_socket)} GPUs, the host has {gpus_per_host}")
    for g, s in enumerate(topo.gpu_socket):
        if s >= topo.sockets:
            raise UserError(
                f"{where}: GPU {g} has affinity to socket {s}, but the host has "
                f"{topo.sockets} socket(s) (0..{topo.sockets - 1})"
            )
    if topo.gpus_per_switch and not topo.switch_uplink_Bps:
        raise UserError(f"{where}: 'gpus_per_switch' needs 'switch_uplink_GBps' > 0")


@dataclass(frozen=True)
class RDMA:
    """The RDMA NICs of a host (a NIC part) and the remote hosts whose DRAM holds the rows."""

    name: str = spec("name", kind=str)
    # Line rate per NIC (ConnectX-7: 400 Gb/s; 200 Gb/s parts exist).
    nic_Bps: float = spec("nic_Gbps", scale=GB / 8, hi=3200)
    # One RDMA read's round trip (post, wire, remote DMA read, completion) through one switch hop.
    read_latency_s: float = spec("read_latency_us", scale=US, hi=1000)
    # RDMA reads one NIC keeps outstanding: per-QP read credits x the QPs a transfer engine opens.
    reads_in_flight: int = spec("reads_in_flight", kind=int, hi=1e6)
    # Wire bytes each read response carries beyond its payload (IB headers and CRCs).
    header_bytes: int = spec("header_bytes", kind=int, lo=0, lo_open=False, hi=4096, default=30)
    # Posting work requests: one doorbell (an MMIO write) per batch of `doorbell_batch` reads.
    doorbell_s: float = spec("doorbell_us", scale=US, lo=0, lo_open=False, hi=1000, default=0.0)
    doorbell_batch: int = spec("doorbell_batch", kind=int, hi=1e6, default=1)
    # NICs on each host; NIC n sits behind switch `nic_switch[n]` (or on socket n*sockets//nics
    # without switches); GPU g uses NIC g * nics // gpus.
    nics_per_host: int = spec("nics_per_host", kind=int, hi=64, default=1)
    nic_switch: tuple = spec("nic_switch", kind=list, lo=0, lo_open=False, hi=63, default=())
    # The remote hosts that hold the table in DRAM, rows striped evenly over them; each serves
    # reads through one NIC of the same part.
    remote_hosts: int = spec("remote_hosts", kind=int, hi=4096, default=1)
    remote_host_bytes: float = spec("remote_host_GiB", scale=GiB, hi=2**16, default=2048 * GiB)
    remote_dram_Bps: float = spec("remote_dram_GBps", scale=GB, hi=20000, default=400 * GB)


def check_rdma(rdma: RDMA, topo: Topology, gpus_per_host: int, where: str) -> None:
    if rdma.nic_switch and len(rdma.nic_switch) != rdma.nics_per_host:
        raise UserError(
            f"{where}: 'nic_switch' places {len(rdma.nic_switch)} NICs, 'nics_per_host' is {rdma.nics_per_host}"
        )
    switches = -(-gpus_per_host // topo.gpus_per_switch) if topo.gpus_per_switch else 0
    for n, sw in enumerate(rdma.nic_switch):
        if sw >= switches:
            raise UserError(f"{where}: NIC {n} sits behind switch {sw}, but the host has {switches} PCIe switch(es)")


def nic_of(rdma: RDMA, gpu: int, gpus_per_host: int) -> int:
    return gpu * rdma.nics_per_host // gpus_per_host


def nic_socket(rdma: RDMA, topo: Topology, nic: int) -> int:
    if rdma.nic_switch:
        switch = rdma.nic_switch[nic]
        return topo.gpu_socket[switch * topo.gpus_per_switch]
    return nic * topo.sockets // rdma.nics_per_host


def table_sockets(topo: Topology, layout: str, consumer: int) -> list[tuple[int, float]]:
    """Which sockets a reader on socket `consumer` finds its rows on, with their shares."""
    if layout == "per-numa":
        return [(consumer, 1.0)]
    if layout == "node0":
        return [(0, 1.0)]
    return [(s, 1.0 / topo.sockets) for s in range(topo.sockets)]


def socket_table_bytes(topo: Topology, layout: str, table_bytes: float, copies: int = 1) -> list[float]:
    """Bytes of table each socket's DRAM holds when `copies` copies exist (replicas that keep
    their own): per-numa puts a socket's share of them, at least one, next to its GPUs;
    interleave spreads them evenly; node0 puts them all on socket 0."""
    if layout == "per-numa":
        gpus = len(topo.gpu_socket)
        return [table_bytes * max(1, math.ceil(copies * topo.gpu_socket.count(s) / gpus)) for s in range(topo.sockets)]
    if layout == "node0":
        return [table_bytes * copies] + [0.0] * (topo.sockets - 1)
    return [table_bytes * copies / topo.sockets] * topo.sockets


def check_path(hw, tier: str, layout: str) -> None:
    """One line when some GPU cannot reach the table at all: a remote table without NICs, or a
    host table on a socket that has no DRAM."""
    if tier == "rdma" and hw.rdma is None:
        raise UserError(f"{hw.name}: no GPU has a path to a remote table: the preset has no [rdma] NICs")
    if tier.startswith("dram") or tier == "ssd":
        topo = hw.topo
        for g, s in enumerate(topo.gpu_socket):
            for src, _ in table_sockets(topo, layout, s):
                if topo.socket_dram_GiB[src] <= 0:
                    raise UserError(
                        f"{hw.name}: GPU {g} has no path to the table: with the {layout} layout its "
                        f"rows sit on socket {src}, which has no DRAM"
                    )
