"""FakeNvmlEvents: tests/fake_nvml.FakeNvml plus the NVML event calls the Xid watch makes.

nvmlEventSetCreate, nvmlDeviceRegisterEvents, nvmlEventSetWait_v2 (NVML_ERROR_TIMEOUT when no event
is pending, as the real call answers after its timeout), nvmlEventSetFree and nvmlDeviceGetPciInfo.
A test raises an Xid on a GPU with `xid(index, code)`; only GPUs registered on an event set see it,
as with the driver, which reports an event only to sets registered before it happened. GPU i sits
on PCI bus 0x18 + 0x10 * i, and answers bytes for busId, as older bindings do.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pynvml

from fake_nvml import FakeGpu, FakeNvml


def bus_of(index: int) -> str:
    """The driver's name of GPU `index`'s bus, as the kernel log writes it."""
    return f"0000:{0x18 + 0x10 * index:02x}:00"


class FakeNvmlEvents(FakeNvml):
    nvmlEventTypeXidCriticalError = pynvml.nvmlEventTypeXidCriticalError

    def __init__(self, gpus: list[FakeGpu], *, no_events: tuple[int, ...] = (), **kwargs: Any) -> None:
        super().__init__(gpus, **kwargs)
        self.no_events = set(no_events)  # GPUs whose nvmlDeviceRegisterEvents answers NOT_SUPPORTED
        self.event_sets: list[SimpleNamespace] = []
        self.freed = 0

    def xid(self, index: int, code: int) -> None:
        for event_set in self.event_sets:
            if index in event_set.registered:
                event_set.pending.append((index, code))

    def nvmlDeviceGetPciInfo(self, handle):
        self._gpu(handle, "nvmlDeviceGetPciInfo")
        return SimpleNamespace(busId=f"00000000:{0x18 + 0x10 * handle.index:02X}:00.0".encode())

    def nvmlEventSetCreate(self):
        self._check("nvmlEventSetCreate")
        event_set = SimpleNamespace(registered=set(), pending=[])
        self.event_sets.append(event_set)
        return event_set

    def nvmlDeviceRegisterEvents(self, handle, event_types, event_set):
        self._gpu(handle, "nvmlDeviceRegisterEvents")
        if handle.index in self.no_events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        assert event_types == pynvml.nvmlEventTypeXidCriticalError
        event_set.registered.add(handle.index)

    def nvmlEventSetWait_v2(self, event_set, timeout_ms):
        if not event_set.pending:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        index, code = event_set.pending.pop(0)
        return SimpleNamespace(device=SimpleNamespace(index=index), eventType=pynvml.nvmlEventTypeXidCriticalError,
                               eventData=code, gpuInstanceId=0xFFFFFFFF, computeInstanceId=0xFFFFFFFF)

    def nvmlEventSetFree(self, event_set):
        self.freed += 1
