"""Health findings: faults that fail a node whatever the profile says, each with what to do about it.

The probes (clusterbench.probes.health) read the NVML snapshot and the load report; these rules
decide what in them is a fault. They are DCGM-style rules (a fault class,
                                                           a severity, a recovery action), applied to the NVML
snapshot and, for what only shows under load, to the throttle sampler's report:

- a GPU lost, or one NVML cannot open                                  fail
- uncorrected ECC errors since the driver loaded                       fail
  (lifetime uncorrected errors with none since the driver loaded       warn)
- a page retirement or row remap pending, or a row remap failure       fail
- PCIe width below the link's maximum                                  fail
- PCIe generation below the maximum *while under load*                 fail
  (GPUs drop the link to Gen1 at idle to save power, so an idle reading proves nothing)
- some NVLinks down while others are up                                fail
  (all links down                                                      warn: Fabric Manager, or a
                                                                       PCIe card without bridges)
- thermal or hardware slowdown under load                              fail
- SwPowerCap under load with the enforced power limit below default    fail
  (SwPowerCap at the default limit is a GPU doing dense work at its rated power: no finding)
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, Literal

from clusterbench.probes.health.clock_events import POWER_CAP, THERMAL
from clusterbench.probes.health.nvml_reader import GpuInventory, GpuRecord
from clusterbench.probes.health.throttle import GpuLoad, LoadReport

Severity = Literal["fail", "warn"]


@dataclass(frozen=True)
class HealthFinding:
    host: str
    gpu_index: int | None  # NVML index; None for a finding about the whole host or run
    uuid: str | None
    metric: str  # the gpu.* metric (or inventory field) the finding is about
    severity: Severity
    message: str  # what is wrong, where, in one line
    action: str  # what an operator should do about it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_LOST_ACTION = (
    "drain the node; look in dmesg for Xid 79 (fallen off the bus) or other Xid errors; reset the GPU "
    "(nvidia-smi -r) or power-cycle the node; RMA the GPU if it happens again"
)
_ECC_ACTION = (
    "drain the node and reset the GPU (nvidia-smi -r) or reboot so the faulty memory is remapped or retired; "
    "run dcgmi diag -r 3; RMA the GPU if uncorrected errors recur"
)
_PCIE_ACTION = "reseat the card or check the riser/slot; lspci -vv shows the trained link (LnkSta) against LnkCap"
_NVLINK_ACTION = (
    "check nvidia-smi nvlink -s and the Fabric Manager log; reset the GPU, then reseat or RMA the GPU or "
    "NVSwitch baseboard if the link stays down"
)


def gpu_label(host: str, index: int, uuid: str | None) -> str:
    return f"host {host} GPU {index}" + (f" ({uuid})" if uuid else "")


def health_findings(inventory: GpuInventory, host: str, load: LoadReport | None = None) -> list[HealthFinding]:
    """Every rule above, for every GPU. `load` is the ThrottleSampler report of a loaded run, if any."""
    findings: list[HealthFinding] = []
    for gpu in inventory.gpus:
        gpu_load = load.gpus.get(gpu.index) if load else None
        if gpu.lost:
            findings += _lost(host, gpu)
        else:
            findings += [*_ecc(host, gpu), *_memory_repair(host, gpu), *_pcie(host, gpu, gpu_load), *_nvlink(host, gpu)]
        if gpu_load is not None:
            findings.extend(_under_load(host, gpu, gpu_load))
    return findings


def lost_gpu_findings(inventory: GpuInventory, host: str, skip: Collection[int] = ()) -> list[HealthFinding]:
    """A finding for every GPU NVML cannot use (outside `skip`): a node fact, whoever drives the GPU.

    CUDA cannot enumerate a GPU that fell off the bus, so no process pairs with it; the node's
    reporter names it from the whole node's inventory."""
    return [finding for gpu in inventory.gpus if gpu.lost and gpu.index not in skip for finding in _lost(host, gpu)]


def _finding(host: str, gpu: GpuRecord, metric: str, severity: Severity, what: str, action: str) -> HealthFinding:
    message = f"{gpu_label(host, gpu.index, gpu.uuid)} {what}"
    return HealthFinding(host, gpu.index, gpu.uuid, metric, severity, message, action)


def _lost(host: str, gpu: GpuRecord) -> list[HealthFinding]:
    return [_finding(host, gpu, "gpu.count", "fail", f"is unusable: {gpu.lost}", _LOST_ACTION)]


