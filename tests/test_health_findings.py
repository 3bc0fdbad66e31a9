"""Health findings: each fault gives one finding that names host, GPU and what to do; health gives none."""

from __future__ import annotations

import pynvml

from clusterbench.judge import health_findings
from clusterbench.probes.health import GpuLoad, LoadReport, LoadSample, read_gpu_inventory
from fake_nvml import FakeNvml, healthy

HOST = "node07"


def findings_for(*gpus, load=None):
    return health_findings(read_gpu_inventory(FakeNvml(list(gpus))), HOST, load)


def under_load(index=0, clock_events=0, pcie_gen=5, temperature=70, samples=10):
    load = GpuLoad(index,
                   [LoadSample(i * 0.1, clock_events, 1980, 690.0, temperature, pcie_gen) for i in range(samples)])
    return LoadReport({index: load}, interval_s=0.1, duration_s=samples * 0.1)


def only(findings):
    assert len(findings) == 1, findings
    return findings[0]


def test_healthy_node_has_no_findings_at_idle_or_under_load():
    gpus = [healthy(i, pcie_gen=1) for i in range(8)]  # idle GPUs sit at Gen1
    assert findings_for(*gpus) == []
    assert findings_for(healthy(0), load=under_load(clock_events=0x4)) == []  # power cap at the default limit


def test_uncorrected_ecc_since_driver_load_fails():
    gpu = healthy(3, ecc_counts={(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC): 4})
    finding = only(findings_for(healthy(0), healthy(1), healthy(2), gpu))
    assert (finding.host, finding.gpu_index, finding.uuid) == (HOST, 3, gpu.uuid)
    assert (finding.metric, finding.severity) == ("gpu.ecc_uncorrected", "fail")
    assert finding.message == f"host node07 GPU 3 ({gpu.uuid}) has 4 uncorrected ECC errors since the driver loaded"
    assert "dcgmi diag" in finding.action


def test_lifetime_uncorrected_ecc_only_warns():
    gpu = healthy(0, ecc_counts={(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC): 1})
    finding = only(findings_for(gpu))
    assert (finding.metric, finding.severity) == ("gpu.ecc_uncorrected", "warn")


def test_pending_remap_and_remap_failure_fail():
    pending = only(findings_for(healthy(0, remapped_rows=(0, 1, 1, 0))))
    assert pending.message.endswith("has a row remap pending") and "reset the GPU" in pending.action
    failure = only(findings_for(healthy(0, remapped_rows=(0, 9, 0, 1))))
    assert "row remap failure" in failure.message and "RMA" in failure.action


def test_pending_page_retirement_on_older_gpu_fails():
    gpu = healthy(0, errors={"nvmlDeviceGetRemappedRows": pynvml.NVML_ERROR_NOT_SUPPORTED}, retired_pages={},
                  retired_pending=1)
    assert only(findings_for(gpu)).message.endswith("has a page retirement pending")


def test_pcie_width_below_max_fails_even_at_idle():
    gpu = healthy(3, pcie_gen=1, pcie_width=8)
    finding = only(findings_for(healthy(0, pcie_gen=1), healthy(1, pcie_gen=1), healthy(2, pcie_gen=1), gpu))
    assert (finding.metric, finding.severity) == ("gpu.pcie_width", "fail")
    assert finding.message == (
        f"host node07 GPU 3 ({gpu.uuid}) PCIe link at Gen1 (idle) x8, max Gen5 x16: reseat the "
        "card or check the riser/slot"
    )


def test_pcie_gen_below_max_fails_only_under_load():
    gpu = healthy(0, pcie_gen=4)
    assert findings_for(gpu) == []  # at idle a lower generation is power saving, not a fault
    finding = only(findings_for(gpu, load=under_load(pcie_gen=4)))
    assert finding.metric == "gpu.pcie_gen"
    assert "PCIe link at Gen4 x16, max Gen5 x16: reseat the card" in finding.message


def test_one_nvlink_down_fails_and_all_down_warns():
    finding = only(findings_for(healthy(0, nvlinks=[True] * 16 + [False, False])))
    assert (finding.metric, finding.severity) == ("gpu.nvlink_up", "fail")
    assert "NVLink 16, 17 down (16 of 18 up)" in finding.message
    all_down = only(findings_for(healthy(0, nvlinks=[False] * 18)))
    assert all_down.severity == "warn" and "fabricmanager" in all_down.action


def test_gpu_without_nvlink_is_not_a_finding():
    assert findings_for(healthy(0, nvlinks=None)) == []


def test_lost_gpu_fails_and_hides_no_other_gpu():
    lost = healthy(1, lost=True)
    findings = findings_for(healthy(0), lost, healthy(2, pcie_width=8))
    assert [(f.gpu_index, f.metric) for f in findings] == [(1, "gpu.count"), (2, "gpu.pcie_width")]
    assert "is unusable: GPU lost" in findings[0].message and "Xid 79" in findings[0].action


def test_thermal_throttling_under_load_fails():
    finding = only(findings_for(healthy(0), load=under_load(clock_events=0x4 | 0x40, temperature=92)))
    assert (finding.metric, finding.severity) == ("gpu.throttle_reasons", "fail")
    assert "throttled (HwThermalSlowdown) in 10 of 10 samples under load, up to 92 C" in finding.message
    assert "cooling" in finding.action


def test_hardware_power_brake_points_at_power_delivery():
    finding = only(findings_for(healthy(0), load=under_load(clock_events=0x80 | 0x8)))
    assert "HwPowerBrakeSlowdown, HwSlowdown" in finding.message and "PSUs" in finding.action


def test_power_cap_below_default_limit_fails():
    gpu = healthy(0, power_limit_mw=500_000)
    finding = only(findings_for(gpu, load=under_load(clock_events=0x4)))
    assert "enforced limit 500 W is below the default 700 W" in finding.message
    assert "nvidia-smi -i 0 -pl 700" in finding.action


def test_power_cap_with_unknown_default_limit_warns():
    gpu = healthy(0, errors={"nvmlDeviceGetPowerManagementDefaultLimit": pynvml.NVML_ERROR_NOT_SUPPORTED})
    assert only(findings_for(gpu, load=under_load(clock_events=0x4))).severity == "warn"


def test_benign_reasons_under_load_are_not_findings():
    assert findings_for(healthy(0), load=under_load(clock_events=0x1 | 0x2 | 0x10 | 0x100)) == []


def test_gpu_lost_under_load_fails():
    report = under_load(samples=2)
    report.gpus[0].lost = "GPU lost (NVML_ERROR_GPU_IS_LOST while reading clock_event_mask)"
    finding = only(findings_for(healthy(0), load=report))
    assert finding.message.endswith("was lost under load: GPU lost (NVML_ERROR_GPU_IS_LOST while "
                                    "reading clock_event_mask)")
