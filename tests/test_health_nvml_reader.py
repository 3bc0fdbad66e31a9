"""Reading GPU inventory through NVML: every answer NVML can give, through the FakeNvml double."""

from __future__ import annotations

import pynvml
import pytest

from clusterbench.model import NotMeasured
from clusterbench.probes.health import NodeInventory, read_gpu_inventory, read_node_inventory
from clusterbench.probes.health.nvml_session import NOT_IN_DRIVER
from fake_nvml import GPU_IS_LOST, NO_PERMISSION, NOT_SUPPORTED, FakeNvml, healthy

UNCORRECTED_VOLATILE = (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)


def test_healthy_h100_reads_every_field():
    nvml = FakeNvml([healthy(0), healthy(1)])
    inventory = read_gpu_inventory(nvml)

    assert (inventory.driver_version, inventory.cuda_driver_version) == ("550.54.15", "12.4")
    assert len(inventory.gpus) == 2 and inventory.usable == inventory.gpus
    gpu = inventory.gpus[1]
    assert gpu.name == "NVIDIA H100 80GB HBM3" and gpu.uuid.startswith("GPU-00000001")
    assert gpu.memory_total_bytes == 81559 * 2**20
    assert (gpu.ecc.mode_current, gpu.ecc.volatile_uncorrected, gpu.ecc.aggregate_corrected) == (True, 0, 0)
    assert gpu.memory_repair.kind == "remapped_rows" and gpu.memory_repair.total == 0
    assert (gpu.pcie.gen_current, gpu.pcie.gen_max, gpu.pcie.width_current, gpu.pcie.width_max) == (5, 5, 16, 16)
    assert gpu.nvlink.up == 18 and gpu.nvlink.down == []
    assert (gpu.clocks.sm_mhz, gpu.clocks.mem_max_mhz) == (1980, 2619)
    assert (gpu.temperature_c, gpu.power_w, gpu.power_limit_w) == (45, 120.0, 700.0)
    assert gpu.clock_event_mask == 0 and gpu.throttling == []
    assert gpu.unavailable == {} and gpu.lost is None
    assert nvml.inits == nvml.shutdowns == 1


def test_to_json_is_plain_data_with_decoded_reasons():
    nvml = FakeNvml([healthy(0, clock_events=0x1 | 0x4)])
    data = read_gpu_inventory(nvml).to_json()
    gpu = data["gpus"][0]
    assert data["count"] == 1
    assert gpu["clock_events"] == ["GpuIdle", "SwPowerCap"] and gpu["throttling"] == ["SwPowerCap"]
    assert gpu["nvlink"]["up"] == 18 and gpu["memory_repair"]["total"] == 0


def test_faulty_gpu_counts_are_read():
    gpu = healthy(
        0, ecc_counts={UNCORRECTED_VOLATILE: 2}, remapped_rows=(1, 2, 1, 1), pcie_width=8,
        nvlinks=[True] * 17 + [False],
    )
    record = read_gpu_inventory(FakeNvml([gpu])).gpus[0]
    assert record.ecc.volatile_uncorrected == 2
    assert (record.memory_repair.uncorrected, record.memory_repair.pending, record.memory_repair.failure) == (2, True,
                                                                                                              True)
    assert record.pcie.width_current == 8
    assert record.nvlink.down == [17]


def test_pre_ampere_gpu_reports_retired_pages_instead_of_rows():
    gpu = healthy(
        0, name="Tesla V100-SXM2-32GB", errors={"nvmlDeviceGetRemappedRows": NOT_SUPPORTED},
        retired_pages={pynvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR: [0x1000, 0x2000]}, retired_pending=1,
    )
    repair = read_gpu_inventory(FakeNvml([gpu])).gpus[0].memory_repair
    assert (repair.kind, repair.corrected, repair.uncorrected, repair.pending) == ("retired_pages", 0, 2, True)


