"""AMD GPUs: inventory and health through amdsmi (FakeAmdSmi), and a ROCm build of torch (FakeMi300xNode)."""

from __future__ import annotations

import sys

import pynvml
import pytest

from clusterbench.hardware import match_accelerator
from clusterbench.health_checks import assess_node, driven_gpus
from clusterbench.model import NotMeasured
from clusterbench.probes.devices import local_devices, reason_unsupported, supported_dtypes
from clusterbench.probes.health import gpu_measurements, read_host_inventory, read_node_inventory
from clusterbench.probes.health.amdsmi_reader import read_amdsmi_inventory
from clusterbench.probes.health.node_inventory import read_gpus
from fake_amdsmi import (
    MI300X_NAME,
    MI300X_VRAM,
    STATUS_DRIVER_NOT_LOADED,
    STATUS_NO_PERM,
    FakeAmdGpu,
    FakeAmdSmi,
    FakeMi300xNode,
    unique_id,
)
from fake_nvml import FakeNvml

HOST = "mi300x-node-01"
NO_NVML = FakeNvml([], init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)


def test_healthy_mi300x_reads_the_fields_nvml_gives():
    amdsmi = FakeAmdSmi([FakeAmdGpu(index=0), FakeAmdGpu(index=1)])
    inventory = read_amdsmi_inventory(amdsmi)

    assert inventory.driver_version == "6.8.5" and inventory.cuda_driver_version is None
    assert "cuda_driver_version" in inventory.unavailable
    gpu = inventory.gpus[1]
    assert gpu.name == MI300X_NAME and gpu.serial == f"0x{unique_id(1).upper()}"
    assert gpu.memory_total_bytes == MI300X_VRAM and gpu.vbios.startswith("022.")
    assert (gpu.ecc.mode_current, gpu.ecc.volatile_corrected, gpu.ecc.volatile_uncorrected) == (True, 0, 0)
    assert gpu.memory_repair.kind == "retired_pages" and gpu.memory_repair.total == 0
    assert (gpu.pcie.gen_current, gpu.pcie.gen_max, gpu.pcie.width_current, gpu.pcie.width_max) == (5, 5, 16, 16)
    assert gpu.nvlink.up == 7 and gpu.nvlink.down == [] and len(gpu.nvlink.links) == 7  # "X" slot absent
    assert (gpu.clocks.sm_mhz, gpu.clocks.sm_max_mhz) == (2100, 2100)
    assert (gpu.temperature_c, gpu.power_w, gpu.power_limit_w, gpu.power_default_limit_w) == (42, 140.0, 750.0, 750.0)
    assert gpu.lost is None and gpu.clock_event_mask is None
    assert set(gpu.unavailable) == {"clock_event_mask"}
    assert amdsmi.inits == amdsmi.shutdowns == 1


def test_faults_are_read_as_counts_and_links_down():
    gpu = FakeAmdGpu(index=0, uncorrectable=3, correctable=12, pcie_width=8, xgmi=["U"] * 6 + ["D", "X"],
                     bad_pages=[{"value": 0, "page_address": 0x1000, "page_size": 4096, "status": "PENDING"}])
    record = read_amdsmi_inventory(FakeAmdSmi([gpu])).gpus[0]
    assert (record.ecc.volatile_uncorrected, record.ecc.volatile_corrected) == (3, 12)
    assert (record.memory_repair.total, record.memory_repair.pending) == (1, True)
    assert record.pcie.width_current == 8
    assert record.nvlink.down == [6] and record.nvlink.up == 6


def test_not_supported_no_permission_and_old_amdsmi_read_as_none_with_reason():
    gpu = FakeAmdGpu(index=0, pcie_speed="N/A", errors={"amdsmi_get_gpu_total_ecc_count": STATUS_NO_PERM})
    amdsmi = FakeAmdSmi([gpu], missing=("amdsmi_get_gpu_xgmi_link_status",))
    record = read_amdsmi_inventory(amdsmi).gpus[0]
    assert record.ecc.volatile_uncorrected is None and record.unavailable["ecc.volatile_uncorrected"] == "no permission"
    assert record.pcie.gen_current is None and record.unavailable["pcie.gen_current"] == "not supported"
    assert record.pcie.gen_max == 5
    assert record.nvlink is None and "amdsmi_get_gpu_xgmi_link_status" in record.unavailable["nvlink"]
    assert record.temperature_c == 42  # what amdsmi did answer is still there


def test_edge_sensor_and_average_power_where_there_is_no_hotspot_or_instant_power():
    gpu = FakeAmdGpu(index=0, hotspot_c="N/A", edge_c=51, socket_power_w="N/A", average_socket_power_w=300)
    record = read_amdsmi_inventory(FakeAmdSmi([gpu])).gpus[0]
    assert (record.temperature_c, record.power_w) == (51, 300.0)


def test_amdsmi_init_failure_is_not_measured_with_the_reason():
    with pytest.raises(NotMeasured, match="amdsmi unavailable: amdsmi_init failed.*amdgpu"):
        read_amdsmi_inventory(FakeAmdSmi([], init_error=STATUS_DRIVER_NOT_LOADED))


