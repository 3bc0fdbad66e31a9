"""FakeAmdSmi: a test double of the amdsmi Python API (ROCm's py-interface) that clusterbench reads.

Function names, arguments and return shapes follow ROCm/amdsmi py-interface/amdsmi_interface.py
(commit 0ceca28, amdsmi 24.5.x; amdsmi_get_gpu_xgmi_link_status and amdsmi_get_gpu_enumeration_info
from ROCm 6.4). Values the hardware does not report are the string "N/A", as amdsmi gives them.
Errors are `AmdSmiLibraryException(err_code)` with amdsmi's status codes (2 NOT_SUPPORTED, 10 NO_PERM).
Each GPU is a `FakeAmdGpu` whose defaults describe a healthy MI300X OAM; tests change only what their
scenario is about. `missing` names functions an older amdsmi lacks (AttributeError).

`FakeMi300xNode` is the whole node as torch (a ROCm build: torch.version.hip set) and amdsmi see it:
torch prints each GPU's UUID as the hex of the ASCII of its KFD unique id (ROCm/ROCm#4203), amdsmi
gives its own UUID form, the HIP UUID "GPU-<unique id>" and the ASIC serial "0x<UNIQUE ID>".
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

MI300X_NAME = "AMD Instinct MI300X"
MI300X_VRAM = 205822885888  # bytes amdsmi reports for an MI300X (192 GiB minus the reserved part)
STATUS_NOT_SUPPORTED = 2
STATUS_NO_PERM = 10
STATUS_DRIVER_NOT_LOADED = 34


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        super().__init__(err_code)
        self.err_code = err_code

    def get_error_code(self) -> int:
        return self.err_code

    def __str__(self) -> str:
        return f"Error code:\n\t{self.err_code} | AMDSMI_STATUS_{self.err_code}"


class AmdSmiMemoryType(IntEnum):
    VRAM = 0
    VIS_VRAM = 1
    GTT = 2


class AmdSmiClkType(IntEnum):
    SYS = 0
    GFX = 0
    DF = 1
    MEM = 4


class AmdSmiTemperatureType(IntEnum):
    EDGE = 0
    HOTSPOT = 1
    JUNCTION = 1
    VRAM = 2


class AmdSmiTemperatureMetric(IntEnum):
    CURRENT = 0
    MAX = 1


class AmdSmiGpuBlock(IntEnum):
    UMC = 1
    SDMA = 2
    GFX = 4


def unique_id(index: int) -> str:
    """The KFD unique id of fake GPU `index`: 16 lower-case hex digits."""
    return f"{0xF330DC4D00DE0000 + index:016x}"


def torch_uuid(index: int) -> str:
    """What str(torch.cuda.get_device_properties(i).uuid) prints on ROCm: hex of the id's ASCII."""
    raw = unique_id(index).encode().hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}"


@dataclass
class FakeAmdGpu:
    index: int = 0
    name: str = MI300X_NAME
    vbios: str = "022.040.003.043.000001"
    vram_bytes: int = MI300X_VRAM
    ecc_enabled_mask: int = 0x3FFF  # every RAS block, UMC included
    correctable: int = 0
    uncorrectable: int = 0
    bad_pages: list[dict[str, Any]] = field(default_factory=list)
    pcie_speed: Any = 32000  # MT/s: Gen5
    pcie_width: Any = 16
    max_pcie_speed: Any = 32000
    max_pcie_width: Any = 16
    pcie_interface_version: Any = 5
    xgmi: list[str] | None = field(default_factory=lambda: ["U"] * 7 + ["X"])  # 7 links to the 7 peers
    gfx_clk: int = 2100
    gfx_max_clk: int = 2100
    mem_clk: int = 1300
    mem_max_clk: int = 1300
    hotspot_c: Any = 42
    edge_c: Any = "N/A"  # MI300 has no edge sensor
    socket_power_w: Any = 140
    average_socket_power_w: Any = "N/A"
    power_cap_uw: int = 750_000_000
    default_power_cap_uw: int = 750_000_000
    errors: dict[str, int] = field(default_factory=dict)  # function name -> status code it raises

    @property
    def unique_id(self) -> str:
        return unique_id(self.index)

    @property
    def amdsmi_uuid(self) -> str:
        # amdsmi's own UUID form (before ROCm 7.12): not the HIP one; pairing must not rely on it.
        return f"{self.index:02x}ff74a1-0000-1000-80e8-{self.unique_id[:12]}"