def test_not_supported_and_no_permission_fields_are_none_with_reason():
    gpu = healthy(0, nvlinks=None, errors={
        "nvmlDeviceGetSerial": NOT_SUPPORTED,
        "nvmlDeviceGetTotalEccErrors": NOT_SUPPORTED,
        "nvmlDeviceGetCurrPcieLinkWidth": NO_PERMISSION,
        "nvmlDeviceGetPowerUsage": NO_PERMISSION,
    })
    record = read_gpu_inventory(FakeNvml([gpu])).gpus[0]
    assert record.serial is None and record.unavailable["serial"] == "not supported"
    assert record.ecc.volatile_uncorrected is None
    assert record.unavailable["ecc.volatile_uncorrected"] == "not supported"
    assert record.pcie.width_current is None and record.unavailable["pcie.width_current"] == "no permission"
    assert record.power_w is None and record.unavailable["power_w"] == "no permission"
    assert record.nvlink is None and record.unavailable["nvlink"] == "not supported"
    # what NVML did answer is still there
    assert record.pcie.width_max == 16 and record.temperature_c == 45 and record.lost is None


def test_neither_rows_nor_pages_gives_no_repair_and_both_reasons():
    gpu = healthy(0, errors={"nvmlDeviceGetRemappedRows": NOT_SUPPORTED})
    record = read_gpu_inventory(FakeNvml([gpu])).gpus[0]
    assert record.memory_repair.kind is None and record.memory_repair.total is None
    assert record.unavailable["memory_repair.remapped_rows"] == "not supported"
    assert record.unavailable["memory_repair.retired_pages_dbe"] == "not supported"


def test_lost_gpu_is_marked_and_other_gpus_still_read():
    nvml = FakeNvml([healthy(0), healthy(1, lost=True), healthy(2)])
    inventory = read_gpu_inventory(nvml)
    assert inventory.gpus[1].lost.startswith("GPU lost (NVML_ERROR_GPU_IS_LOST while reading uuid")
    assert [gpu.index for gpu in inventory.usable] == [0, 2]
    assert nvml.shutdowns == 1


def test_gpu_lost_midway_keeps_what_was_read():
    gpu = healthy(0, errors={"nvmlDeviceGetCurrPcieLinkGeneration": GPU_IS_LOST})
    record = read_gpu_inventory(FakeNvml([gpu])).gpus[0]
    assert record.lost == "GPU lost (NVML_ERROR_GPU_IS_LOST while reading pcie.gen_current)"
    assert record.name == "NVIDIA H100 80GB HBM3" and record.ecc.volatile_uncorrected == 0
    assert record.pcie.width_max is None and record.temperature_c is None


def test_gpu_nvml_cannot_open_is_unusable():
    inventory = read_gpu_inventory(FakeNvml([healthy(0, handle_error=pynvml.NVML_ERROR_UNKNOWN)]))
    assert inventory.gpus[0].lost == "NVML cannot open the GPU: NVML error: Unknown Error"
    assert inventory.usable == []


def test_old_binding_falls_back_to_throttle_reasons_and_old_cuda_version_call():
    nvml = FakeNvml(
        [healthy(0, clock_events=0x20)],
        missing=("nvmlDeviceGetCurrentClocksEventReasons", "nvmlSystemGetCudaDriverVersion_v2",
                 "nvmlDeviceGetRemappedRows"),
    )
    inventory = read_gpu_inventory(nvml)
    gpu = inventory.gpus[0]
    assert gpu.clock_events == ["SwThermalSlowdown"] and "clock_event_mask" not in gpu.unavailable
    assert inventory.cuda_driver_version == "12.4"
    assert gpu.unavailable["memory_repair.remapped_rows"] == NOT_IN_DRIVER


def test_old_driver_without_newer_symbols():
    nvml = FakeNvml(
        [healthy(0, clock_events=0x4)],
        not_in_driver=("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetRemappedRows",
                       "nvmlDeviceGetPowerManagementDefaultLimit"),
    )
    gpu = read_gpu_inventory(nvml).gpus[0]
    assert gpu.clock_events == ["SwPowerCap"]
    assert gpu.power_default_limit_w is None
    assert gpu.unavailable["power_default_limit_w"] == "not available in this driver"
    assert gpu.unavailable["memory_repair.remapped_rows"] == "not available in this driver"


