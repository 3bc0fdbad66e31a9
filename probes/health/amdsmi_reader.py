"""Per-GPU inventory and health of AMD GPUs as amdsmi reports them: the same GpuInventory NVML gives.

`read_amdsmi_inventory()` returns a `GpuInventory` whose `GpuRecord`s are filled from the amdsmi
Python API (ROCm's py-interface, `import amdsmi`), or raises NotMeasured when amdsmi itself is
unavailable. The figures map onto NVML's fields so that the gpu.* measurements, the health rules
and the golden comparisons need not know which library read them:

    name           amdsmi_get_gpu_asic_info()["market_name"]        "AMD Instinct MI300X"
    uuid           "GPU-<KFD unique id>", HIP's UUID (see below)
    ecc.volatile_* amdsmi_get_gpu_total_ecc_count() (correctable_count / uncorrectable_count)
    memory_repair  amdsmi_get_gpu_bad_page_info(): the pages amdgpu has retired
    pcie           amdsmi_get_pcie_info(): pcie_metric (current), pcie_static (max)
    nvlink         amdsmi_get_gpu_xgmi_link_status(): xGMI links, "U" up / "D" down / "X" disabled
    temperature_c  amdsmi_get_temp_metric(HOTSPOT, CURRENT), EDGE where there is no hotspot sensor
    power_w        amdsmi_get_power_info()["current_socket_power"] (W), else average_socket_power
    power limits   amdsmi_get_power_cap_info() power_cap / default_power_cap (microwatts)

Names and return shapes follow ROCm/amdsmi py-interface/amdsmi_interface.py (commit 0ceca28, Oct
2024, amdsmi 24.5.x / ROCm 6.2-6.3); amdsmi_get_gpu_xgmi_link_status and
amdsmi_get_gpu_enumeration_info arrived with ROCm 6.4 (AMD SMI 25.3.0 changelog) and are optional.
amdsmi answers "N/A" (a string) where the hardware reports no value; that reads as not supported.

Pairing with torch: on ROCm, str(torch.cuda.get_device_properties(i).uuid) is the hex of the ASCII
of the GPU's KFD unique id ("66333330-..." for "f330..."; ROCm/ROCm#4203), which probes.devices
decodes back to that id. amdsmi_get_gpu_device_uuid had another form before ROCm 7.12
(ROCm/rocm-systems#3977 aligned it with HIP's), so a record's `uuid` is HIP's: the hip_uuid of
amdsmi_get_gpu_enumeration_info ("GPU-<unique id>", ROCm 6.4+), else built from the ASIC serial
("0x<UNIQUE ID>", the same id), else amdsmi's own UUID. Pairing by `uuid` then works as on NVIDIA.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

from clusterbench.model import NotMeasured
from clusterbench.probes.health.gpu_pairing import NvmlGpuId, pair_devices
from clusterbench.probes.health.nvml_reader import (
    EccInfo,
    GpuInventory,
    GpuRecord,
    MemoryRepair,
    NvLinkState,
)
from clusterbench.probes.health.nvml_session import NO_PERMISSION, NOT_SUPPORTED

NOT_IN_AMDSMI = "not available in this amdsmi"
NOT_A_CUDA_DRIVER = "AMD GPUs, read through amdsmi: there is no CUDA driver"
NO_CLOCK_EVENTS = "amdsmi has no NVML-style clock-event reasons"
# amdsmi_wrapper.AMDSMI_STATUS_*: the two codes a user meets on a healthy GPU.
_STATUS_NOT_SUPPORTED = 2
_STATUS_NO_PERM = 10
# PCIe transfer rate (GT/s) -> generation.
_PCIE_GEN_BY_GTS = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}


def import_amdsmi() -> Any:
    try:
        import amdsmi
    except ImportError:
        raise NotMeasured(
            "amdsmi unavailable: the amdsmi Python package is not installed (it ships with ROCm, "
            "/opt/rocm/share/amd_smi: pip install it from there)"
        ) from None
    return amdsmi


@contextmanager
def amdsmi_session(amdsmi: Any | None = None) -> Iterator[Any]:
    """amdsmi_init ... amdsmi_shut_down around the block; NotMeasured when amdsmi cannot start."""
    amdsmi = amdsmi if amdsmi is not None else import_amdsmi()
    try:
        amdsmi.amdsmi_init()
    except amdsmi.AmdSmiException as exc:
        raise NotMeasured(f"amdsmi unavailable: amdsmi_init failed: {_one_line(exc)} "
                          "(is the amdgpu kernel module loaded? see dmesg)") from None
    try:
        yield amdsmi
    finally:
        with suppress(amdsmi.AmdSmiException):
            amdsmi.amdsmi_shut_down()


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


class AmdSmiFields:
    """Reads amdsmi values one field at a time; a failed field reads as None, its reason kept by name."""

    def __init__(self, amdsmi: Any) -> None:
        self.amdsmi = amdsmi
        self.unavailable: dict[str, str] = {}

    def read(self, field: str, function: str, *args: Any, convert: Callable[[Any], Any] | None = None) -> Any:
        call = getattr(self.amdsmi, function, None)
        if call is None:
            self.unavailable[field] = f"{NOT_IN_AMDSMI} ({function})"
            return None
        try:
            value = call(*args)
            value = convert(value) if convert is not None else value
        except self.amdsmi.AmdSmiException as exc:
            self.unavailable[field] = self.reason(exc)
            return None
        except (KeyError, TypeError, ValueError):
            # A value amdsmi marks "N/A" (or a shape an older amdsmi lacks) is no figure.
            value = None
        if value is None or value == "N/A":
            self.unavailable[field] = NOT_SUPPORTED
            return None
        self.unavailable.pop(field, None)
        return value

    def reason(self, exc: Exception) -> str:
        code = getattr(exc, "err_code", None)
        if code == _STATUS_NOT_SUPPORTED:
            return NOT_SUPPORTED
        if code == _STATUS_NO_PERM:
            return NO_PERMISSION
        return f"amdsmi error: {_one_line(exc)}"


def read_amdsmi_inventory(amdsmi: Any | None = None, devices: Mapping[str, str | None] | None = None) -> GpuInventory:
    """Read every GPU amdsmi enumerates, or with `devices` (label -> torch UUID) only those GPUs.

    Raises NotMeasured when amdsmi is unavailable or sees no GPU."""
    with amdsmi_session(amdsmi) as amdsmi:
        try:
            handles = list(amdsmi.amdsmi_get_processor_handles())
        except amdsmi.AmdSmiException as exc:
            raise NotMeasured(f"amdsmi unavailable: cannot list GPUs: {_one_line(exc)}") from None
        if not handles:
            raise NotMeasured("amdsmi unavailable: amdsmi_get_processor_handles lists no GPU")
        system = AmdSmiFields(amdsmi)
        driver = system.read("driver_version", "amdsmi_get_gpu_driver_info", handles[0],
                             convert=lambda info: info["driver_version"])
        system.unavailable["cuda_driver_version"] = NOT_A_CUDA_DRIVER
        gpus = [_read_gpu(amdsmi, index, handle) for index, handle in enumerate(handles)]
        if devices is None:
            return GpuInventory(driver, None, gpus, system.unavailable)
        pairing = pair_devices(devices, [NvmlGpuId(gpu.index, gpu.uuid) for gpu in gpus])
    chosen = sorted(pairing.indices.items(), key=lambda item: item[1])
    paired = [replace(gpus[index], cuda_device=label) for label, index in chosen]
    return GpuInventory(driver, None, paired, system.unavailable, pairing.unpaired)


def _read_gpu(amdsmi: Any, index: int, handle: Any) -> GpuRecord:
    fields = AmdSmiFields(amdsmi)
    record = GpuRecord(index, unavailable=fields.unavailable)
    asic = fields.read("name", "amdsmi_get_gpu_asic_info", handle) or {}
    record.name = _known(asic.get("market_name"))
    record.serial = _known(asic.get("asic_serial"))
    if asic and record.serial is None:
        fields.unavailable["serial"] = NOT_SUPPORTED
    record.uuid = _hip_uuid(amdsmi, handle, record.serial) or fields.read("uuid", "amdsmi_get_gpu_device_uuid", handle)
    record.vbios = fields.read("vbios", "amdsmi_get_gpu_vbios_info", handle, convert=lambda info: info["version"])
    record.memory_total_bytes = fields.read(
        "memory_total_bytes", "amdsmi_get_gpu_memory_total", handle, amdsmi.AmdSmiMemoryType.VRAM, convert=int
    )
    record.ecc = _read_ecc(fields, handle)
    record.memory_repair = _read_bad_pages(fields, handle)
    _read_pcie(fields, handle, record)
    record.nvlink = _read_xgmi(fields, handle)
    clocks = record.clocks
    gfx = fields.read("clocks.sm_mhz", "amdsmi_get_clock_info", handle, amdsmi.AmdSmiClkType.GFX) or {}
    clocks.sm_mhz, clocks.sm_max_mhz = _known(gfx.get("clk")), _known(gfx.get("max_clk"))
    mem = fields.read("clocks.mem_mhz", "amdsmi_get_clock_info", handle, amdsmi.AmdSmiClkType.MEM) or {}
    clocks.mem_mhz, clocks.mem_max_mhz = _known(mem.get("clk")), _known(mem.get("max_clk"))
    record.temperature_c = read_temperature(fields, handle)
    record.power_w = read_power(fields, handle)
    caps = fields.read("power_limit_w", "amdsmi_get_power_cap_info", handle) or {}
    record.power_limit_w = _microwatts_to_watts(caps.get("power_cap"))
    record.power_default_limit_w = _microwatts_to_watts(caps.get("default_power_cap"))
    if caps and record.power_default_limit_w is None:
        fields.unavailable["power_default_limit_w"] = NOT_SUPPORTED
    fields.unavailable["clock_event_mask"] = NO_CLOCK_EVENTS
    return record


def _hip_uuid(amdsmi: Any, handle: Any, serial: str | None) -> str | None:
    """HIP's UUID of the GPU, the one torch pairs with; None where amdsmi gives neither source of it."""
    # Only a fallback is being tried here: its reasons are not the record's.
    enumeration = AmdSmiFields(amdsmi).read("hip_uuid", "amdsmi_get_gpu_enumeration_info", handle)
    hip = _known(enumeration.get("hip_uuid")) if isinstance(enumeration, dict) else None
    if hip:
        return str(hip)
    digits = serial.lower().removeprefix("0x") if serial else ""
    return f"GPU-{digits}" if len(digits) == 16 and all(c in "0123456789abcdef" for c in digits) else None


