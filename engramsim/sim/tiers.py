"""Where the Engram table lives, and the path its rows take to the GPU.

Each tier turns "this step needs R rows at layer l" into transfers over shared resources:

  hbm        gathered in device memory at the Engram layer (no host traffic)
  dram-uva   the GPU reads pinned host DRAM in place (zero-copy): link + DRAM, capped by the
             reads one GPU keeps in flight
  dram-copy  CPU threads gather rows into pinned staging, then one DMA copy over the link
  cxl-uva    zero-copy reads from CXL memory (and its switch, for a pool)
  cxl-copy   CPU gather from CXL memory into DRAM staging, then DMA
  ssd        page reads from NVMe (minus a DRAM page-cache hit rate), then the dram-copy path
"""
from __future__ import annotations

from dataclasses import dataclass

from engramsim import costs
from engramsim.errors import UserError
from engramsim.hardware import Hardware
from engramsim.sim.flows import FlowNetwork, Resource

TIERS = ("hbm", "dram-uva", "dram-copy", "cxl-uva", "cxl-copy", "ssd")


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

    def __post_init__(self):
        if self.tier not in TIERS:
            raise UserError(f"unknown tier '{self.tier}' (known: {', '.join(TIERS)})")
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

    @property
    def memory(self) -> str:
        """The memory the table lives in: hbm, dram, cxl or ssd."""
        return self.tier.split("-")[0]

    @property
    def path(self) -> str:
        return {"hbm": "hbm", "ssd": "copy"}.get(self.tier, self.tier.split("-")[-1])


class HostResources:
    """One host's shared resources. A CXL pool (switch) may be shared by every host."""

    def __init__(self, hw: Hardware, index: int, pool: dict):
        h = hw.host
        self.dram = Resource(f"host{index}.dram", h.dram_bw_Bps * h.dram_efficiency)
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
        return [r for r in (self.dram, self.cpu, self.cxl, self.switch, self.ssd_ops, self.ssd_bw) if r]


def pool_resources(hw: Hardware) -> dict:
    if not (hw.cxl and hw.cxl.pooled):
        return {}
    return {"cxl": Resource("pool.cxl", hw.cxl.devices * hw.cxl.device_bw_Bps),
            "switch": Resource("pool.switch", hw.cxl.switch_bw_Bps)}


class Fetcher:
    """Starts the transfers that bring one step's missing rows to one GPU."""

    def __init__(self, env, net: FlowNetwork, hw: Hardware, placement: Placement, row_bytes: int,
                 link: Resource, host: HostResources):
        self.env, self.net, self.hw, self.placement = env, net, hw, placement
        self.row_bytes, self.link, self.host = row_bytes, link, host

    def start(self, rows: float, dram_hit_rate: float = 0.0):
        """An event that fires when `rows` rows are in HBM; for the ssd tier, `dram_hit_rate` of
        them come from host DRAM instead of the SSD."""
        tier = self.placement.tier
        if rows <= 0 or tier == "hbm":
            return self.env.timeout(0)
        if self.placement.path == "uva":
            return self._zero_copy(rows)
        return self.env.process(self._staged(rows, dram_hit_rate))

    def _memory(self, memory: str) -> tuple[list[tuple[Resource, float]], float]:
        """Resources a read of random rows from `memory` loads, and its latency."""
        lines = costs.lines_per_row_bytes(self.row_bytes)
        if memory == "cxl":
            loads = [(self.host.cxl, lines)] + ([(self.host.switch, lines)] if self.host.switch else [])
            return loads, self.hw.cxl.total_latency_s
        return [(self.host.dram, lines)], self.hw.host.dram_latency_s

    def _zero_copy(self, rows: float):
        link = self.hw.link
        loads, latency = self._memory(self.placement.memory)
        extra = latency - self.hw.host.dram_latency_s  # the link round trip already includes DRAM
        wire = costs.zero_copy_wire_factor(link, self.row_bytes)
        cap = costs.zero_copy_cap_Bps(link, self.row_bytes, max(extra, 0.0))
        return self.net.transfer(rows * self.row_bytes, [(self.link, wire)] + loads, cap=cap,
                                 cap_name="zero-copy reads in flight", latency_s=self.hw.gpu.kernel_launch_s + link.read_round_trip_s + max(extra, 0.0))

    def _staged(self, rows: float, dram_hit_rate: float):
        if self.placement.tier == "ssd":
            yield self._ssd_reads(rows * (1.0 - dram_hit_rate))
        memory = "cxl" if self.placement.tier == "cxl-copy" else "dram"
        yield self._cpu_gather(rows, memory)
        nbytes = rows * self.row_bytes
        yield self.net.transfer(nbytes, [(self.link, 1.0), (self.host.dram, 1.0)], latency_s=self.hw.link.latency_s)

    def _cpu_gather(self, rows: float, memory: str):
        """CPU threads copy rows into pinned DRAM staging: each thread keeps `gather_mlp` misses
        in flight, so its row rate is mlp / latency; the staging writes load DRAM too."""
        loads, latency = self._memory(memory)
        per_thread_Bps = costs.cpu_gather_rows_per_s(self.hw.host, latency) * self.row_bytes
        threads = self.hw.host.gather_threads_per_gpu
        loads = loads + [(self.host.dram, 1.0), (self.host.cpu, 1.0 / per_thread_Bps)]
        return self.net.transfer(rows * self.row_bytes, loads, cap=threads * per_thread_Bps,
                                 cap_name="CPU gather threads", latency_s=latency)

    def _ssd_reads(self, rows: float):
        """Each missing row costs one page read (costs.ssd_row_read)."""
        read = costs.ssd_row_read(self.hw.ssd)
        loads = [(self.host.ssd_ops, read.ops), (self.host.ssd_bw, read.ssd_bytes), (self.host.dram, read.dram_bytes)]
        return self.net.transfer(rows, loads, latency_s=self.hw.ssd.latency_s)