def test_function_missing_everywhere_reads_as_not_available():
    nvml = FakeNvml([healthy(0)], missing=("nvmlDeviceGetCurrentClocksEventReasons",
                                           "nvmlDeviceGetCurrentClocksThrottleReasons", "nvmlDeviceGetNvLinkState"))
    gpu = read_gpu_inventory(nvml).gpus[0]
    assert gpu.clock_event_mask is None and gpu.unavailable["clock_event_mask"] == "not available in this driver"
    assert gpu.nvlink is None and gpu.unavailable["nvlink"] == "not available in this driver"


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "Driver Not Loaded (the NVIDIA kernel module is not loaded"),
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "(no NVIDIA driver installed on this host)"),
    ],
)
def test_no_driver_is_not_measured_with_reason(code, hint):
    nvml = FakeNvml([healthy(0)], init_error=code)
    with pytest.raises(NotMeasured, match=r"^NVML unavailable: ") as caught:
        read_gpu_inventory(nvml)
    assert hint in str(caught.value)
    assert nvml.shutdowns == 0  # nothing to shut down after a failed init


def test_no_driver_still_gives_host_inventory():
    node = read_node_inventory(FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert isinstance(node, NodeInventory) and node.gpu is None
    assert node.gpu_not_measured.startswith("NVML unavailable: Driver Not Loaded")
    assert node.host.python and node.host.kernel
    assert node.to_json()["gpu"] is None


def test_real_pynvml_on_this_machine_reads_or_says_why_not():
    """The real binding: on a GPU node it reads the GPUs; without a driver it is NOT MEASURED, one line."""
    try:
        inventory = read_gpu_inventory()
    except NotMeasured as exc:
        assert str(exc).startswith("NVML unavailable: ") and "\n" not in str(exc)
    else:
        assert inventory.driver_version and all(gpu.uuid or gpu.lost for gpu in inventory.gpus)


def test_nvlink_scan_goes_past_a_not_supported_link_to_the_last_index():
    """A NOT_SUPPORTED link is a slot without a link, not the end of the GPU's links: the links after
    it are read too, up to NVML_NVLINK_MAX_LINKS, and keep their own indices."""
    gpu = healthy(0, nvlinks=[True] * 4 + [None, None] + [True] * 11 + [False])
    nvlink = read_gpu_inventory(FakeNvml([gpu])).gpus[0].nvlink
    assert nvlink.up == 15 and nvlink.down == [17] and sorted(nvlink.links) == [0, 1, 2, 3, *range(6, 18)]
    first_absent = read_gpu_inventory(FakeNvml([healthy(0, nvlinks=[None] + [True] * 12)])).gpus[0].nvlink
    assert first_absent.up == 12 and 0 not in first_absent.links


def test_nvlink_links_travel_as_json_with_their_indices():
    gpu = healthy(0, nvlinks=[None, True, False])
    data = read_gpu_inventory(FakeNvml([gpu])).to_json()["gpus"][0]["nvlink"]
    assert data == {"links": {"1": True, "2": False}, "up": 1, "down": [2]}


def test_nvlink_scan_reads_every_index_the_binding_allows():
    nvml = FakeNvml([healthy(0, nvlinks=[True] * 18)])
    read_gpu_inventory(nvml)
    scanned = [function for _, function in nvml.calls].count("nvmlDeviceGetNvLinkState")
    assert scanned == pynvml.NVML_NVLINK_MAX_LINKS


def test_mig_enabled_gpu_lists_its_slices_and_a_pre_ampere_one_none():
    mig = healthy(0, mig_mode=1, mig_uuids=["MIG-aaaaaaaa-0000-0000-0000-000000000001"])
    old = healthy(1, name="Tesla V100-SXM2-32GB", mig_mode=None)
    gpus = read_gpu_inventory(FakeNvml([mig, old])).gpus
    assert gpus[0].mig_uuids == ["MIG-aaaaaaaa-0000-0000-0000-000000000001"]
    assert gpus[1].mig_uuids == [] and "mig" not in gpus[1].unavailable