def test_torch_on_rocm_records_the_runtime_the_isa_and_the_hip_unique_id(monkeypatch):
    node = FakeMi300xNode(gpus=8, visible=[5, 2])
    node.install(monkeypatch)
    devices = local_devices()
    assert [(d.runtime, d.arch, d.kind) for d in devices] == [("rocm", "gfx942", "cuda")] * 2
    assert [d.uuid for d in devices] == [unique_id(5), unique_id(2)]
    assert devices[0].compute_capability == (9, 4) and devices[0].count_cores == 304


def test_rocm_dtypes_follow_the_isa_not_the_compute_capability(monkeypatch):
    node = FakeMi300xNode(gpus=1)
    node.install(monkeypatch)
    mi300x = local_devices()[0]
    assert supported_dtypes(mi300x) == ["fp32", "tf32", "bf16", "fp16", "fp8"]
    mi250 = type(mi300x)(**{**mi300x.__dict__, "name": "AMD Instinct MI250X", "arch": "gfx90a",
                            "compute_capability": (9, 0)})
    assert "gfx90a" in reason_unsupported(mi250, "fp8") and "gfx90a" in reason_unsupported(mi250, "tf32")


def test_a_fake_mi300x_node_gives_the_gpu_figures_nvml_gives(monkeypatch):
    node = FakeMi300xNode(gpus=8, visible=[5, 2])
    node.install(monkeypatch)
    inventory = read_node_inventory()  # NVML absent: amdsmi reads the node
    assert inventory.gpu is not None and len(inventory.gpu.gpus) == 8 and inventory.gpu_not_measured is None

    health = assess_node(inventory, driven_gpus(local_devices()), HOST, 0, None)
    by_metric = {(m.metric, m.location.device): m for m in health.figures.measurements}
    assert by_metric[("gpu.count", "node")].value == 8
    assert by_metric[("gpu.ecc_uncorrected", "gpu5")].details["cuda_device"] == "cuda:0"
    assert by_metric[("gpu.ecc_uncorrected", "gpu2")].details["cuda_device"] == "cuda:1"
    assert by_metric[("gpu.nvlink_up", "gpu5")].value == 7
    assert by_metric[("gpu.pcie_gen", "gpu5")].value == 5
    assert by_metric[("gpu.temperature_c", "gpu2")].value == 42
    assert {m.location.device for m in health.figures.measurements} == {"node", "gpu5", "gpu2"}
    # load-only figures are NOT MEASURED with the reason, never passed
    assert {u.metric for u in health.figures.not_measured} == {"gpu.throttle_reasons"}


def test_a_rank_reads_only_its_gpus_through_amdsmi(monkeypatch):
    node = FakeMi300xNode(gpus=8, visible=[3])
    node.install(monkeypatch)
    mine = read_gpus(devices=driven_gpus(local_devices()))
    assert [(gpu.index, gpu.cuda_device) for gpu in mine.gpus] == [(3, "cuda:0")] and mine.unpaired == {}
    figures = gpu_measurements(mine, HOST, 0)
    assert {m.location.device for m in figures.measurements if m.metric != "gpu.count"} == {"gpu3"}


def test_with_neither_nvml_nor_amdsmi_the_reason_names_both(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", NO_NVML)
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import amdsmi raises ImportError
    with pytest.raises(NotMeasured) as raised:
        read_gpus()
    assert "NVML unavailable" in str(raised.value) and "amdsmi unavailable" in str(raised.value)
    inventory = read_node_inventory()
    assert inventory.gpu is None and "NVML" in inventory.gpu_not_measured and "amdsmi" in inventory.gpu_not_measured
    assert read_host_inventory() is not None


@pytest.mark.parametrize(("name", "key"), [
    ("AMD Instinct MI300X", "mi300x"), ("AMD Instinct MI300X VF", "mi300x"), ("AMD Instinct MI325X", "mi325x"),
    ("AMD Instinct MI300A", None),
])
def test_hardware_table_matches_amd_instinct_names(name, key):
    spec = match_accelerator(name)
    assert (spec.key if spec else None) == key


def test_mi325x_has_the_mi300x_compute_and_its_own_memory():
    mi300x, mi325x = match_accelerator("AMD Instinct MI300X"), match_accelerator("AMD Instinct MI325X")
    for dtype, peak in (("bf16", 1307.4), ("fp16", 1307.4), ("fp8", 2614.9), ("fp32", 163.4)):
        assert mi300x.peak(dtype) == mi325x.peak(dtype) == peak
    assert (mi300x.memory_gb.value, mi300x.memory_bandwidth_gbps.value) == (192, 5300)
    assert (mi325x.memory_gb.value, mi325x.memory_bandwidth_gbps.value) == (256, 6000)
    assert all(figure.source for figure in mi325x.figures().values())


def test_before_rocm_6_4_the_hip_uuid_comes_from_the_asic_serial(monkeypatch):
    node = FakeMi300xNode(gpus=2, visible=[1])
    node.amdsmi.missing.add("amdsmi_get_gpu_enumeration_info")
    node.install(monkeypatch)
    mine = read_gpus(devices=driven_gpus(local_devices()))
    assert mine.gpus[0].uuid == f"GPU-{unique_id(1)}" and mine.gpus[0].cuda_device == "cuda:0"
    assert "hip_uuid" not in mine.gpus[0].unavailable
