"""What machine was measured: CPU, memory, NUMA nodes, the disk behind the scratch path,
library versions, and the GPU through NVML. Every probe degrades to "unknown", never fails."""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

from engramsim.measure import import_pynvml

SYS_NODES = Path("/sys/devices/system/node")
SYS_BDI = Path("/sys/class/bdi")


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def meminfo(text: str | None = None) -> dict:
    """MemTotal and MemAvailable in bytes from /proc/meminfo (or the given text)."""
    text = _read(Path("/proc/meminfo")) if text is None else text
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * 1024
    return {"total_bytes": values.get("MemTotal", 0), "available_bytes": values.get("MemAvailable", 0)}


def free_memory_bytes() -> int:
    return meminfo()["available_bytes"]


def cpu_model(text: str | None = None) -> str:
    text = _read(Path("/proc/cpuinfo")) if text is None else text
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def numa_nodes(root: Path = SYS_NODES) -> list[dict]:
    """NUMA nodes with their CPUs and memory. A node without CPUs is how CXL memory appears."""
    nodes = []
    for node_dir in sorted(root.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        mem = meminfo(_read(node_dir / "meminfo").replace(f"Node {node_dir.name[4:]} ", ""))
        cpulist = _read(node_dir / "cpulist")
        nodes.append(
            {
                "node": int(node_dir.name[4:]),
                "cpus": cpulist,
                "cpu_less": not cpulist,
                "total_bytes": mem["total_bytes"],
            }
        )
    return nodes


def disk_info(path: Path) -> dict:
    """The mount (device, filesystem type) holding `path`: the longest mount point above it."""
    target = os.path.realpath(path)
    best = {"mount": "", "device": "unknown", "fstype": "unknown"}
    for line in _read(Path("/proc/mounts")).splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        device, mount, fstype = parts[0], parts[1], parts[2]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) > len(best["mount"]):
            best = {"mount": mount, "device": device, "fstype": fstype}
    try:
        st = os.statvfs(target)
        best["free_bytes"] = st.f_bavail * st.f_frsize
    except OSError:
        best["free_bytes"] = 0
    best["path"] = str(path)
    best["read_ahead_bytes"] = read_ahead_bytes(target)
    return best


def read_ahead_bytes(path: Path | str, bdi_root: Path = SYS_BDI) -> int:
    """The read-ahead window of the filesystem holding `path`: its backing device's
    read_ahead_kb (/sys/class/bdi/MAJ:MIN/, the block queue's read_ahead_kb), which Linux copies
    into each open file's ra_pages; an mmap fault without MADV_RANDOM reads that many bytes
    around the missing page (mm/filemap.c, do_sync_mmap_readahead). 0 where unknown."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return 0
    kb = _read(bdi_root / f"{os.major(dev)}:{os.minor(dev)}" / "read_ahead_kb")
    return int(kb) * 1024 if kb.isdigit() else 0


def host_info(scratch: Path) -> dict:
    import numpy

    info = {
        "hostname": socket.gethostname(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count() or 1,
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        **{f"memory_{k}": v for k, v in meminfo().items()},
        "numa_nodes": numa_nodes(),
        "scratch_disk": disk_info(scratch),
        "numpy": numpy.__version__,
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def gpu_info() -> dict | None:
    """The first GPU through NVML and torch, or None when there is no usable CUDA device."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info = {
        "name": props.name,
        "memory_bytes": props.total_memory,
        "count": torch.cuda.device_count(),
        "cuda": torch.version.cuda,
        "capability": f"{props.major}.{props.minor}",
        "multiprocessors": props.multi_processor_count,
    }
    info.update(_nvml_info())
    return info


def _nvml_info() -> dict:
    pynvml = import_pynvml()
    if pynvml is None:
        return {"nvml": "nvidia-ml-py not installed"}
    try:
        pynvml.nvmlInit()
    except Exception as e:  # no driver, no permission: the profile says so
        return {"nvml": f"unavailable: {e}"}
    try:
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        info = {
            "driver": _str(pynvml.nvmlSystemGetDriverVersion()),
            "pcie_gen_max": _try(pynvml.nvmlDeviceGetMaxPcieLinkGeneration, h),
            "pcie_gen_current": _try(pynvml.nvmlDeviceGetCurrPcieLinkGeneration, h),
            "pcie_width_max": _try(pynvml.nvmlDeviceGetMaxPcieLinkWidth, h),
            "pcie_width_current": _try(pynvml.nvmlDeviceGetCurrPcieLinkWidth, h),
        }
        mem = _try(pynvml.nvmlDeviceGetMemoryInfo, h)
        if mem is not None:
            info["memory_free_bytes"] = int(mem.free)
        cuda_driver = _try(pynvml.nvmlSystemGetCudaDriverVersion)
        if cuda_driver:
            info["cuda_driver"] = f"{cuda_driver // 1000}.{cuda_driver % 1000 // 10}"
        links = []
        for link in range(getattr(pynvml, "NVML_NVLINK_MAX_LINKS", 18)):
            state = _try(pynvml.nvmlDeviceGetNvLinkState, h, link)
            if state is None:
                break
            links.append(bool(state))
        info["nvlink_active"] = sum(links)
        info["nvlink_links"] = len(links)
        return info
    finally:
        pynvml.nvmlShutdown()


def _try(fn, *args):
    try:
        return fn(*args)
    except Exception:
        return None


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
