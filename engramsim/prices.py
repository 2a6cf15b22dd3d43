"""Prices for the planner (prices/*.toml): GPU-hours, and $/GB of the memory that holds a table.

GPUs are priced per GPU-hour (rented) or per GPU (bought, spread over `amortize_years`). Host
DRAM, CXL memory and NVMe that hold an Engram table, or a DRAM hot-row cache in front of an SSD,
are priced per GB bought and spread the same way: the table's memory is charged on top of the
GPU-hour, since it is capacity a server must add or give up for the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engramsim.errors import UserError
from engramsim.presets import build, load_toml, resolve, spec
from engramsim.units import GB

HOURS_PER_YEAR = 24 * 365


# Upper bounds (`hi`): a GPU rents for a few $ per hour and sells for tens of thousands of $,
# memory costs a few $ per GB, hardware is written off over a few years; each bound leaves
# 100-1,000x room.
@dataclass(frozen=True)
class GPUPrice:
    usd_per_gpu_hour: float = spec("usd_per_gpu_hour", default=0.0, hi=1000)
    usd_per_gpu: float = spec("usd_per_gpu", default=0.0, hi=1e7)


@dataclass(frozen=True)
class Prices:
    name: str = spec("name", kind=str)
    date: str = spec("date", kind=str)
    amortize_years: float = spec("amortize_years", hi=50)
    dram_usd_per_GB: float = spec("dram_usd_per_GB", hi=10000)
    cxl_usd_per_GB: float = spec("cxl_usd_per_GB", hi=10000)
    ssd_usd_per_GB: float = spec("ssd_usd_per_GB", hi=10000)
    description: str = spec("description", kind=str, default="")
    gpu_usd_per_hour: dict = field(default_factory=dict)  # hardware preset name -> $/GPU-hour

    def per_gpu_hour(self, hw_name: str) -> float:
        if hw_name not in self.gpu_usd_per_hour:
            known = ", ".join(sorted(self.gpu_usd_per_hour))
            raise UserError(
                f"prices '{self.name}' have no GPU price for hardware '{hw_name}' "
                f"(priced: {known}); add [gpu.{hw_name}] to a prices file"
            )
        return self.gpu_usd_per_hour[hw_name]

    def memory_usd_per_hour(self, memory: str, nbytes: float) -> float:
        """Bought memory (dram, cxl or ssd) spread over the amortization period."""
        usd_per_GB = {"dram": self.dram_usd_per_GB, "cxl": self.cxl_usd_per_GB, "ssd": self.ssd_usd_per_GB}[memory]
        return nbytes / GB * usd_per_GB / (self.amortize_years * HOURS_PER_YEAR)


def load_prices(name_or_path: str | Path) -> Prices:
    path = resolve("prices", name_or_path)
    data = dict(load_toml(path))
    where = str(path)
    gpus = data.pop("gpu", None)
    if not isinstance(gpus, dict) or not gpus:
        raise UserError(f"{where}: missing [gpu.<hardware>] tables with usd_per_gpu_hour or usd_per_gpu")
    prices = build(Prices, data, where)
    hourly = {
        name: _hourly(build(GPUPrice, table, f"{where} [gpu.{name}]"), prices.amortize_years, f"{where} [gpu.{name}]")
        for name, table in gpus.items()
    }
    return Prices(**{**prices.__dict__, "gpu_usd_per_hour": hourly})


def _hourly(price: GPUPrice, years: float, where: str) -> float:
    if bool(price.usd_per_gpu_hour) == bool(price.usd_per_gpu):
        raise UserError(f"{where}: give one of usd_per_gpu_hour or usd_per_gpu")
    return price.usd_per_gpu_hour or price.usd_per_gpu / (years * HOURS_PER_YEAR)