def _known(value: Any) -> Any:
    return None if value in (None, "N/A", "") else value


def _microwatts_to_watts(value: Any) -> float | None:
    value = _known(value)
    return value / 1e6 if isinstance(value, (int, float)) else None


def read_temperature(fields: AmdSmiFields, handle: Any) -> int | None:
    # MI300-series GPUs have no edge sensor (amdsmi answers NOT_SUPPORTED); their hotspot
    # (junction) temperature is the one amd-smi shows, and the one the GPU throttles on.
    amdsmi = fields.amdsmi
    current = amdsmi.AmdSmiTemperatureMetric.CURRENT
    for sensor in (amdsmi.AmdSmiTemperatureType.HOTSPOT, amdsmi.AmdSmiTemperatureType.EDGE):
        value = fields.read("temperature_c", "amdsmi_get_temp_metric", handle, sensor, current, convert=int)
        if value is not None:
            return value
    return None


def read_power(fields: AmdSmiFields, handle: Any) -> float | None:
    # MI300 reports the instant socket power only; older GPUs (MI200) only the average.
    info = fields.read("power_w", "amdsmi_get_power_info", handle) or {}
    for key in ("current_socket_power", "average_socket_power"):
        value = _known(info.get(key))
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    if info:
        fields.unavailable["power_w"] = NOT_SUPPORTED
    return None


