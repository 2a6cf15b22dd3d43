"""Where the Engram table lives, and the path its rows take to the GPU.

Each tier turns "this step needs R rows at layer l" into transfers over shared resources:

  hbm        gathered in device memory at the Engram layer (no host traffic)
  dram-uva   the GPU reads pinned host DRAM in place (zero-copy): link + DRAM, capped by the
             reads one GPU keeps in flight
  dram-copy  CPU threads gather rows into pinned staging, then one DMA copy over the link
  cxl-uva    zero-copy reads from CXL memory (and its switch, for a pool)
  cxl-copy   CPU gather from CXL memory into DRAM staging, then DMA
  ssd        page reads from NVMe (minus a DRAM page-cache hit rate), then the dram-copy path
  rdma       RDMA reads of rows striped over remote hosts' DRAM: remote NICs and DRAM, this
             host's NIC, then GPUDirect into the GPU or pinned host memory and a DMA copy

Host memory follows the hardware's topology (engramsim.topology): each socket's DRAM, the
socket link, PCIe switch uplinks and NICs are resources of their own, so a GPU reading a table
on the other socket loads the socket link, and two GPUs behind one switch share its uplink.
  unified    on a unified-memory machine: the table sits in the one pool and the GPU gathers
             it there, as `hbm` does (whose alias it is); such a machine has no dram-* or cxl-*
             tier, and its ssd tier stages rows in the pool with no host-link copy
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from engramsim import costs
from engramsim.errors import UserError
from engramsim.hardware import Hardware
from engramsim.iopolicy import IOPolicy
from engramsim.sim.flows import FlowNetwork, Resource
from engramsim.topology import (
    GATHER_SOCKETS,
    HBM_LOOKUPS,
    NUMA_LAYOUTS,
    RANK_ROWS,
    RDMA_PATHS,
    nic_of,
    nic_socket,
    table_sockets,
)

TIERS = ("hbm", "dram-uva", "dram-copy", "cxl-uva", "cxl-copy", "ssd", "rdma")
# What simulate, sweep and plan compare when no tier is named: rdma describes a remote store
# (hosts, NICs) the user asks for by name.
DEFAULT_TIERS = TIERS[:-1]
ALL_TIERS = TIERS + ("unified",)  # unified: a unified-memory machine's in-memory tier


@dataclass(frozen=True)
class Placement:
    tier: str
    # Hot rows kept in HBM, per GPU (bytes); hits are gathered in HBM at the Engram layer.
    hbm_cache_bytes: float = 0.0
    # ssd tier: share of page reads that the host's DRAM page cache serves...
    ssd_dram_hit_rate: float = 0.0
    # ...or a DRAM hot-row cache of this size (bytes per host) in front of the SSD, whose hit
    # rate comes from the row model: it holds the rows ranked just after the HBM cache's.
    dram_cache_bytes: float = 0.0
    # Host tables across sockets (topology.NUMA_LAYOUTS), the socket of the CPU gather threads,
    # and the rdma tier's path into the GPU.
    numa: str = "per-numa"
    gather_socket: str = "local"
    rdma_path: str = "gpudirect"
    # Prefetch for this placement only (None: the scenario's), for engines whose paths differ,
    # e.g. a synchronous in-line gather beside an asynchronous store fetch.
    prefetch: bool | None = None
    # hbm tier: how TP ranks look up rows of the sharded tables (topology.HBM_LOOKUPS).
    hbm_lookup: str = "local"
    # Off-GPU tiers: a rank fetches its shard's heads, or all heads (topology.RANK_ROWS).
    rank_rows: str = "shard"

    def __post_init__(self):
        if self.tier not in ALL_TIERS:
            raise UserError(f"unknown tier '{self.tier}' (known: {', '.join(ALL_TIERS)})")
        if self.hbm_lookup != "local" and self.tier != "hbm":
            raise UserError(f"an HBM lookup mode ({self.hbm_lookup}) only applies to the hbm tier")
        if self.rank_rows != "shard" and self.tier == "hbm":
            raise UserError("every rank fetching all rows applies to off-GPU tiers; the hbm tier has --hbm-lookup")
        for key, allowed in (
            ("numa", NUMA_LAYOUTS),
            ("gather_socket", GATHER_SOCKETS),
            ("rdma_path", RDMA_PATHS),
            ("hbm_lookup", HBM_LOOKUPS),
            ("rank_rows", RANK_ROWS),
        ):
            if getattr(self, key) not in allowed:
                raise UserError(f"unknown {key.replace('_', ' ')} '{getattr(self, key)}' (known: {', '.join(allowed)})")
        if self.hbm_cache_bytes < 0:
            raise UserError("the HBM hot-row cache must be >= 0 bytes")
        if self.dram_cache_bytes < 0:
            raise UserError("the DRAM hot-row cache must be >= 0 bytes")
        if self.dram_cache_bytes and self.ssd_dram_hit_rate:
            raise UserError("give the SSD's DRAM cache as a hit rate or as a size, not both")
        if self.dram_cache_bytes and self.tier != "ssd":
            raise UserError("a DRAM hot-row cache only fronts the ssd tier")
        if not 0 <= self.ssd_dram_hit_rate <= 1:
            raise UserError(f"the SSD page-cache hit rate must be within [0, 1], got {self.ssd_dram_hit_rate}")

    @cached_property  # read several times a step: computed once (the dataclass is frozen)
    def memory(self) -> str:
        """The memory the table lives in: hbm (the GPU's memory, or a unified pool), dram, cxl or ssd."""
        return "hbm" if self.tier == "unified" else self.tier.split("-")[0]

    @cached_property
    def path(self) -> str:
        return {"hbm": "hbm", "unified": "hbm", "ssd": "copy", "rdma": "rdma"}.get(self.tier, self.tier.split("-")[-1])


def tier_for(hw: Hardware, tier: str) -> str:
    """The tier as `hw` names it: `hbm` is `unified` on a unified-memory machine; a tier the
    machine cannot have is refused with the reason."""
    if hw.unified:
        if tier == "hbm":
            return "unified"
        if tier.startswith(("dram-", "cxl-")):
            raise UserError(
                f"tier {tier}: {hw.name} is a unified-memory machine, where the CPU's DRAM is the "
                f"GPU's own pool and there is no host link or CXL: use unified or ssd"
            )
    elif tier == "unified":
        raise UserError(f'tier unified: {hw.name} is not a unified-memory machine (kind = "unified"): use hbm')
    return tier


def default_tiers(hw: Hardware) -> tuple[str, ...]:
    """Every tier the machine has."""
    return ("unified", "ssd") if hw.unified else DEFAULT_TIERS


class HostResources:
    """One host's shared resources: each socket's DRAM, the links between sockets, PCIe switch
    uplinks, NICs, CPU threads, CXL and SSDs. A CXL pool and the remote hosts of the rdma tier
    are shared by every host (`pool`)."""

    def __init__(self, hw: Hardware, index: int, pool: dict):
        h, topo = hw.host, hw.topo
        bw = h.dram_bw_Bps * h.dram_efficiency
        socket_name = (lambda k: f"host{index}.dram") if topo.sockets == 1 else (lambda k: f"host{index}.s{k}.dram")
        self.dram_by_socket = [Resource(socket_name(k), bw / topo.sockets) for k in range(topo.sockets)]
        self.upi = {
            (a, b): Resource(f"host{index}.s{a}>s{b}.upi", topo.upi_Bps)
            for a in range(topo.sockets)
            for b in range(topo.sockets)
            if a != b
        }
        switches = -(-hw.gpus_per_host // topo.gpus_per_switch) if topo.gpus_per_switch else 0
        self.switches = [Resource(f"host{index}.sw{k}.pcie_switch", topo.switch_uplink_Bps) for k in range(switches)]
        self.nics = (
            [Resource(f"host{index}.nic{n}.nic", hw.rdma.nic_Bps) for n in range(hw.rdma.nics_per_host)]
            if hw.rdma
            else []
        )
        self.remote = pool.get("remote", [])
        self.cpu = Resource(f"host{index}.cpu", float(h.cpu_cores), unit="thread-s")
        self.cxl = self.switch = self.ssd_ops = self.ssd_bw = None
        if hw.cxl:
            if hw.cxl.pooled:
                self.cxl, self.switch = pool["cxl"], pool["switch"]
            else:
                self.cxl = Resource(f"host{index}.cxl", hw.cxl.devices * hw.cxl.device_bw_Bps)
        if hw.ssd:
            self.ssd_ops = Resource(f"host{index}.ssd_iops", costs.ssd_iops(hw.ssd), unit="op")
            self.ssd_bw = Resource(f"host{index}.ssd_bw", costs.ssd_bw_Bps(hw.ssd))

    def resources(self) -> list[Resource]:
        own = [self.cpu, self.cxl, self.switch, self.ssd_ops, self.ssd_bw]
        return [*self.dram_by_socket, *self.upi.values(), *self.switches, *self.nics, *[r for r in own if r]]

    def cross(self, src: int, dst: int) -> list[tuple[Resource, float]]:
        """The socket link a transfer from socket `src` to socket `dst` crosses (none if equal)."""
        return [] if src == dst else [(self.upi[(src, dst)], 1.0)]


def pool_resources(hw: Hardware) -> dict:
    """Resources every host shares: a CXL pool behind its switch, the rdma tier's remote hosts."""
    pool = {}
    if hw.cxl and hw.cxl.pooled:
        pool |= {
            "cxl": Resource("pool.cxl", hw.cxl.devices * hw.cxl.device_bw_Bps),
            "switch": Resource("pool.switch", hw.cxl.switch_bw_Bps),
        }
    if hw.rdma:
        pool["remote"] = [
            (
                Resource(f"remote{j}.remote_nic", hw.rdma.nic_Bps),
                Resource(f"remote{j}.remote_dram", hw.rdma.remote_dram_Bps),
            )
            for j in range(hw.rdma.remote_hosts)
        ]
    return pool


def pool_list(pool: dict) -> list[Resource]:
    return [pool[k] for k in ("cxl", "switch") if k in pool] + [r for pair in pool.get("remote", []) for r in pair]


class Fetcher:
    """Starts the transfers that bring one step's missing rows to one GPU (`gpu`: its index
    within its host, which fixes its socket, PCIe switch and NIC)."""

    def __init__(
        self,
        env,
        net: FlowNetwork,
        hw: Hardware,
        placement: Placement,
        row_bytes: int,
        link: Resource | None,
        host: HostResources,
        gpu: int = 0,
        table_bytes: float = 0.0,
        io: IOPolicy = IOPolicy(),
    ):
        self.env, self.net, self.hw, self.placement = env, net, hw, placement
        self.row_bytes, self.link, self.host = row_bytes, link, host
        self.gpu, self.table_bytes, self.io = gpu, table_bytes, io
        self.socket = hw.topo.gpu_socket[gpu]
        self._reads: dict = {}  # (memory, consumer) -> _memory's answer, which depends on nothing else
        # Each transfer's path, cap and latency depend on the fetcher alone (not on the rows), so
        # they are worked out once per kind of transfer: rebuilding them took ~5% of a sweep.
        self._paths: dict = {}

    def start(self, rows: float, dram_hit_rate: float = 0.0):
        """An event that fires when `rows` rows are in HBM; for the ssd tier, `dram_hit_rate` of
        them come from host DRAM instead of the SSD."""
        if rows <= 0 or self.placement.memory == "hbm":
            return self.env.timeout(0)
        if self.placement.path == "uva":
            return self._zero_copy(rows)
        if self.placement.path == "rdma":
            return self.env.process(self._rdma(rows))
        return self.env.process(self._staged(rows, dram_hit_rate))

    def _kept(self, key: tuple, build):
        """`build()`'s answer for `key`, built once (callers never change it)."""
        if key not in self._paths:
            self._paths[key] = build()
        return self._paths[key]

    def _to_gpu(self, src_socket: int, wire: float = 1.0) -> list[tuple[Resource, float]]:
        """From host memory on `src_socket` into this GPU: the socket link if it is another
        socket, the GPU's PCIe switch uplink, and its own link."""
        switch = self.hw.topo.switch_of(self.gpu)
        uplink = [(self.host.switches[switch], wire)] if switch is not None else []
        return self.host.cross(src_socket, self.socket) + uplink + [(self.link, wire)]

    def _memory(self, memory: str, consumer: int | None = None) -> tuple[list[tuple[Resource, float]], float]:
        """Resources a read of random rows from `memory` by a reader on socket `consumer` loads,
        and its mean latency: host tables follow the placement's NUMA layout. (Callers build
        new lists from the loads, never change them, so one answer serves every step.)"""
        key = (memory, consumer)
        if key not in self._reads:
            self._reads[key] = self._memory_reads(memory, consumer)
        return self._reads[key]

    def _memory_reads(self, memory: str, consumer: int | None) -> tuple[list[tuple[Resource, float]], float]:
        lines = costs.lines_per_row_bytes(self.row_bytes)
        if memory == "cxl":
            loads = [(self.host.cxl, lines)] + ([(self.host.switch, lines)] if self.host.switch else [])
            return loads, self.hw.cxl.total_latency_s
        consumer = self.socket if consumer is None else consumer
        topo, layout = self.hw.topo, self.placement.numa
        loads = []
        for s, share in table_sockets(topo, layout, consumer):
            loads.append((self.host.dram_by_socket[s], lines * share))
            loads += [(r, c * lines * share) for r, c in self.host.cross(s, consumer)]
        latency = costs.host_read_latency_s(self.hw.host, topo, layout, consumer, self.table_bytes)
        return loads, latency

    def _zero_copy(self, rows: float):
        loads, cap, latency_s = self._kept(("zero-copy",), self._zero_copy_path)
        return self.net.transfer(
            rows * self.row_bytes,
            loads,
            cap=cap,
            tag="fetch",
            cap_name="zero-copy reads in flight",
            latency_s=latency_s,
        )

    def _zero_copy_path(self) -> tuple[list[tuple[Resource, float]], float, float]:
        link = self.hw.link
        loads, latency = self._memory(self.placement.memory)
        extra = latency - self.hw.host.dram_latency_s  # the link round trip already includes DRAM
        wire = costs.zero_copy_wire_factor(link, self.row_bytes)
        cap = costs.zero_copy_cap_Bps(link, self.row_bytes, max(extra, 0.0))
        path = self._to_gpu(self.socket, wire)
        return path + loads, cap, self.hw.gpu.kernel_launch_s + link.read_round_trip_s + max(extra, 0.0)

    def _gather_socket(self) -> int:
        if self.placement.gather_socket == "local":
            return self.socket
        return (self.socket + 1) % self.hw.topo.sockets

    def _staged(self, rows: float, dram_hit_rate: float):
        staging = self._gather_socket()
        if self.placement.tier == "ssd":
            yield self._ssd_reads(rows * (1.0 - dram_hit_rate), staging)
        memory = "cxl" if self.placement.tier == "cxl-copy" else "dram"
        yield self._cpu_gather(rows, memory, staging)
        if self.link is None:
            return  # unified memory: the staged rows are already where the GPU reads
        yield self._dma(rows * self.row_bytes, staging)

    def _dma(self, nbytes: float, src_socket: int):
        """One host-to-device copy from pinned memory on `src_socket`."""
        loads = self._kept(
            ("dma", src_socket), lambda: [(self.host.dram_by_socket[src_socket], 1.0)] + self._to_gpu(src_socket)
        )
        return self.net.transfer(nbytes, loads, latency_s=self.hw.link.latency_s, tag="fetch")

    def _cpu_gather(self, rows: float, memory: str, socket: int):
        """CPU threads on `socket` copy rows into pinned staging on that socket: each thread keeps
        `gather_mlp` misses in flight, so its row rate is mlp / latency; the staging writes load
        DRAM too."""
        loads, cap, latency = self._kept(("gather", memory, socket), lambda: self._cpu_gather_path(memory, socket))
        return self.net.transfer(
            rows * self.row_bytes, loads, cap=cap, tag="fetch", cap_name="CPU gather threads", latency_s=latency
        )

    def _cpu_gather_path(self, memory: str, socket: int) -> tuple[list[tuple[Resource, float]], float, float]:
        loads, latency = self._memory(memory, socket)
        per_thread_Bps = costs.cpu_gather_rows_per_s(self.hw.host, latency) * self.row_bytes
        threads = self.hw.host.gather_threads_per_gpu
        loads = loads + [(self.host.dram_by_socket[socket], 1.0), (self.host.cpu, 1.0 / per_thread_Bps)]
        return loads, threads * per_thread_Bps, latency

    def _ssd_reads(self, rows: float, socket: int):
        """Each missing row costs one device read (costs.ssd_read_plan), landing on `socket`: the
        engine's readers keep `in_flight` of them going, each taking `op_s` and CPU on its thread."""
        read = costs.ssd_read_plan(self.hw.ssd, self.hw.os, self.io, self.row_bytes, rows)
        loads = [
            (self.host.ssd_ops, 1.0),
            (self.host.ssd_bw, read.ssd_bytes),
            (self.host.dram_by_socket[socket], read.dram_bytes),
            (self.host.cpu, read.cpu_s),
        ]
        return self.net.transfer(
            rows, loads, cap=read.rows_per_s, cap_name="SSD readers", latency_s=read.lead_s(rows), tag="fetch"
        )

    def _rdma(self, rows: float):
        """Rows striped over the remote hosts: their DRAM and NICs, this GPU's NIC, then either
        GPUDirect (NIC to GPU through the PCIe switch) or pinned host memory and a DMA copy."""
        rdma, topo = self.hw.rdma, self.hw.topo
        nic = nic_of(rdma, self.gpu, self.hw.gpus_per_host)
        wire = costs.rdma_wire_factor(rdma, self.row_bytes)
        lines = costs.lines_per_row_bytes(self.row_bytes)
        share = 1.0 / len(self.host.remote)
        loads = [(r, c * share) for nic_r, dram_r in self.host.remote for r, c in ((nic_r, wire), (dram_r, lines))]
        loads.append((self.host.nics[nic], wire))
        nic_sock = nic_socket(rdma, topo, nic)
        nic_switch = rdma.nic_switch[nic] if rdma.nic_switch else None
        gpus_per_nic = self.hw.gpus_per_host / rdma.nics_per_host
        cap, cap_name = costs.rdma_cap(rdma, self.row_bytes, gpus_per_nic)
        nbytes = rows * self.row_bytes
        nic_uplink = [(self.host.switches[nic_switch], 1.0)] if nic_switch is not None else []
        if self.placement.rdma_path == "gpudirect":
            if nic_switch is not None and nic_switch == topo.switch_of(self.gpu):
                into_gpu = [(self.link, 1.0)]  # peer-to-peer under one switch
            else:
                into_gpu = nic_uplink + self._to_gpu(nic_sock)
            yield self.net.transfer(
                nbytes, loads + into_gpu, cap=cap, cap_name=cap_name, tag="fetch", latency_s=rdma.read_latency_s
            )
            return
        landing = loads + nic_uplink + [(self.host.dram_by_socket[nic_sock], 1.0)]
        yield self.net.transfer(nbytes, landing, cap=cap, cap_name=cap_name, tag="fetch", latency_s=rdma.read_latency_s)
        yield self._dma(nbytes, nic_sock)
