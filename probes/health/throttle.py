"""Clock-event (throttle) reasons, SM clock, power, temperature and PCIe generation sampled under load.

A snapshot at idle cannot show throttling (an idle GPU reports GpuIdle and nothing else) and shows
the PCIe link down-trained to save power, so both are judged from samples taken while a probe
loads the GPU:

    with ThrottleSampler(indices=[0, 1]) as sampler:
        run_gemm()
    load = sampler.report

The sampler never stops the load it watches: when NVML is unavailable it samples nothing and its
report says why (`LoadReport.not_measured`).
"""

from __future__ import annotations

import statistics
import threading
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from clusterbench.model import NotMeasured
from clusterbench.probes.health.clock_events import decode, throttling
from clusterbench.probes.health.nvml_reader import read_clock_events, read_power, read_temperature
from clusterbench.probes.health.nvml_session import FieldReader, GpuLost, nvml_reason, nvml_session


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


@dataclass
class GpuLoad:
    """What one GPU showed while under load (NVML index)."""

    index: int
    samples: list[LoadSample] = field(default_factory=list)
    lost: str | None = None
    unavailable: dict[str, str] = field(default_factory=dict)

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
        """The highest generation seen: the link trains up under load, so the maximum is the fact."""
        return _max(sample.pcie_gen for sample in self.samples)

    @property
    def power_samples_w(self) -> list[float]:
        return [sample.power_w for sample in self.samples if sample.power_w is not None]

    @property
    def temperature_samples_c(self) -> list[float]:
        return [float(sample.temperature_c) for sample in self.samples if sample.temperature_c is not None]

    @property
    def sm_clock_median_mhz(self) -> float | None:
        clocks = [sample.sm_clock_mhz for sample in self.samples if sample.sm_clock_mhz is not None]
        return statistics.median(clocks) if clocks else None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
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

    def to_json(self) -> dict[str, Any]:
        return {
            "interval_s": self.interval_s,
            "duration_s": self.duration_s,
            "not_measured": self.not_measured,
            "gpus": [gpu.to_json() for gpu in self.gpus.values()],
        }


class ThrottleSampler:
    """Context manager: samples each GPU in `indices` (NVML indices; None for all) every `interval_s`."""

    def __init__(
        self, nvml: Any | None = None, indices: Sequence[int] | None = None, interval_s: float = 0.1
    ) -> None:
        self._nvml = nvml
        self._indices = indices
        self.interval_s = interval_s
        self._stack = ExitStack()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handles: dict[int, Any] = {}
        self._readers: dict[int, FieldReader] = {}
        self._started = 0.0
        self.report = LoadReport(gpus={}, interval_s=interval_s)

    def __enter__(self) -> "ThrottleSampler":
        try:
            nvml = self._stack.enter_context(nvml_session(self._nvml))
        except NotMeasured as exc:
            self.report.not_measured = str(exc)
            return self
        try:
            indices = self._indices if self._indices is not None else range(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as exc:
            self.report.not_measured = f"NVML unavailable: cannot count GPUs: {nvml_reason(nvml, exc)}"
            self._stack.close()
            return self
        for index in indices:
            load = self.report.gpus[index] = GpuLoad(index)
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

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self.report.duration_s = time.monotonic() - self._started
            if not any(load.samples for load in self.report.gpus.values()) and self.report.not_measured is None:
                self.report.not_measured = (
                    f"no samples: the load lasted {self.report.duration_s:.2f} s, "
                    f"shorter than the {self.interval_s} s sampling interval"
                )
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
