"""Clock-event (throttle) reasons, SM clock, power, temperature and PCIe generation sampled under load.

A snapshot at idle cannot show throttling (an idle GPU reports GpuIdle and nothing else) and shows
the PCIe link down-trained to save power, so both are judged from samples taken while a probe
loads the GPU, and only from those: a sample that says GpuIdle is kept but judges nothing.

    with ThrottleSampler(devices={"cuda:0": uuid}) as sampler:   # the GPU this process loads
        run_gemm()
    load = sampler.report

A process that loads its GPUs one after another (plain pytest on an 8-GPU node) samples each GPU
during its own load, not all of them during every load, or each would be idle 7/8 of the time:

    sampling = PerDeviceSampling()
    results = [sampling.during(label, uuid, run_gemm_on)() for label, uuid in devices]
    load = sampling.report

The sampler never stops the load it watches: when NVML is unavailable it samples nothing and its
report says why (`LoadReport.not_measured`).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from clusterbench.model import NotMeasured
from clusterbench.probes.health.clock_events import decode, throttling
from clusterbench.probes.health.gpu_pairing import pair_devices, read_gpu_ids
from clusterbench.probes.health.nvml_reader import read_clock_events, read_power, read_temperature
from clusterbench.probes.health.nvml_session import FieldReader, GpuLost, nvml_reason, nvml_session

GPU_IDLE_BIT = 0x1  # nvmlClocksEventReasonGpuIdle


@dataclass(frozen=True)
class LoadSample:
    t_s: float  # seconds since sampling started
    clock_event_mask: int | None
    sm_clock_mhz: int | None
    power_w: float | None
    temperature_c: int | None
    pcie_gen: int | None

    @property
    def clock_events(self) -> list[str]:
        return decode(self.clock_event_mask) if self.clock_event_mask is not None else []

    @property
    def busy(self) -> bool:
        """False when NVML said the GPU was idle; a driver that cannot say leaves the sample in."""
        return self.clock_event_mask is None or not self.clock_event_mask & GPU_IDLE_BIT


@dataclass
class GpuLoad:
    """What one GPU showed while under load (NVML index).

    Figures "under load" (PCIe generation, power, SM clock, temperature) come from the busy samples
    only; throttle reasons from every sample, since a slowdown at any moment is a fault."""

    index: int
    samples: list[LoadSample] = field(default_factory=list)
    lost: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)
    cuda_device: str | None = None  # the CUDA device of this process whose load was sampled
    not_measured: str | None = None  # why there is no sample at all, when there is none

    @property
    def busy_samples(self) -> list[LoadSample]:
        return [sample for sample in self.samples if sample.busy]

    @property
    def clock_events_seen(self) -> list[str]:
        return sorted({name for sample in self.samples for name in sample.clock_events})

    @property
    def throttling_seen(self) -> list[str]:
        return throttling(self.clock_events_seen)

    @property
    def throttled_samples(self) -> int:
        return sum(1 for sample in self.samples if throttling(sample.clock_events))

    @property
    def pcie_gen_max(self) -> int | None:
        """The highest generation seen busy: the link trains up under load, so the maximum is the fact."""
        return _max(sample.pcie_gen for sample in self.busy_samples)

    @property
    def pcie_gen_samples(self) -> list[float]:
        return [float(sample.pcie_gen) for sample in self.busy_samples if sample.pcie_gen is not None]

    @property
    def power_samples_w(self) -> list[float]:
        return [sample.power_w for sample in self.busy_samples if sample.power_w is not None]

    @property
    def temperature_samples_c(self) -> list[float]:
        return [float(sample.temperature_c) for sample in self.busy_samples if sample.temperature_c is not None]

    @property
    def sm_clock_median_mhz(self) -> float | None:
        clocks = [sample.sm_clock_mhz for sample in self.busy_samples if sample.sm_clock_mhz is not None]
        return statistics.median(clocks) if clocks else None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "cuda_device": self.cuda_device,
            "not_measured": self.not_measured,
            "busy_samples": len(self.busy_samples),
            "lost": self.lost,
            "unavailable": dict(self.unavailable),
            "clock_events_seen": self.clock_events_seen,
            "throttling_seen": self.throttling_seen,
            "throttled_samples": self.throttled_samples,
            "pcie_gen_max": self.pcie_gen_max,
            "sm_clock_median_mhz": self.sm_clock_median_mhz,
            "samples": [asdict(sample) for sample in self.samples],
        }


def _max(values: Any) -> Any:
    present = [value for value in values if value is not None]
    return max(present) if present else None


@dataclass
class LoadReport:
    gpus: dict[int, GpuLoad]
    interval_s: float
    duration_s: float = 0.0
    not_measured: str | None = None  # why nothing at all was sampled
    unpaired: dict[str, str] = field(default_factory=dict)  # devices asked for that no NVML GPU is, and why

    @classmethod
    def merge(cls, reports: Iterable[LoadReport], interval_s: float) -> LoadReport:
        """One report from several, each sampling other GPUs (one per load): a later sampling of a
        GPU already seen adds its samples to the earlier ones."""
        merged = cls(gpus={}, interval_s=interval_s)
        reasons: list[str] = []
        for report in reports:
            merged.duration_s += report.duration_s
            merged.unpaired.update(report.unpaired)
            if report.not_measured and report.not_measured not in reasons:
                reasons.append(report.not_measured)
            for index, load in report.gpus.items():
                _merge_gpu(merged.gpus, index, load)
        if not merged.sampled:
            merged.not_measured = "; ".join(reasons) or "no GPU was sampled"
        return merged

    @property
    def sampled(self) -> bool:
        return any(load.samples for load in self.gpus.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "duration_s": self.duration_s,
            "not_measured": self.not_measured,
            "unpaired": dict(self.unpaired),
            "gpus": [gpu.to_json() for gpu in self.gpus.values()],
        }


def _merge_gpu(gpus: dict[int, GpuLoad], index: int, load: GpuLoad) -> None:
    if index not in gpus:
        gpus[index] = GpuLoad(index, list(load.samples), load.lost, dict(load.unavailable), load.cuda_device,
                              load.not_measured)
        return
    seen = gpus[index]
    seen.samples.extend(load.samples)
    seen.lost = seen.lost or load.lost
    seen.unavailable.update(load.unavailable)
    seen.cuda_device = seen.cuda_device or load.cuda_device
    seen.not_measured = None if seen.samples else (seen.not_measured or load.not_measured)


class ThrottleSampler:
    """Context manager: samples GPUs every `interval_s` while the block runs.

    Which GPUs: `devices` (label -> CUDA UUID, e.g. {"cuda:0": props.uuid}), paired with NVML GPUs
    by UUID, is what a caller that loads CUDA devices should pass; `indices` are NVML indices; with
    neither, every GPU NVML sees (only right when the load drives every GPU of the host)."""

    def __init__(
        self,
        nvml: Any | None = None,
        indices: Sequence[int] | None = None,
        interval_s: float = 0.1,
        devices: Mapping[str, str | None] | None = None,
    ) -> None:
        if indices is not None and devices is not None:
            raise ValueError("ThrottleSampler takes NVML indices or CUDA devices, not both")
        self._nvml = nvml
        self._indices = indices
        self._devices = devices
        self.interval_s = interval_s
        self._stack = ExitStack()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handles: dict[int, Any] = {}
        self._readers: dict[int, FieldReader] = {}
        self._started = 0.0
        self.report = LoadReport(gpus={}, interval_s=interval_s)

    def __enter__(self) -> ThrottleSampler:
        try:
            nvml = self._stack.enter_context(nvml_session(self._nvml))
        except NotMeasured as exc:
            self.report.not_measured = str(exc)
            return self
        try:
            labels = self._gpus_to_sample(nvml)
        except nvml.NVMLError as exc:
            self.report.not_measured = f"NVML unavailable: cannot count GPUs: {nvml_reason(nvml, exc)}"
            self._stack.close()
            return self
        if not labels:
            self.report.not_measured = "; ".join(
                f"{label}: {why}" for label, why in self.report.unpaired.items()
            ) or "no GPU to sample"
            self._stack.close()
            return self
        for index, label in labels.items():
            load = self.report.gpus[index] = GpuLoad(index, cuda_device=label)
            try:
                self._handles[index] = nvml.nvmlDeviceGetHandleByIndex(index)
            except nvml.NVMLError as exc:
                load.lost = f"NVML cannot open the GPU: {nvml_reason(nvml, exc)}"
                continue
            self._readers[index] = FieldReader(nvml)
            load.unavailable = self._readers[index].unavailable
        # No sample at entry: it would be taken before the load starts and show an idle GPU.
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="clusterbench-throttle-sampler", daemon=True)
        self._thread.start()
        return self

    def _gpus_to_sample(self, nvml: Any) -> dict[int, str | None]:
        """NVML index -> the caller's label for it (None without one). Raises NVMLError."""
        if self._devices is not None:
            pairing = pair_devices(self._devices, read_gpu_ids(nvml))
            self.report.unpaired = pairing.unpaired
            return {index: label for label, index in sorted(pairing.indices.items(), key=lambda item: item[1])}
        indices = self._indices if self._indices is not None else range(nvml.nvmlDeviceGetCount())
        return {index: None for index in indices}

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.report.duration_s = time.monotonic() - self._started
            too_short = (
                f"no samples: the load lasted {self.report.duration_s:.2f} s, "
                f"shorter than the {self.interval_s} s sampling interval"
            )
            for load in self.report.gpus.values():
                if not load.samples and load.lost is None:
                    load.not_measured = too_short
            if not self.report.sampled and self.report.not_measured is None:
                self.report.not_measured = too_short
        self._stack.close()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                for index in list(self._handles):
                    self._sample(index)
        except Exception as exc:  # an exception in a thread vanishes unless kept: keep it in the report
            self.report.not_measured = f"throttle sampler stopped: {type(exc).__name__}: {exc}"

    def _sample(self, index: int) -> None:
        reader, handle = self._readers[index], self._handles[index]
        nvml = reader.nvml
        try:
            sample = LoadSample(
                t_s=time.monotonic() - self._started,
                clock_event_mask=read_clock_events(reader, handle),
                sm_clock_mhz=reader.read("clocks.sm_mhz", "nvmlDeviceGetClockInfo", args=(handle, nvml.NVML_CLOCK_SM)),
                power_w=read_power(reader, handle),
                temperature_c=read_temperature(reader, handle),
                pcie_gen=reader.read("pcie.gen_current", "nvmlDeviceGetCurrPcieLinkGeneration", args=(handle,)),
            )
        except GpuLost as lost:
            self.report.gpus[index].lost = str(lost)
            del self._handles[index]  # every later read would say the same
            return
        self.report.gpus[index].samples.append(sample)


T = TypeVar("T")


class PerDeviceSampling:
    """Samples each CUDA device only while its own load runs, and merges what was seen.

    For a caller that loads devices one after another; wrap each device's load with `during`."""

    def __init__(self, nvml: Any | None = None, interval_s: float = 0.1) -> None:
        self._nvml = nvml
        self.interval_s = interval_s
        self._reports: list[LoadReport] = []

    def during(self, label: str, uuid: str | None, load: Callable[[], T]) -> Callable[[], T]:
        """`load`, made to sample the device `label` (CUDA UUID `uuid`) while it runs."""

        def sampled() -> T:
            with ThrottleSampler(self._nvml, interval_s=self.interval_s, devices={label: uuid}) as sampler:
                try:
                    return load()
                finally:
                    self._reports.append(sampler.report)

        return sampled

    @property
    def report(self) -> LoadReport:
        return LoadReport.merge(self._reports, self.interval_s)
