"""Per-GPU inventory and health as NVML reports it: one snapshot of every GPU on this host.

`read_gpu_inventory()` returns a `GpuInventory`, or raises NotMeasured when NVML itself is
unavailable (no driver, no library). `read_gpu_inventory(devices={"cuda:0": uuid})` reads only the
GPUs this process drives, paired by UUID (gpu_pairing); `GpuInventory.select` does the same on an
inventory already read. Any single field NVML cannot give is None, with the reason in
the record's `unavailable` map under the field's dotted name ("pcie.gen_current": "no permission").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from clusterbench.model import NotMeasured
from clusterbench.probes.health.clock_events import decode, throttling
from clusterbench.probes.health.gpu_pairing import NvmlGpuId, pair_devices, read_gpu_ids, read_mig_uuids
from clusterbench.probes.health.nvml_session import (
    NOT_IN_DRIVER,
    NOT_SUPPORTED,
    FieldReader,
    GpuLost,
    nvml_reason,
    nvml_session,
    text,
)


@dataclass
class EccInfo:
    mode_current: bool | None = None
    mode_pending: bool | None = None  # differs from current until the next reset applies it
    volatile_corrected: int | None = None  # since the driver last loaded
    volatile_uncorrected: int | None = None
    aggregate_corrected: int | None = None  # over the GPU's lifetime (kept in the inforom)
    aggregate_uncorrected: int | None = None


@dataclass
class MemoryRepair:
    """How the GPU has taken faulty memory out of service.

    Ampere and later remap rows (`kind` "remapped_rows"); earlier GPUs retire pages
    ("retired_pages"). `corrected`/`uncorrected` count rows or pages by the kind of error that
    caused it; `pending` means a repair waits for a GPU reset; `failure` (rows only) means the GPU
    ran out of spare rows.
    """

    kind: str | None = None
    corrected: int | None = None
    uncorrected: int | None = None
    pending: bool | None = None
    failure: bool | None = None

    @property
    def total(self) -> int | None:
        if self.corrected is None or self.uncorrected is None:
            return None
        return self.corrected + self.uncorrected


@dataclass
class PcieLink:
    gen_current: int | None = None
    gen_max: int | None = None  # the most this GPU and this slot together allow
    width_current: int | None = None
    width_max: int | None = None


@dataclass
class NvLinkState:
    """The NVLinks the GPU has, by NVML link index, True when that link is active.

    Indices need not be contiguous: a link NVML calls NOT_SUPPORTED is absent from the map."""

    links: dict[int, bool] = field(default_factory=dict)

    @property
    def up(self) -> int:
        return sum(self.links.values())

    @property
    def down(self) -> list[int]:
        return [link for link, active in sorted(self.links.items()) if not active]


@dataclass
class Clocks:
    sm_mhz: int | None = None
    sm_max_mhz: int | None = None
    mem_mhz: int | None = None
    mem_max_mhz: int | None = None


@dataclass
class GpuRecord:
    """Everything NVML told us about one GPU, indexed as NVML indexes it (PCI bus order).

    NVML index i is not CUDA device i unless CUDA_DEVICE_ORDER=PCI_BUS_ID; match by `uuid`.
    """

    index: int
    uuid: str | None = None
    cuda_device: str | None = None  # the CUDA device of this process paired with it by UUID, if any
    mig_uuids: list[str] = field(default_factory=list)  # MIG slices, when MIG is enabled
    name: str | None = None
    serial: str | None = None
    vbios: str | None = None
    memory_total_bytes: int | None = None
    ecc: EccInfo = field(default_factory=EccInfo)
    memory_repair: MemoryRepair = field(default_factory=MemoryRepair)
    pcie: PcieLink = field(default_factory=PcieLink)
    nvlink: NvLinkState | None = None  # None: the GPU has no NVLink, or NVML would not say
    clocks: Clocks = field(default_factory=Clocks)
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None  # enforced now
    power_default_limit_w: float | None = None  # the board's default; a lower enforced limit is a cap
    clock_event_mask: int | None = None
    lost: str | None = None  # why NVML lost the GPU or could not open it; None while it answers
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def clock_events(self) -> list[str]:
        return decode(self.clock_event_mask) if self.clock_event_mask is not None else []

    @property
    def throttling(self) -> list[str]:
        return throttling(self.clock_events)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["memory_repair"]["total"] = self.memory_repair.total
        if self.nvlink is not None:
            # JSON keys are strings; say so here rather than let the encoder do it silently.
            links = {str(link): active for link, active in sorted(self.nvlink.links.items())}
            data["nvlink"].update(links=links, up=self.nvlink.up, down=self.nvlink.down)
        data["clock_events"] = self.clock_events
        data["throttling"] = self.throttling
        return data


@dataclass
class GpuInventory:
    driver_version: str | None
    cuda_driver_version: str | None  # the CUDA version the driver supports, e.g. "12.4"
    gpus: list[GpuRecord]
    unavailable: dict[str, str] = field(default_factory=dict)
    # Devices this process drives that match no GPU here, by label ("cuda:1"), with the reason.
    unpaired: dict[str, str] = field(default_factory=dict)

    @property
    def usable(self) -> list[GpuRecord]:
        return [gpu for gpu in self.gpus if gpu.lost is None]

    def select(self, devices: Mapping[str, str | None]) -> GpuInventory:
        """Only the GPUs of `devices` (label -> CUDA UUID), each marked with its label; the rest unpaired."""
        ids = [NvmlGpuId(gpu.index, gpu.uuid, tuple(gpu.mig_uuids)) for gpu in self.gpus]
        pairing = pair_devices(devices, ids)
        records = {gpu.index: gpu for gpu in self.gpus}
        chosen = sorted(pairing.indices.items(), key=lambda item: item[1])
        gpus = [replace(records[index], cuda_device=label) for label, index in chosen]
        return GpuInventory(self.driver_version, self.cuda_driver_version, gpus, dict(self.unavailable),
                            pairing.unpaired)

    def to_json(self) -> dict[str, Any]:
        return {
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "count": len(self.gpus),
            "gpus": [gpu.to_json() for gpu in self.gpus],
            "unavailable": dict(self.unavailable),
            "unpaired": dict(self.unpaired),
        }


def read_gpu_inventory(nvml: Any | None = None, devices: Mapping[str, str | None] | None = None) -> GpuInventory:
    """Read every GPU NVML enumerates, or with `devices` (label -> CUDA UUID) only those GPUs.

    Raises NotMeasured when NVML is unavailable."""
    with nvml_session(nvml) as nvml:
        system = FieldReader(nvml)
        driver = system.read("driver_version", "nvmlSystemGetDriverVersion", convert=text)
        cuda = system.read(
            "cuda_driver_version", "nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion",
            convert=_cuda_version,
        )
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            raise NotMeasured(f"NVML unavailable: cannot count GPUs: {nvml_reason(nvml, exc)}") from None
        if devices is None:
            return GpuInventory(driver, cuda, [_read_gpu(nvml, index) for index in range(count)], system.unavailable)
        pairing = pair_devices(devices, read_gpu_ids(nvml))
        chosen = sorted(pairing.indices.items(), key=lambda item: item[1])
        gpus = [replace(_read_gpu(nvml, index), cuda_device=label) for label, index in chosen]
    return GpuInventory(driver, cuda, gpus, system.unavailable, pairing.unpaired)


def _cuda_version(value: int) -> str:
    return f"{value // 1000}.{value % 1000 // 10}"


def _read_gpu(nvml: Any, index: int) -> GpuRecord:
    record = GpuRecord(index)
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        record.lost = (
            "GPU lost (NVML_ERROR_GPU_IS_LOST)" if exc.value == nvml.NVML_ERROR_GPU_IS_LOST
            else f"NVML cannot open the GPU: {nvml_reason(nvml, exc)}"
        )
        return record
    reader = FieldReader(nvml)
    record.unavailable = reader.unavailable
    try:
        _read_fields(reader, handle, record)
    except GpuLost as lost:
        record.lost = str(lost)  # fields read before the loss are kept
    return record


def _read_fields(reader: FieldReader, handle: Any, record: GpuRecord) -> None:
    nvml = reader.nvml
    h = (handle,)
    record.uuid = reader.read("uuid", "nvmlDeviceGetUUID", args=h, convert=text)
    record.name = reader.read("name", "nvmlDeviceGetName", args=h, convert=text)
    record.mig_uuids = list(read_mig_uuids(nvml, handle))
    record.serial = reader.read("serial", "nvmlDeviceGetSerial", args=h, convert=text)
    record.vbios = reader.read("vbios", "nvmlDeviceGetVbiosVersion", args=h, convert=text)
    record.memory_total_bytes = reader.read(
        "memory_total_bytes", "nvmlDeviceGetMemoryInfo", args=h, convert=lambda info: int(info.total)
    )
    _read_ecc(reader, handle, record.ecc)
    record.memory_repair = _read_memory_repair(reader, handle)
    pcie = record.pcie
    pcie.gen_current = reader.read("pcie.gen_current", "nvmlDeviceGetCurrPcieLinkGeneration", args=h)
    pcie.gen_max = reader.read("pcie.gen_max", "nvmlDeviceGetMaxPcieLinkGeneration", args=h)
    pcie.width_current = reader.read("pcie.width_current", "nvmlDeviceGetCurrPcieLinkWidth", args=h)
    pcie.width_max = reader.read("pcie.width_max", "nvmlDeviceGetMaxPcieLinkWidth", args=h)
    record.nvlink = _read_nvlink(reader, handle)
    clocks = record.clocks
    clocks.sm_mhz = reader.read("clocks.sm_mhz", "nvmlDeviceGetClockInfo", args=(handle, nvml.NVML_CLOCK_SM))
    clocks.sm_max_mhz = reader.read(
        "clocks.sm_max_mhz", "nvmlDeviceGetMaxClockInfo", args=(handle, nvml.NVML_CLOCK_SM)
    )
    clocks.mem_mhz = reader.read("clocks.mem_mhz", "nvmlDeviceGetClockInfo", args=(handle, nvml.NVML_CLOCK_MEM))
    clocks.mem_max_mhz = reader.read(
        "clocks.mem_max_mhz", "nvmlDeviceGetMaxClockInfo", args=(handle, nvml.NVML_CLOCK_MEM)
    )
    record.temperature_c = read_temperature(reader, handle)
    record.power_w = read_power(reader, handle)
    record.power_limit_w = reader.read("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", args=h, convert=_watts)
    record.power_default_limit_w = reader.read(
        "power_default_limit_w", "nvmlDeviceGetPowerManagementDefaultLimit", args=h, convert=_watts
    )
    record.clock_event_mask = read_clock_events(reader, handle)


def _watts(milliwatts: int) -> float:
    return milliwatts / 1000.0


def read_temperature(reader: FieldReader, handle: Any) -> int | None:
    return reader.read("temperature_c", "nvmlDeviceGetTemperature", args=(handle, reader.nvml.NVML_TEMPERATURE_GPU))


def read_power(reader: FieldReader, handle: Any) -> float | None:
    return reader.read("power_w", "nvmlDeviceGetPowerUsage", args=(handle,), convert=_watts)


def read_clock_events(reader: FieldReader, handle: Any) -> int | None:
    # The "Throttle" spelling is what drivers before 535 and bindings before 12.535 provide.
    return reader.read(
        "clock_event_mask", "nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons",
        args=(handle,), convert=int,
    )


def _read_ecc(reader: FieldReader, handle: Any, ecc: EccInfo) -> None:
    nvml = reader.nvml
    modes = reader.read("ecc.mode", "nvmlDeviceGetEccMode", args=(handle,))
    if modes is not None:
        ecc.mode_current, ecc.mode_pending = (bool(mode) for mode in modes)
    corrected, uncorrected = nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED
    volatile, aggregate = nvml.NVML_VOLATILE_ECC, nvml.NVML_AGGREGATE_ECC
    for name, error_type, counter in (
        ("volatile_corrected", corrected, volatile),
        ("volatile_uncorrected", uncorrected, volatile),
        ("aggregate_corrected", corrected, aggregate),
        ("aggregate_uncorrected", uncorrected, aggregate),
    ):
        args = (handle, error_type, counter)
        setattr(ecc, name, reader.read(f"ecc.{name}", "nvmlDeviceGetTotalEccErrors", args=args, convert=int))


def _read_memory_repair(reader: FieldReader, handle: Any) -> MemoryRepair:
    """Remapped rows where the GPU has them (Ampere+), otherwise retired pages."""
    nvml = reader.nvml
    rows = reader.read("memory_repair.remapped_rows", "nvmlDeviceGetRemappedRows", args=(handle,))
    if rows is not None:
        corrected, uncorrected, pending, failure = rows
        return MemoryRepair("remapped_rows", int(corrected), int(uncorrected), bool(pending), bool(failure))
    sbe = reader.read(
        "memory_repair.retired_pages_sbe", "nvmlDeviceGetRetiredPages",
        args=(handle, nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS), convert=len,
    )
    dbe = reader.read(
        "memory_repair.retired_pages_dbe", "nvmlDeviceGetRetiredPages",
        args=(handle, nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR), convert=len,
    )
    pending = reader.read(
        "memory_repair.retired_pages_pending", "nvmlDeviceGetRetiredPagesPendingStatus", args=(handle,), convert=bool
    )
    if sbe is None and dbe is None and pending is None:
        return MemoryRepair()
    # Rows were not there to read, but pages were: the rows' reason is noise for this GPU.
    reader.unavailable.pop("memory_repair.remapped_rows", None)
    return MemoryRepair("retired_pages", sbe, dbe, pending)


def _read_nvlink(reader: FieldReader, handle: Any) -> NvLinkState | None:
    """Probe every link index up to NVML_NVLINK_MAX_LINKS.

    A link NVML calls NOT_SUPPORTED (or an index it calls INVALID_ARGUMENT) is absent, not the end:
    a GPU may have link slots it does not populate, and the links after them still count."""
    nvml = reader.nvml
    function = getattr(nvml, "nvmlDeviceGetNvLinkState", None)
    if function is None:
        reader.unavailable["nvlink"] = NOT_IN_DRIVER
        return None
    absent = (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_INVALID_ARGUMENT)
    links: dict[int, bool] = {}
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            links[link] = function(handle, link) == nvml.NVML_FEATURE_ENABLED
        except nvml.NVMLError as exc:
            if exc.value == nvml.NVML_ERROR_GPU_IS_LOST:
                raise GpuLost("nvlink") from None
            if exc.value in absent:
                continue
            reader.unavailable["nvlink"] = nvml_reason(nvml, exc)
            return None
    if not links:
        reader.unavailable["nvlink"] = NOT_SUPPORTED
        return None
    return NvLinkState(links)