def _ecc(host: str, gpu: GpuRecord) -> list[HealthFinding]:
    ecc = gpu.ecc
    if ecc.volatile_uncorrected:
        return [_finding(
            host, gpu, "gpu.ecc_uncorrected", "fail",
            f"has {ecc.volatile_uncorrected} uncorrected ECC errors since the driver loaded", _ECC_ACTION,
        )]
    if ecc.aggregate_uncorrected:
        return [_finding(
            host, gpu, "gpu.ecc_uncorrected", "warn",
            f"has {ecc.aggregate_uncorrected} uncorrected ECC errors in its lifetime (none since the driver loaded)",
            "check that the faulty memory was remapped or retired (nvidia-smi -q -d ROW_REMAPPER,PAGE_RETIREMENT); "
            "RMA the GPU if the lifetime count keeps growing",
        )]
    return []


def _memory_repair(host: str, gpu: GpuRecord) -> list[HealthFinding]:
    repair = gpu.memory_repair
    what = "row remap" if repair.kind == "remapped_rows" else "page retirement"
    findings = []
    if repair.pending:
        findings.append(_finding(
            host, gpu, "gpu.retired_pages", "fail", f"has a {what} pending",
            "reset the GPU (nvidia-smi -r) or reboot the node to apply it; until then the faulty memory stays in use",
        ))
    if repair.failure:
        findings.append(_finding(
            host, gpu, "gpu.retired_pages", "fail", "has a row remap failure: no spare row was left for a faulty one",
            "drain the node and RMA the GPU",
        ))
    return findings


def _pcie(host: str, gpu: GpuRecord, load: GpuLoad | None) -> list[HealthFinding]:
    pcie = gpu.pcie
    loaded_gen = load.pcie_gen_max if load is not None else None
    narrow = pcie.width_current is not None and pcie.width_max is not None and pcie.width_current < pcie.width_max
    slow = loaded_gen is not None and pcie.gen_max is not None and loaded_gen < pcie.gen_max
    if not (narrow or slow):
        return []
    gen = f"Gen{loaded_gen}" if loaded_gen is not None else f"Gen{pcie.gen_current} (idle)"
    metric = "gpu.pcie_width" if narrow else "gpu.pcie_gen"
    what = f"PCIe link at {gen} x{pcie.width_current}, max Gen{pcie.gen_max} x{pcie.width_max}"
    return [_finding(host, gpu, metric, "fail", f"{what}: reseat the card or check the riser/slot", _PCIE_ACTION)]


def _nvlink(host: str, gpu: GpuRecord) -> list[HealthFinding]:
    nvlink = gpu.nvlink
    if nvlink is None or not nvlink.down:
        return []
    total = len(nvlink.links)
    if nvlink.up == 0:
        return [_finding(
            host, gpu, "gpu.nvlink_up", "warn", f"has all {total} NVLinks down",
            "on an NVSwitch system start nvidia-fabricmanager and check its log; on a PCIe card this is expected "
            "without NVLink bridges",
        )]
    down = ", ".join(str(link) for link in nvlink.down)
    return [_finding(
        host, gpu, "gpu.nvlink_up", "fail", f"has NVLink {down} down ({nvlink.up} of {total} up)", _NVLINK_ACTION,
    )]


def _under_load(host: str, gpu: GpuRecord, load: GpuLoad) -> list[HealthFinding]:
    findings = []
    if load.lost and not gpu.lost:
        findings.append(_finding(host, gpu, "gpu.count", "fail", f"was lost under load: {load.lost}", _LOST_ACTION))
    seen = load.throttling_seen
    faults = [name for name in seen if name != POWER_CAP]
    where = f"in {load.throttled_samples} of {len(load.samples)} samples under load"
    if faults:
        hottest = max(load.temperature_samples_c, default=None)
        heat = f", up to {hottest:.0f} C" if hottest is not None else ""
        action = (
            "check cooling: fans, airflow, inlet temperature, heatsink contact; compare with the node's other GPUs"
            if set(faults) <= THERMAL else
            "hardware slowdown: check temperatures, PSUs and the BMC event log (power brake); reset the GPU and "
            "rerun, RMA if it recurs"
        )
        findings.append(_finding(
            host, gpu, "gpu.throttle_reasons", "fail", f"throttled ({', '.join(faults)}) {where}{heat}", action,
        ))
    if POWER_CAP in seen:
        limit, default = gpu.power_limit_w, gpu.power_default_limit_w
        if limit is not None and default is not None and limit < default:
            findings.append(_finding(
                host, gpu, "gpu.throttle_reasons", "fail",
                f"held at its power cap {where}: enforced limit {limit:.0f} W is below the default {default:.0f} W",
                f"restore the default limit (nvidia-smi -i {gpu.index} -pl {default:.0f}) and find what lowered it",
            ))
        elif limit is None or default is None:
            findings.append(_finding(
                host, gpu, "gpu.throttle_reasons", "warn",
                f"held at its power cap {where}; NVML did not say whether the limit is the default",
                "compare nvidia-smi -q -d POWER (Current vs Default Power Limit) with the other GPUs",
            ))
    return findings