def _read_ecc(fields: AmdSmiFields, handle: Any) -> EccInfo:
    """RAS error counts of all blocks since the driver loaded: NVML's volatile counters' meaning."""
    ecc = EccInfo()
    amdsmi = fields.amdsmi
    mask = fields.read("ecc.mode", "amdsmi_get_gpu_ecc_enabled", handle, convert=int)
    if mask is not None:
        # UMC is the HBM memory controller: its RAS is what NVML calls memory ECC.
        ecc.mode_current = ecc.mode_pending = bool(mask & int(amdsmi.AmdSmiGpuBlock.UMC))
    counts = fields.read("ecc.volatile_corrected", "amdsmi_get_gpu_total_ecc_count", handle)
    if counts is not None:
        fields.unavailable.pop("ecc.volatile_uncorrected", None)
        ecc.volatile_corrected = int(counts["correctable_count"])
        ecc.volatile_uncorrected = int(counts["uncorrectable_count"])
    else:
        fields.unavailable["ecc.volatile_uncorrected"] = fields.unavailable["ecc.volatile_corrected"]
    return ecc


def _read_bad_pages(fields: AmdSmiFields, handle: Any) -> MemoryRepair:
    """amdgpu retires a page (adds it to its bad-page table in EEPROM) when an uncorrectable error
    hits it; the table records no cause, so every page is counted under `uncorrected`."""
    pages = fields.read("memory_repair.bad_pages", "amdsmi_get_gpu_bad_page_info", handle, convert=list)
    if pages is None:
        return MemoryRepair()
    pending = any(str(page.get("status", "")).upper().endswith("PENDING") for page in pages)
    return MemoryRepair("retired_pages", 0, len(pages), pending)