class FakeAmdSmi:
    """Stands in for the `amdsmi` module."""

    AmdSmiException = AmdSmiException
    AmdSmiLibraryException = AmdSmiLibraryException
    AmdSmiMemoryType = AmdSmiMemoryType
    AmdSmiClkType = AmdSmiClkType
    AmdSmiTemperatureType = AmdSmiTemperatureType
    AmdSmiTemperatureMetric = AmdSmiTemperatureMetric
    AmdSmiGpuBlock = AmdSmiGpuBlock

    def __init__(self, gpus: list[FakeAmdGpu], driver_version: str = "6.8.5", init_error: int | None = None,
                 missing: tuple[str, ...] = ()) -> None:
        self.gpus = gpus
        self.driver_version = driver_version
        self.init_error = init_error
        self.missing = set(missing)
        self.inits = 0
        self.shutdowns = 0

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("amdsmi_") and name in object.__getattribute__(self, "missing"):
            raise AttributeError(f"module 'amdsmi' has no attribute '{name}'")
        return object.__getattribute__(self, name)

    def _gpu(self, handle: FakeAmdGpu, function: str) -> FakeAmdGpu:
        code = handle.errors.get(function)
        if code is not None:
            raise AmdSmiLibraryException(code)
        return handle

    # --- library ------------------------------------------------------------------------------

    def amdsmi_init(self, flag: Any = None) -> None:
        if self.init_error is not None:
            raise AmdSmiLibraryException(self.init_error)
        self.inits += 1

    def amdsmi_shut_down(self) -> None:
        self.shutdowns += 1

    def amdsmi_get_processor_handles(self) -> list[FakeAmdGpu]:
        return list(self.gpus)  # the handle of a GPU is the FakeAmdGpu itself

    # --- identity -----------------------------------------------------------------------------

    def amdsmi_get_gpu_device_uuid(self, handle: FakeAmdGpu) -> str:
        return self._gpu(handle, "amdsmi_get_gpu_device_uuid").amdsmi_uuid

    def amdsmi_get_gpu_enumeration_info(self, handle: FakeAmdGpu) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_gpu_enumeration_info")
        return {"drm_render": 128 + gpu.index, "drm_card": gpu.index, "hsa_id": gpu.index + 1,
                "hip_id": gpu.index, "hip_uuid": f"GPU-{gpu.unique_id}"}

    def amdsmi_get_gpu_asic_info(self, handle: FakeAmdGpu) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_gpu_asic_info")
        return {"market_name": gpu.name, "vendor_id": "0x1002", "vendor_name": "Advanced Micro Devices Inc. [AMD/ATI]",
                "subvendor_id": "0x1002", "device_id": "0x74a1", "rev_id": "0x00",
                "asic_serial": f"0x{gpu.unique_id.upper()}", "oam_id": gpu.index, "num_compute_units": 304,
                "target_graphics_version": "gfx942"}

    def amdsmi_get_gpu_vbios_info(self, handle: FakeAmdGpu) -> dict[str, str]:
        gpu = self._gpu(handle, "amdsmi_get_gpu_vbios_info")
        return {"name": "AMD MI300X", "build_date": "2024/03/01 00:00", "part_number": "113-M3000100-102",
                "version": gpu.vbios}

    def amdsmi_get_gpu_driver_info(self, handle: FakeAmdGpu) -> dict[str, str]:
        self._gpu(handle, "amdsmi_get_gpu_driver_info")
        return {"driver_name": "amdgpu", "driver_version": self.driver_version, "driver_date": "2015/01/01 00:00"}

    def amdsmi_get_gpu_memory_total(self, handle: FakeAmdGpu, mem_type: AmdSmiMemoryType) -> int:
        return self._gpu(handle, "amdsmi_get_gpu_memory_total").vram_bytes

    # --- health -------------------------------------------------------------------------------

    def amdsmi_get_gpu_ecc_enabled(self, handle: FakeAmdGpu) -> int:
        return self._gpu(handle, "amdsmi_get_gpu_ecc_enabled").ecc_enabled_mask

    def amdsmi_get_gpu_total_ecc_count(self, handle: FakeAmdGpu) -> dict[str, int]:
        gpu = self._gpu(handle, "amdsmi_get_gpu_total_ecc_count")
        return {"correctable_count": gpu.correctable, "uncorrectable_count": gpu.uncorrectable, "deferred_count": 0}

    def amdsmi_get_gpu_bad_page_info(self, handle: FakeAmdGpu) -> list[dict[str, Any]]:
        return list(self._gpu(handle, "amdsmi_get_gpu_bad_page_info").bad_pages)

    def amdsmi_get_pcie_info(self, handle: FakeAmdGpu) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_pcie_info")
        return {
            "pcie_static": {"max_pcie_width": gpu.max_pcie_width, "max_pcie_speed": gpu.max_pcie_speed,
                            "pcie_interface_version": gpu.pcie_interface_version, "slot_type": "OAM"},
            "pcie_metric": {"pcie_width": gpu.pcie_width, "pcie_speed": gpu.pcie_speed, "pcie_bandwidth": 0,
                            "pcie_replay_count": 0, "pcie_l0_to_recovery_count": 0},
        }

    def amdsmi_get_gpu_xgmi_link_status(self, handle: FakeAmdGpu) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_gpu_xgmi_link_status")
        if gpu.xgmi is None:
            raise AmdSmiLibraryException(STATUS_NOT_SUPPORTED)
        return {"status": list(gpu.xgmi), "total_links": len(gpu.xgmi)}

    def amdsmi_get_clock_info(self, handle: FakeAmdGpu, clock_type: AmdSmiClkType) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_clock_info")
        clk, top = (gpu.mem_clk, gpu.mem_max_clk) if clock_type == AmdSmiClkType.MEM else (gpu.gfx_clk, gpu.gfx_max_clk)
        return {"clk": clk, "min_clk": 500, "max_clk": top, "clk_locked": False, "clk_deep_sleep": False}

    def amdsmi_get_temp_metric(self, handle: FakeAmdGpu, sensor: AmdSmiTemperatureType,
                               metric: AmdSmiTemperatureMetric) -> int:
        gpu = self._gpu(handle, "amdsmi_get_temp_metric")
        value = gpu.hotspot_c if sensor == AmdSmiTemperatureType.HOTSPOT else gpu.edge_c
        if value == "N/A":
            raise AmdSmiLibraryException(STATUS_NOT_SUPPORTED)
        return value

    def amdsmi_get_power_info(self, handle: FakeAmdGpu) -> dict[str, Any]:
        gpu = self._gpu(handle, "amdsmi_get_power_info")
        return {"current_socket_power": gpu.socket_power_w, "average_socket_power": gpu.average_socket_power_w,
                "gfx_voltage": "N/A", "soc_voltage": "N/A", "mem_voltage": "N/A", "power_limit": 750}

    def amdsmi_get_power_cap_info(self, handle: FakeAmdGpu) -> dict[str, int]:
        gpu = self._gpu(handle, "amdsmi_get_power_cap_info")
        return {"power_cap": gpu.power_cap_uw, "default_power_cap": gpu.default_power_cap_uw, "dpm_cap": 0,
                "min_power_cap": 0, "max_power_cap": gpu.default_power_cap_uw}


