"""The host around the GPUs: CPU, memory, NUMA, kernel, OS and the software stack the probes use.

Every field is read on its own and may be None, with the reason in `unavailable`; the host inventory
must run on any Linux machine, GPU or not, container or not. `root` lets tests point the /proc and
/sys reads at a fake tree.
"""

from __future__ import annotations

import os
import platform
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class HostInventory:
    hostname: str
    cpu_model: str | None = None
    sockets: int | None = None
    cores_physical: int | None = None
    cores_logical: int | None = None
    memory_total_bytes: int | None = None
    numa_nodes: int | None = None
    kernel: str | None = None
    os: str | None = None
    python: str | None = None
    torch: str | None = None
    cuda_runtime: str | None = None
    nccl: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def read_host_inventory(root: Path = Path("/")) -> HostInventory:
    inventory = HostInventory(hostname=socket.gethostname())
    missing = inventory.unavailable
    cpuinfo = _read_text(root / "proc/cpuinfo")
    inventory.cpu_model = _cpu_model(cpuinfo)
    if inventory.cpu_model is None:
        missing["cpu_model"] = "no model name in /proc/cpuinfo (Arm kernels name only the CPU part)"
    packages, cores = _cpu_topology(root / "sys/devices/system/cpu")
    inventory.sockets = packages or None
    inventory.cores_physical = cores or None
    if not packages:
        missing["sockets"] = missing["cores_physical"] = "no CPU topology under /sys/devices/system/cpu"
    inventory.cores_logical = os.cpu_count()
    inventory.memory_total_bytes = _memory_total(_read_text(root / "proc/meminfo"))
    if inventory.memory_total_bytes is None:
        missing["memory_total_bytes"] = "no MemTotal in /proc/meminfo"
    node_dir = root / "sys/devices/system/node"
    nodes = [p for p in _list_dir(node_dir) if p.name.startswith("node") and p.name[4:].isdigit()]
    inventory.numa_nodes = len(nodes) or None
    if not nodes:
        missing["numa_nodes"] = "no /sys/devices/system/node (kernel without NUMA support?)"
    inventory.kernel = platform.release() or None
    inventory.os = _os_release(_read_text(root / "etc/os-release"))
    if inventory.os is None:
        missing["os"] = "no PRETTY_NAME in /etc/os-release"
    inventory.python = platform.python_version()
    _read_torch_stack(inventory)
    return inventory


def _read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _list_dir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def _cpu_model(cpuinfo: str) -> str | None:
    # x86 says "model name"; some Arm and POWER kernels say "Model" or "cpu".
    for key in ("model name", "Model", "cpu"):
        for line in cpuinfo.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key and value.strip():
                return value.strip()
    return None


def _cpu_topology(cpu_dir: Path) -> tuple[int, int]:
    """(sockets, physical cores) from each online CPU's topology files, as lscpu counts them."""
    packages: set[str] = set()
    cores: set[tuple[str, str]] = set()
    for cpu in _list_dir(cpu_dir):
        if not (cpu.name.startswith("cpu") and cpu.name[3:].isdigit()):
            continue
        package = _read_text(cpu / "topology/physical_package_id").strip()
        core = _read_text(cpu / "topology/core_id").strip()
        if package:
            packages.add(package)
            cores.add((package, core))
    return len(packages), len(cores)


def _memory_total(meminfo: str) -> int | None:
    for line in meminfo.splitlines():
        if line.startswith("MemTotal:"):
            amount, _, unit = line.split(":", 1)[1].strip().partition(" ")
            return int(amount) * (1024 if unit.strip() == "kB" else 1)
    return None


def _os_release(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"') or None
    return None


def _read_torch_stack(inventory: HostInventory) -> None:
    missing = inventory.unavailable
    try:
        import torch
    except ImportError:
        missing["torch"] = missing["cuda_runtime"] = missing["nccl"] = "torch is not installed"
        return
    inventory.torch = torch.__version__
    inventory.cuda_runtime = torch.version.cuda
    if inventory.cuda_runtime is None:
        missing["cuda_runtime"] = "torch is built without CUDA"
    # Asking for NCCL's version without a usable GPU would only report torch's build, not a runtime.
    if not torch.cuda.is_available():
        missing["nccl"] = "CUDA not available"
        return
    try:
        version = torch.cuda.nccl.version()
    except (AttributeError, RuntimeError) as exc:
        missing["nccl"] = f"torch.cuda.nccl.version() failed: {exc}"
        return
    inventory.nccl = ".".join(str(part) for part in version) if isinstance(version, tuple) else str(version)
