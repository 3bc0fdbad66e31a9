"""The golden configuration: is every node what was ordered, and are all nodes of a run alike?

Two comparisons over `NodeInventory.to_json()` dicts (plain data, so they work the same on one node
and on inventories gathered from every node):

- `check_golden`: against values pinned in the profile (the contract or the fleet standard);
- `find_outliers`: against the majority of this run, which needs nobody to have written anything
  down: the one node with an older driver, or the one GPU whose link trained at x8, stands out.

Both return HealthFindings. An outlier against a tie (no majority) is not blamed on anyone; the tie
is reported as such.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from clusterbench.judge.health_rules import HealthFinding, Severity, gpu_label

# Reported GPU memory is what the driver leaves usable (an "80GB" H100 reports 79.6 GiB, ECC
# reservations take more on some GPUs); a GPU of another size class differs by far more than this.
MEMORY_TOLERANCE = 0.10
_NAMES_SHOWN = 5  # hosts named per value in a tie; beyond that, a count

GOLDEN_KEYS = (
    "gpu_model", "gpu_count_per_node", "driver_version", "vbios", "pcie_gen", "pcie_width", "nvlink_count",
    "memory_gb",
)

_SAME_IMAGE = "install the same software image as the other hosts"


def check_golden(inventory: Mapping[str, Any], expected: Mapping[str, Any]) -> list[HealthFinding]:
    """Findings for every pinned value this node's inventory does not match.

    Matching rules: gpu_model is a case-insensitive substring of NVML's name ("H100" matches
    "NVIDIA H100 80GB HBM3"); driver_version matches itself or as a dotted prefix ("550" matches
    "550.54.15"); vbios is exact but for case; pcie_gen/pcie_width are the link's maximum (the trained link is
    judged against that maximum by the health findings); nvlink_count is links up per GPU;
    memory_gb is GiB within MEMORY_TOLERANCE. Raises ValueError on an unknown key or a bad value.
    """
    wanted = validate_golden(expected)
    if not wanted:
        return []
    host = inventory["hostname"]
    gpu_inventory = inventory.get("gpu")
    if gpu_inventory is None:
        keys = ", ".join(f"{key}={value}" for key, value in wanted.items())
        reason = inventory.get("gpu_not_measured")
        return [HealthFinding(
            host, None, None, "gpu.count", "fail",
            f"host {host}: GPU inventory not measured ({reason}), so {keys} cannot be confirmed",
            "install or load the NVIDIA driver, or run this profile on the GPU nodes it describes",
        )]
    findings = []

    def node(metric: str, what: str, action: str) -> HealthFinding:
        return HealthFinding(host, None, None, metric, "fail", f"host {host}: {what}", action)

    count, wanted_count = gpu_inventory["count"], wanted.get("gpu_count_per_node")
    if wanted_count is not None and count != wanted_count:
        findings.append(node(
            "gpu.count", f"{count} GPUs, expected {wanted_count} (golden configuration)",
            "check that every GPU is seated and powered (lspci | grep -i nvidia, dmesg for Xid 79); RMA a missing one",
        ))
    if "driver_version" in wanted:
        actual = gpu_inventory.get("driver_version")
        if actual is None or not _version_matches(actual, wanted["driver_version"]):
            expected_driver = wanted["driver_version"]
            findings.append(node(
                "inventory.driver_version", f"driver {actual}, expected {expected_driver} (golden configuration)",
                f"install NVIDIA driver {expected_driver}",
            ))
    for gpu in gpu_inventory["gpus"]:
        if not gpu.get("lost"):
            findings += _check_gpu(host, gpu, wanted)
    return findings


def validate_golden(expected: Mapping[str, Any]) -> dict[str, Any]:
    """The pinned values, normalised; ValueError naming the key on an unknown key or a bad value."""
    unknown = sorted(set(expected) - set(GOLDEN_KEYS))
    if unknown:
        raise ValueError(
            f"unknown golden configuration key(s) {', '.join(unknown)}; known keys: {', '.join(GOLDEN_KEYS)}"
        )
    wanted: dict[str, Any] = {}
    for key, value in expected.items():
        if key in ("gpu_model", "driver_version", "vbios"):
            wanted[key] = str(value)
        elif key == "memory_gb":
            wanted[key] = _number(key, value, float)
        else:
            wanted[key] = _number(key, value, int)
    return wanted


def _number(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        whole = "whole " if kind is int else ""
        raise ValueError(f"golden configuration {key} = {value!r}: expected a {whole}number")
    return kind(value)


def _version_matches(actual: str, expected: str) -> bool:
    return actual == expected or actual.startswith(expected + ".")


def _check_gpu(host: str, gpu: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[HealthFinding]:
    findings = []
    missing = gpu.get("unavailable", {})
    nvlink = gpu.get("nvlink")
    memory = gpu.get("memory_total_bytes")
    checks: list[tuple[str, str, str, Any, Callable[[Any, Any], bool], str, str]] = [
        # key, label, NVML field (for the reason it is missing), actual, matches, metric, action
        ("gpu_model", "model", "name", gpu.get("name"), lambda a, e: e.lower() in a.lower(),
         "inventory.gpu_model", "replace the GPU with the model ordered, or correct the golden configuration"),
        ("vbios", "VBIOS", "vbios", gpu.get("vbios"), lambda a, e: a.lower() == e.lower(),
         "inventory.vbios", "flash the expected VBIOS (vendor tool or nvflash) or correct the golden configuration"),
        ("pcie_gen", "PCIe max gen", "pcie.gen_max", gpu["pcie"].get("gen_max"), lambda a, e: a == e,
         "gpu.pcie_gen", "check the slot's PCIe generation in the BIOS setup and the riser/retimer"),
        ("pcie_width", "PCIe max width", "pcie.width_max", gpu["pcie"].get("width_max"), lambda a, e: a == e,
         "gpu.pcie_width", "check the slot's bifurcation setting in the BIOS and the riser"),
        ("nvlink_count", "NVLinks up", "nvlink", nvlink["up"] if nvlink else None, lambda a, e: a == e,
         "gpu.nvlink_up", "check nvidia-smi nvlink -s and the Fabric Manager log; reset or reseat the GPU"),
        ("memory_gb", "memory GiB", "memory_total_bytes", round(memory / 2**30, 1) if memory else None,
         lambda a, e: abs(a - e) <= e * MEMORY_TOLERANCE,
         "inventory.memory_gb", "a GPU of another memory size: replace it, or correct the golden configuration"),
    ]
    for key, label, nvml_field, actual, matches, metric, action in checks:
        if key not in wanted:
            continue
        expected = wanted[key]
        if actual is None:
            what = f"{label} cannot be confirmed ({missing.get(nvml_field, 'not reported')}), expected {expected}"
        elif not matches(actual, expected):
            what = f"{label} {actual}, expected {expected} (golden configuration)"
        else:
            continue
        where = gpu_label(host, gpu["index"], gpu.get("uuid"))
        findings.append(HealthFinding(host, gpu["index"], gpu.get("uuid"), metric, "fail", f"{where}: {what}", action))
    return findings


@dataclass(frozen=True)
class Fact:
    """One inventory field compared across the nodes of a run."""

    key: str
    label: str
    get: Callable[[Mapping[str, Any]], Any]  # from a node inventory, or from one GPU's record
    severity: Severity
    action: str
    metric: str = ""

    @property
    def finding_metric(self) -> str:
        return self.metric or f"inventory.{self.key}"


def _field(*path: str) -> Callable[[Mapping[str, Any]], Any]:
    def get(record: Mapping[str, Any]) -> Any:
        value: Any = record
        for step in path:
            value = value.get(step) if isinstance(value, Mapping) else None
        return value

    return get


def _memory_16gib(node: Mapping[str, Any]) -> int | None:
    # MemTotal differs by a few MB between identical hosts (firmware and kernel reservations); a
    # missing DIMM is 16 GiB or more, so hosts are compared to the nearest 16 GiB.
    total = node["host"].get("memory_total_bytes")
    return round(total / 2**30 / 16) * 16 if total else None


HOST_FACTS = (
    Fact("nvml", "NVML", lambda n: "available" if n.get("gpu") else "unavailable", "fail",
         "install or load the NVIDIA driver (nvidia-smi must work)"),
    Fact("driver_version", "driver", _field("gpu", "driver_version"), "fail",
         "install the driver version the other hosts run"),
    Fact("cuda_driver_version", "CUDA driver", _field("gpu", "cuda_driver_version"), "fail",
         "install the driver version the other hosts run"),
    Fact("gpu_count", "GPU count", _field("gpu", "count"), "fail",
         "check that every GPU is seated and powered (lspci, dmesg for Xid 79); RMA a missing GPU", "gpu.count"),
    Fact("torch", "torch", _field("host", "torch"), "fail", _SAME_IMAGE),
    Fact("cuda_runtime", "CUDA runtime", _field("host", "cuda_runtime"), "fail", _SAME_IMAGE),
    Fact("nccl", "NCCL", _field("host", "nccl"), "fail", _SAME_IMAGE),
    Fact("kernel", "kernel", _field("host", "kernel"), "warn", _SAME_IMAGE),
    Fact("os", "OS", _field("host", "os"), "warn", _SAME_IMAGE),
    Fact("python", "Python", _field("host", "python"), "warn", _SAME_IMAGE),
    Fact("cpu_model", "CPU", _field("host", "cpu_model"), "warn", "check the host's hardware against the order"),
    Fact("sockets", "CPU sockets", _field("host", "sockets"), "warn", "check the host's hardware against the order"),
    Fact("cores_physical", "physical cores", _field("host", "cores_physical"), "warn",
         "check BIOS settings (cores disabled?) and the host's hardware"),
    Fact("numa_nodes", "NUMA nodes", _field("host", "numa_nodes"), "warn",
         "check the BIOS NUMA setting (NPS / sub-NUMA clustering)"),
    Fact("memory_gib", "host memory GiB (nearest 16)", _memory_16gib, "warn",
         "check for a missing or failed DIMM (dmidecode -t memory, BMC event log)"),
)

GPU_FACTS = (
    Fact("gpu_model", "model", _field("name"), "fail", "replace the GPU with the model the others are"),
    Fact("vbios", "VBIOS", _field("vbios"), "fail", "flash the VBIOS the other GPUs run"),
    Fact("memory_mib", "memory MiB",
         lambda g: g["memory_total_bytes"] // 2**20 if g.get("memory_total_bytes") else None,
         "fail", "check the ECC mode and the GPU model; RMA a GPU reporting less memory than its peers"),
    Fact("ecc_mode", "ECC enabled", _field("ecc", "mode_current"), "fail",
         "set the ECC mode the other GPUs have (nvidia-smi -e) and reset the GPU"),
    Fact("pcie_gen_max", "PCIe max gen", _field("pcie", "gen_max"), "fail",
         "check the slot's PCIe generation in the BIOS setup and the riser/retimer", "gpu.pcie_gen"),
    Fact("pcie_width_max", "PCIe max width", _field("pcie", "width_max"), "fail",
         "check the slot's bifurcation setting in the BIOS and the riser", "gpu.pcie_width"),
    Fact("pcie_width", "PCIe width", _field("pcie", "width_current"), "fail",
         "reseat the card or check the riser/slot", "gpu.pcie_width"),
    Fact("nvlink_up", "NVLinks up", _field("nvlink", "up"), "fail",
         "check nvidia-smi nvlink -s and the Fabric Manager log; reset or reseat the GPU", "gpu.nvlink_up"),
    Fact("power_limit_w", "power limit W", _field("power_limit_w"), "fail",
         "set the power limit the other GPUs have (nvidia-smi -pl) and find what changed it", "gpu.power_w"),
)


@dataclass(frozen=True)
class _Vote:
    host: str
    gpu_index: int | None
    uuid: str | None
    value: Any

    @property
    def where(self) -> str:
        if self.gpu_index is None:
            return f"host {self.host}"
        return gpu_label(self.host, self.gpu_index, self.uuid)


def find_outliers(inventories: list[Mapping[str, Any]]) -> list[HealthFinding]:
    """Name every host (or GPU) whose value of a fact differs from the majority of this run."""
    findings: list[HealthFinding] = []
    for fact in HOST_FACTS:
        votes = [_Vote(node["hostname"], None, None, fact.get(node)) for node in inventories]
        findings += _outliers(fact, votes, "hosts")
    for fact in GPU_FACTS:
        votes = [
            _Vote(node["hostname"], gpu["index"], gpu.get("uuid"), fact.get(gpu))
            for node in inventories if node.get("gpu")
            for gpu in node["gpu"]["gpus"] if not gpu.get("lost")
        ]
        findings += _outliers(fact, votes, "GPUs")
    return findings


def _outliers(fact: Fact, votes: list[_Vote], unit: str) -> list[HealthFinding]:
    # A value NVML or /proc could not give is reported where it is read, not voted on here.
    present = [vote for vote in votes if vote.value is not None]
    counts = Counter(vote.value for vote in present)
    if len(counts) < 2:
        return []
    ranked = counts.most_common()
    top = ranked[0][1]
    leaders = [value for value, count in ranked if count == top]
    if len(leaders) > 1:
        return [_tie(fact, present, counts, unit)]
    majority = leaders[0]
    return [
        HealthFinding(
            vote.host, vote.gpu_index, vote.uuid, fact.finding_metric, fact.severity,
            f"{vote.where}: {fact.label} {vote.value} differs from {majority} on {top} of {len(present)} {unit}",
            fact.action,
        )
        for vote in present if vote.value != majority
    ]


def _tie(fact: Fact, present: list[_Vote], counts: Counter, unit: str) -> HealthFinding:
    groups = []
    for value, count in counts.most_common():
        names = [vote.where.removeprefix("host ") for vote in present if vote.value == value]
        shown = ", ".join(names[:_NAMES_SHOWN])
        if count > _NAMES_SHOWN:
            shown += f" and {count - _NAMES_SHOWN} more"
        groups.append(f"{value} on {shown}")
    return HealthFinding(
        "*", None, None, fact.finding_metric, "warn",
        f"{fact.label}: no majority across {len(present)} {unit} (a tie): {'; '.join(groups)}",
        f"decide which is right and align the others; {fact.action}",
    )
