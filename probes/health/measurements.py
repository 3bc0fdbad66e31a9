"""Turn the NVML inventory (and, where sampled, the load report) into gpu.* Measurements.

Each GPU is a location of its own, device "gpu<NVML index>" (not "cuda:<i>": the two orders differ
unless CUDA_DEVICE_ORDER=PCI_BUS_ID; the UUID and the paired CUDA device in `details` tie them
together). A CUDA device paired with no NVML GPU (a MIG slice, no UUID) is NOT MEASURED under its
own label, with the reason. A figure NVML could
not give is not guessed: it is listed in `not_measured` with the reason, per GPU, so that a GPU
missing a figure its peers have is visible rather than silently absent from the judgement.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterbench.metrics import METRICS
from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes.health.clock_events import throttling
from clusterbench.probes.health.nvml_reader import GpuInventory, GpuRecord
from clusterbench.probes.health.throttle import GpuLoad, LoadReport
from clusterbench.registry import declare_probe, metric

PROBE = declare_probe("gpu_health", per="device", module=__name__, metrics=[
    metric("gpu.count", "count", "higher", "health", "GPUs visible on the node", per="node"),
    metric("gpu.ecc_uncorrected", "count", "lower", "health", "uncorrected ECC errors (volatile)"),
    metric("gpu.ecc_corrected", "count", "lower", "health", "corrected ECC errors (volatile)"),
    metric("gpu.retired_pages", "count", "lower", "health", "retired pages or remapped rows"),
    metric("gpu.pcie_gen", "gen", "higher", "health", "current PCIe link generation"),
    metric("gpu.pcie_width", "lanes", "higher", "health", "current PCIe link width"),
    metric("gpu.nvlink_up", "count", "higher", "health", "NVLink (NVIDIA) or xGMI (AMD) links up"),
    metric("gpu.throttle_reasons", "count", "lower", "health", "active power/thermal clock-event reasons under load"),
    metric("gpu.temperature_c", "C", "lower", "health", "GPU temperature"),
    metric("gpu.power_w", "W", "lower", "health", "GPU power draw"),
])

PER_GPU_METRICS = (
    "gpu.ecc_uncorrected",
    "gpu.ecc_corrected",
    "gpu.retired_pages",
    "gpu.pcie_gen",
    "gpu.pcie_width",
    "gpu.nvlink_up",
    "gpu.temperature_c",
    "gpu.power_w",
    "gpu.throttle_reasons",
)
ALL_METRICS = ("gpu.count", *PER_GPU_METRICS)

NOT_UNDER_LOAD = "not sampled under load (run a load inside ThrottleSampler)"


@dataclass(frozen=True)
class Unmeasured:
    metric: str
    location: Location
    reason: str


@dataclass
class HealthMeasurements:
    measurements: list[Measurement] = field(default_factory=list)
    not_measured: list[Unmeasured] = field(default_factory=list)

    @classmethod
    def unavailable(
        cls, reason: str, host: str, rank: int = 0, metrics: tuple[str, ...] = ALL_METRICS, device: str = "node"
    ) -> HealthMeasurements:
        """`metrics` not measured at `device`, e.g. with NotMeasured's text when NVML is absent."""
        where = Location(host, rank, device)
        return cls(not_measured=[Unmeasured(metric, where, reason) for metric in metrics])

    def extend(self, other: HealthMeasurements) -> None:
        self.measurements += other.measurements
        self.not_measured += other.not_measured

    def attempts(self, metric: str) -> list[tuple[Location, Callable[[], Measurement]]]:
        """(location, measure) pairs for one metric, in the shape AcceptanceHandle.measure takes.

        Each callable returns the measurement or raises NotMeasured with the reason it is missing.
        """
        pairs: list[tuple[Location, Callable[[], Measurement]]] = [
            (m.location, functools.partial(_given, m)) for m in self.measurements if m.metric == metric
        ]
        pairs += [(u.location, functools.partial(_raise, u.reason)) for u in self.not_measured if u.metric == metric]
        return sorted(pairs, key=lambda pair: pair[0].device)

    def to_json(self) -> dict[str, Any]:
        return {
            "measurements": [m.to_json() for m in self.measurements],
            "not_measured": [
                {"metric": u.metric, "host": u.location.host, "rank": u.location.rank, "device": u.location.device,
                 "reason": u.reason}
                for u in self.not_measured
            ],
        }


def _given(measurement: Measurement) -> Measurement:
    return measurement


def _raise(reason: str) -> Measurement:
    raise NotMeasured(reason)


def gpu_measurements(
    inventory: GpuInventory, host: str, rank: int = 0, load: LoadReport | None = None, include_count: bool = True
) -> HealthMeasurements:
    """gpu.count (unless `include_count` is False) and every per-GPU figure of `inventory`'s GPUs."""
    result = HealthMeasurements()
    if include_count:
        result.measurements.append(gpu_count(inventory, host, rank))
    for gpu in inventory.gpus:
        _gpu(result, gpu, Location(host, rank, f"gpu{gpu.index}"), load.gpus.get(gpu.index) if load else None,
             load.not_measured if load else NOT_UNDER_LOAD)
    for label, reason in inventory.unpaired.items():
        result.not_measured += [Unmeasured(metric, Location(host, rank, label), reason) for metric in PER_GPU_METRICS]
    return result


def gpu_count(inventory: GpuInventory, host: str, rank: int = 0) -> Measurement:
    """The node's usable GPUs: every GPU NVML enumerates and can read, whoever drives it."""
    unusable = {gpu.index: gpu.lost for gpu in inventory.gpus if gpu.lost}
    return _measurement(
        "gpu.count", len(inventory.usable), Location(host, rank, "node"),
        details={"enumerated": len(inventory.gpus), "unusable": unusable, "driver_version": inventory.driver_version},
    )