@dataclass(frozen=True)
class FakeHipProperties:
    """torch.cuda.get_device_properties(i) of a ROCm build, the fields clusterbench reads."""

    name: str
    major: int
    minor: int
    gcnArchName: str  # noqa: N815 - torch's own spelling
    total_memory: int
    multi_processor_count: int
    uuid: Any


class FakeTorchUuid:
    def __init__(self, text: str) -> None:
        self._text = text

    def __str__(self) -> str:
        return self._text


class FakeMi300xNode:
    """An MI300X node: amdsmi sees every GPU; torch (ROCm) sees `visible` ones, in that order."""

    def __init__(self, gpus: int = 8, visible: list[int] | None = None) -> None:
        self.amdsmi = FakeAmdSmi([FakeAmdGpu(index=i) for i in range(gpus)])
        self.visible = list(range(gpus)) if visible is None else list(visible)

    def get_device_properties(self, index: int) -> FakeHipProperties:
        gpu = self.amdsmi.gpus[self.visible[index]]
        return FakeHipProperties(gpu.name, 9, 4, "gfx942:sramecc+:xnack-", 196592 * 2**20, 304,
                                 FakeTorchUuid(torch_uuid(gpu.index)))

    def install(self, monkeypatch: Any) -> None:
        """torch answers as a ROCm build on this node, `import amdsmi` gives the fake, NVML is absent."""
        import pynvml
        import torch

        from fake_nvml import FakeNvml

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(self.visible))
        monkeypatch.setattr(torch.cuda, "get_device_properties", self.get_device_properties)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: self.get_device_properties(i).name)
        monkeypatch.setattr(torch.version, "hip", "6.2.41133", raising=False)
        monkeypatch.setitem(sys.modules, "amdsmi", self.amdsmi)
        monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND))
