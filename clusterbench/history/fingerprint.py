"""The hardware fingerprint: what makes two runs comparable, and what each host is.

Runs are compared only with runs on the same hardware. The run's fingerprint is a hash of facts
results.json always holds, whatever tests were selected: how many nodes and ranks, and the model,
memory and core count of rank 0's devices. It leaves out host names (a nightly job may get other
nodes of the same kind), serial numbers and UUIDs (a replaced GPU is the same hardware model),
timestamps, driver versions, temperatures and clocks (they change without the hardware changing).

Each host's own fingerprint comes from the inventory the health tests record (CPU, cores, memory,
NUMA, GPU models); a host the health tests did not see is recorded without one, and says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

GIB = 2**30


@dataclass(frozen=True)
class HostFingerprint:
    hostname: str
    fingerprint: str | None  # None when no inventory of this host was recorded
    hardware: dict[str, Any]  # the facts hashed, or {"unknown": why}


def digest(facts: Any) -> str:
    """A short stable hash of JSON-able facts (sorted keys: dict order never changes it)."""
    text = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _gib(value: Any) -> int | None:
    # Rounded to whole GiB: the kernel's reservations move MemTotal by megabytes between boots.
    return round(value / GIB) if isinstance(value, (int, float)) else None


def device_facts(device: dict[str, Any]) -> dict[str, Any]:
    """The lasting facts of one device as RunInfo.devices lists it."""
    return {
        "kind": device.get("kind"),
        "name": device.get("name"),
        "memory_gib": _gib(device.get("memory_bytes")),
        "compute_capability": device.get("compute_capability"),
        "cores": device.get("count_cores"),
    }


def run_fingerprint(run: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(fingerprint, the facts it hashes) of a run, from results.json's `run` object."""
    facts = {
        "nodes": len(run.get("hosts") or []),
        "world_size": run.get("world_size"),
        "devices": [device_facts(d) for d in run.get("devices") or []],
    }
    return digest(facts), facts


def host_facts(inventory: dict[str, Any]) -> dict[str, Any]:
    """The lasting facts of one node from its health inventory (NodeInventory.to_json())."""
    host = inventory.get("host") or {}
    gpu = inventory.get("gpu") or {}
    gpus = sorted(
        (str(g.get("name")), _gib(g.get("memory_total_bytes")) or 0) for g in gpu.get("gpus") or []
    )
    return {
        "cpu_model": host.get("cpu_model"),
        "sockets": host.get("sockets"),
        "cores_physical": host.get("cores_physical"),
        "cores_logical": host.get("cores_logical"),
        "memory_gib": _gib(host.get("memory_total_bytes")),
        "numa_nodes": host.get("numa_nodes"),
        "gpus": [list(g) for g in gpus],
    }


def host_fingerprints(run: dict[str, Any]) -> list[HostFingerprint]:
    """One entry per host of the run; hosts without a recorded inventory say why."""
    inventory = run.get("inventory") or {}
    hosts = sorted(set(run.get("hosts") or []) | set(inventory))
    result = []
    for hostname in hosts:
        if hostname in inventory and isinstance(inventory[hostname], dict):
            facts = host_facts(inventory[hostname])
            result.append(HostFingerprint(hostname, digest(facts), facts))
        else:
            result.append(HostFingerprint(hostname, None, {"unknown": "no inventory: the health tests did not run"}))
    return result