def _measurement(
    metric: str, value: float, location: Location, samples: list[float] | None = None, details: dict | None = None
) -> Measurement:
    return Measurement(metric, float(value), METRICS[metric].unit, {}, location, samples or [], details or {})


def _gpu(result: HealthMeasurements, gpu: GpuRecord, location: Location, load: GpuLoad | None,
         load_missing: str | None) -> None:
    if gpu.lost:
        result.not_measured += [Unmeasured(metric, location, gpu.lost) for metric in PER_GPU_METRICS]
        return

    def emit(metric: str, value: float | None, why_missing: str, samples: list[float] | None = None,
             **details: Any) -> None:
        if value is None:
            result.not_measured.append(Unmeasured(metric, location, why_missing))
        else:
            details = {"uuid": gpu.uuid, "name": gpu.name, **details}
            if gpu.cuda_device is not None:
                details["cuda_device"] = gpu.cuda_device
            result.measurements.append(_measurement(metric, value, location, samples, details))

    ecc, repair, pcie = gpu.ecc, gpu.memory_repair, gpu.pcie
    ecc_off = "ECC is disabled" if ecc.mode_current is False else None
    emit("gpu.ecc_uncorrected", ecc.volatile_uncorrected, ecc_off or _why(gpu, "ecc.volatile_uncorrected"),
         aggregate=ecc.aggregate_uncorrected, ecc_mode=ecc.mode_current, ecc_mode_pending=ecc.mode_pending)
    emit("gpu.ecc_corrected", ecc.volatile_corrected, ecc_off or _why(gpu, "ecc.volatile_corrected"),
         aggregate=ecc.aggregate_corrected)
    emit("gpu.retired_pages", repair.total, _why(gpu, "memory_repair."), kind=repair.kind,
         corrected=repair.corrected, uncorrected=repair.uncorrected, pending=repair.pending, failure=repair.failure)
    _pcie_gen(emit, gpu, load)
    emit("gpu.pcie_width", pcie.width_current, _why(gpu, "pcie.width_current"), max=pcie.width_max)
    nvlink = gpu.nvlink
    emit("gpu.nvlink_up", nvlink.up if nvlink else None, _why(gpu, "nvlink"),
         links=len(nvlink.links) if nvlink else None, down=nvlink.down if nvlink else None)
    busy = load if load is not None and load.busy_samples else None
    if busy is not None and busy.temperature_samples_c:
        # The hottest moment under load is what a temperature threshold is about.
        emit("gpu.temperature_c", max(busy.temperature_samples_c), "", busy.temperature_samples_c, under_load=True)
    else:
        emit("gpu.temperature_c", gpu.temperature_c, _why(gpu, "temperature_c"), under_load=False)
    # Details of the figure (emit's **details), whatever NVML could read.
    limits: dict[str, Any] = {"limit_w": gpu.power_limit_w, "default_limit_w": gpu.power_default_limit_w}
    if busy is not None and busy.power_samples_w:
        emit("gpu.power_w", statistics.median(busy.power_samples_w), "", busy.power_samples_w, under_load=True,
             **limits)
    else:
        emit("gpu.power_w", gpu.power_w, _why(gpu, "power_w"), under_load=False, **limits)
    _throttle(emit, load, load_missing)


def _pcie_gen(emit: Callable[..., None], gpu: GpuRecord, load: GpuLoad | None) -> None:
    pcie = gpu.pcie
    if load is not None and load.pcie_gen_max is not None:
        emit("gpu.pcie_gen", load.pcie_gen_max, "", load.pcie_gen_samples, max=pcie.gen_max, under_load=True)
    elif pcie.gen_current is not None and pcie.gen_current == pcie.gen_max:
        emit("gpu.pcie_gen", pcie.gen_current, "", max=pcie.gen_max, under_load=False)
    elif pcie.gen_current is None:
        emit("gpu.pcie_gen", None, _why(gpu, "pcie.gen_current"))
    else:
        emit("gpu.pcie_gen", None,
             f"read at idle (Gen{pcie.gen_current} of max Gen{pcie.gen_max}): GPUs lower the link at idle, "
             f"so the generation is only judged under load; {NOT_UNDER_LOAD}")


def _throttle(emit: Callable[..., None], load: GpuLoad | None, load_missing: str | None) -> None:
    masks = [s for s in load.samples if s.clock_event_mask is not None] if load is not None else []
    if load is None or not masks:
        if load is not None and load.lost:
            reason = load.lost
        elif load is not None and load.not_measured:
            reason = load.not_measured
        elif load is not None and "clock_event_mask" in load.unavailable:
            reason = f"clock-event reasons: {load.unavailable['clock_event_mask']}"
        else:
            reason = load_missing or NOT_UNDER_LOAD
        emit("gpu.throttle_reasons", None, reason)
        return
    emit(
        "gpu.throttle_reasons", len(load.throttling_seen), "",
        [float(len(throttling(s.clock_events))) for s in masks],
        throttling=load.throttling_seen, clock_events=load.clock_events_seen,
        throttled_samples=load.throttled_samples, samples_taken=len(masks),
        sm_clock_median_mhz=load.sm_clock_median_mhz,
    )


def _why(gpu: GpuRecord, prefix: str) -> str:
    """The reasons NVML gave for the fields under `prefix`, e.g. "pcie.width_current: no permission"."""
    reasons = sorted({f"{name}: {why}" for name, why in gpu.unavailable.items() if name.startswith(prefix)})
    return "; ".join(reasons) or f"NVML gave no {prefix.rstrip('.')}"