def _read_pcie(fields: AmdSmiFields, handle: Any, record: GpuRecord) -> None:
    info = fields.read("pcie.gen_current", "amdsmi_get_pcie_info", handle)
    pcie = record.pcie
    if info is None:
        for name in ("gen_max", "width_current", "width_max"):
            fields.unavailable[f"pcie.{name}"] = fields.unavailable["pcie.gen_current"]
        return
    metric, static = info.get("pcie_metric", {}), info.get("pcie_static", {})
    pcie.gen_current = _pcie_gen(metric.get("pcie_speed"))
    pcie.gen_max = _pcie_gen(static.get("max_pcie_speed")) or _known(static.get("pcie_interface_version"))
    pcie.width_current = _known(metric.get("pcie_width"))
    pcie.width_max = _known(static.get("max_pcie_width"))
    for name in ("gen_current", "gen_max", "width_current", "width_max"):
        if getattr(pcie, name) is None:
            fields.unavailable[f"pcie.{name}"] = NOT_SUPPORTED
        else:
            fields.unavailable.pop(f"pcie.{name}", None)


def _pcie_gen(speed: Any) -> int | None:
    """The generation of a PCIe rate. amdsmi's header gives pcie_speed in MT/s (32000 for Gen5) and
    its README in GT/s (32): both are accepted."""
    speed = _known(speed)
    if not isinstance(speed, (int, float)) or speed <= 0:
        return None
    gts = speed / 1000 if speed >= 1000 else float(speed)
    return _PCIE_GEN_BY_GTS.get(round(gts, 1))


def _read_xgmi(fields: AmdSmiFields, handle: Any) -> NvLinkState | None:
    """xGMI links by index, True when up. A disabled link ("X": a slot the board does not wire) is
    absent, as NVML's NOT_SUPPORTED links are; "N/A" is absent too."""
    status = fields.read("nvlink", "amdsmi_get_gpu_xgmi_link_status", handle, convert=lambda s: s["status"])
    if status is None:
        return None
    links = {index: state == "U" for index, state in enumerate(status) if state in ("U", "D")}
    if not links:
        fields.unavailable["nvlink"] = NOT_SUPPORTED
        return None
    return NvLinkState(links)
