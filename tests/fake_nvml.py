"""FakeNvml: a test double of the pynvml functions clusterbench's health probes call.

It raises the real pynvml error classes (`pynvml.NVMLError(code)` builds the matching subclass,
e.g. NVMLError_NotSupported) and takes constants from pynvml, so the code under test cannot tell
it from the binding. Each GPU is a `FakeGpu` whose defaults describe a healthy H100 SXM; tests
change only what their scenario is about.

Old bindings: names in `missing` do not exist on the module (AttributeError). Old drivers: names
in `not_in_driver` raise NVML_ERROR_FUNCTION_NOT_FOUND, as pynvml does when the symbol is absent.

A GPU with `follows_load=True` behaves as an idle real one does until `busy` is set: PCIe trained
down to Gen1, idle power and SM clock, and GpuIdle as its clock-event reason (tests/fake_gpu_node.py
sets `busy` while a fake load runs on it). MIG: `mig_mode=1` with `mig_uuids` gives slices whose
handles answer nvmlDeviceGetUUID ("MIG-..."), as nvmlDeviceGetMigDeviceHandleByIndex's do.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

NOT_SUPPORTED = pynvml.NVML_ERROR_NOT_SUPPORTED
NO_PERMISSION = pynvml.NVML_ERROR_NO_PERMISSION
GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST

H100_MEMORY = 81559 * 2**20  # what NVML reports for an H100 80GB HBM3


@dataclass
class FakeGpu:
    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    serial: str = "1650123456789"
    vbios: str = "96.00.99.00.01"
    memory_total: int = H100_MEMORY
    ecc_mode: tuple[int, int] = (1, 1)
    # (error type, counter type) -> count; anything absent is 0
    ecc_counts: dict[tuple[int, int], int] = field(default_factory=dict)
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)  # corrected, uncorrected, pending, failure
    retired_pages: dict[int, list[int]] | None = None  # cause -> page addresses; None: not supported (H100)
    retired_pending: int = 0
    pcie_gen: int | list[int] = 5  # a list gives successive readings, the last one repeating
    pcie_gen_max: int = 5
    pcie_width: int = 16
    pcie_width_max: int = 16
    # One entry per link index: True up, False down, None NOT_SUPPORTED (a slot without a link).
    # Indices past the list are INVALID_ARGUMENT; the whole field None: a GPU without NVLink.
    nvlinks: list[bool | None] | None = field(default_factory=lambda: [True] * 18)
    sm_clock: int = 1980
    sm_clock_max: int = 1980
    mem_clock: int = 2619
    mem_clock_max: int = 2619
    temperature: int | list[int] = 45
    power_mw: int = 120_000
    power_limit_mw: int = 700_000
    power_default_limit_mw: int = 700_000
    clock_events: int | list[int] = 0  # a list gives successive readings, the last one repeating
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML error code it raises
    lost: bool = False  # every call after the handle raises NVML_ERROR_GPU_IS_LOST
    handle_error: int | None = None  # nvmlDeviceGetHandleByIndex raises this code
    mig_mode: int | None = 0  # current = pending MIG mode (1 enabled); None: NOT_SUPPORTED (pre-Ampere)
    mig_uuids: list[str] = field(default_factory=list)  # the slices' UUIDs while MIG is enabled
    mig_slots: int = 7  # nvmlDeviceGetMaxMigDeviceCount; slots past mig_uuids hold no slice (NOT_FOUND)
    # Load-following: without `busy` the GPU reads as idle (values below), with it as the fields above.
    follows_load: bool = False
    busy: bool = False
    idle_pcie_gen: int = 1
    idle_power_mw: int = 70_000
    idle_sm_clock: int = 345


def healthy(index: int = 0, **changes: Any) -> FakeGpu:
    return FakeGpu(uuid=f"GPU-{index:08d}-0000-0000-0000-000000000000", serial=f"16501234567{index:02d}", **changes)


class FakeNvml:
    NVMLError = pynvml.NVMLError

    def __init__(
        self,
        gpus: list[FakeGpu],
        driver_version: str = "550.54.15",
        cuda_driver_version: int = 12040,
        init_error: int | None = None,
        missing: tuple[str, ...] = (),
        not_in_driver: tuple[str, ...] = (),
    ) -> None:
        self.gpus = gpus
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.init_error = init_error
        self.missing = set(missing)
        self.not_in_driver = set(not_in_driver)
        self.inits = 0
        self.shutdowns = 0
        self.calls: list[tuple[int, str]] = []  # (NVML index, function) of every device call, in order
        self._readings: dict[tuple[int, str], Any] = {}

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("nvml") and name in object.__getattribute__(self, "missing"):
            raise AttributeError(f"module 'pynvml' has no attribute '{name}'")
        return object.__getattribute__(self, name)

    def __getattr__(self, name: str) -> Any:
        # Constants come from the real binding; functions only from this class.
        if name.startswith(("NVML_", "NVMLError")):
            return getattr(pynvml, name)
        raise AttributeError(f"module 'pynvml' has no attribute '{name}'")

    # --- library and system -------------------------------------------------------------------

    def _check(self, function: str) -> None:
        if function in self.not_in_driver:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check("nvmlSystemGetDriverVersion")
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion_v2")
        return self.cuda_driver_version

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        self._check("nvmlSystemGetCudaDriverVersion")
        return self.cuda_driver_version

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimpleNamespace:
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if self.gpus[index].handle_error is not None:
            raise pynvml.NVMLError(self.gpus[index].handle_error)
        return SimpleNamespace(index=index)

    # --- devices --------------------------------------------------------------------------------

    def _gpu(self, handle: SimpleNamespace, function: str) -> FakeGpu:
        self.calls.append((handle.index, function))
        self._check(function)
        gpu = self.gpus[handle.index]
        if gpu.lost:
            raise pynvml.NVMLError(GPU_IS_LOST)
        if function in gpu.errors:
            raise pynvml.NVMLError(gpu.errors[function])
        return gpu

    def _reading(self, handle: SimpleNamespace, attribute: str) -> Any:
        gpu = self.gpus[handle.index]
        idle = _IDLE_READINGS.get(attribute)
        if gpu.follows_load and not gpu.busy and idle is not None:
            return idle(gpu)
        value = getattr(gpu, attribute)
        if not isinstance(value, list):
            return value
        key = (handle.index, attribute)
        if key not in self._readings:
            self._readings[key] = itertools.chain(value, itertools.repeat(value[-1]))
        return next(self._readings[key])

    def nvmlDeviceGetName(self, handle):
        return self._gpu(handle, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, handle):
        gpu = self._gpu(handle, "nvmlDeviceGetUUID")
        return gpu.mig_uuids[handle.mig] if getattr(handle, "mig", None) is not None else gpu.uuid

    def nvmlDeviceGetMigMode(self, handle):
        mode = self._gpu(handle, "nvmlDeviceGetMigMode").mig_mode
        if mode is None:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        gpu = self._gpu(handle, "nvmlDeviceGetMaxMigDeviceCount")
        if gpu.mig_mode is None:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        return gpu.mig_slots

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, slot):
        gpu = self._gpu(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        if gpu.mig_mode != 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if slot >= len(gpu.mig_uuids):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return SimpleNamespace(index=handle.index, mig=slot)

    def nvmlDeviceGetSerial(self, handle):
        return self._gpu(handle, "nvmlDeviceGetSerial").serial

    def nvmlDeviceGetVbiosVersion(self, handle):
        return self._gpu(handle, "nvmlDeviceGetVbiosVersion").vbios

    def nvmlDeviceGetMemoryInfo(self, handle):
        total = self._gpu(handle, "nvmlDeviceGetMemoryInfo").memory_total
        return SimpleNamespace(total=total, free=total, used=0)

    def nvmlDeviceGetEccMode(self, handle):
        return list(self._gpu(handle, "nvmlDeviceGetEccMode").ecc_mode)

    def nvmlDeviceGetTotalEccErrors(self, handle, error_type, counter_type):
        return self._gpu(handle, "nvmlDeviceGetTotalEccErrors").ecc_counts.get((error_type, counter_type), 0)

    def nvmlDeviceGetRemappedRows(self, handle):
        return self._gpu(handle, "nvmlDeviceGetRemappedRows").remapped_rows

    def nvmlDeviceGetRetiredPages(self, handle, cause):
        pages = self._gpu(handle, "nvmlDeviceGetRetiredPages").retired_pages
        if pages is None:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        return list(pages.get(cause, []))

    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle):
        gpu = self._gpu(handle, "nvmlDeviceGetRetiredPagesPendingStatus")
        if gpu.retired_pages is None:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        return gpu.retired_pending

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle):
        self._gpu(handle, "nvmlDeviceGetCurrPcieLinkGeneration")
        return self._reading(handle, "pcie_gen")

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle):
        return self._gpu(handle, "nvmlDeviceGetMaxPcieLinkGeneration").pcie_gen_max

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle):
        return self._gpu(handle, "nvmlDeviceGetCurrPcieLinkWidth").pcie_width

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle):
        return self._gpu(handle, "nvmlDeviceGetMaxPcieLinkWidth").pcie_width_max

    def nvmlDeviceGetNvLinkState(self, handle, link):
        links = self._gpu(handle, "nvmlDeviceGetNvLinkState").nvlinks
        if links is None:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        if link >= len(links):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if links[link] is None:
            raise pynvml.NVMLError(NOT_SUPPORTED)
        return pynvml.NVML_FEATURE_ENABLED if links[link] else pynvml.NVML_FEATURE_DISABLED

    def nvmlDeviceGetClockInfo(self, handle, clock):
        gpu = self._gpu(handle, "nvmlDeviceGetClockInfo")
        return self._reading(handle, "sm_clock") if clock == pynvml.NVML_CLOCK_SM else gpu.mem_clock

    def nvmlDeviceGetMaxClockInfo(self, handle, clock):
        gpu = self._gpu(handle, "nvmlDeviceGetMaxClockInfo")
        return gpu.sm_clock_max if clock == pynvml.NVML_CLOCK_SM else gpu.mem_clock_max

    def nvmlDeviceGetTemperature(self, handle, sensor):
        self._gpu(handle, "nvmlDeviceGetTemperature")
        return self._reading(handle, "temperature")

    def nvmlDeviceGetPowerUsage(self, handle):
        self._gpu(handle, "nvmlDeviceGetPowerUsage")
        return self._reading(handle, "power_mw")

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self._gpu(handle, "nvmlDeviceGetEnforcedPowerLimit").power_limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle):
        return self._gpu(handle, "nvmlDeviceGetPowerManagementDefaultLimit").power_default_limit_mw

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        self._gpu(handle, "nvmlDeviceGetCurrentClocksEventReasons")
        return self._reading(handle, "clock_events")

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        self._gpu(handle, "nvmlDeviceGetCurrentClocksThrottleReasons")
        return self._reading(handle, "clock_events")


# What a load-following GPU reads while idle, by FakeGpu attribute.
_IDLE_READINGS = {
    "pcie_gen": lambda gpu: gpu.idle_pcie_gen,
    "power_mw": lambda gpu: gpu.idle_power_mw,
    "sm_clock": lambda gpu: gpu.idle_sm_clock,
    "clock_events": lambda gpu: 0x1,  # GpuIdle
    "temperature": lambda gpu: 35,
}
