"""Golden configuration: pinned profile values, and the odd one out across the nodes of a run."""

from __future__ import annotations

import pynvml
import pytest

from clusterbench.judge import check_golden, find_outliers
from clusterbench.probes.health import read_node_inventory
from fake_nvml import FakeNvml, healthy

GOLDEN = {
    "gpu_model": "H100 80GB", "gpu_count_per_node": 8, "driver_version": "550.54", "vbios": "96.00.99.00.01",
    "pcie_gen": 5, "pcie_width": 16, "nvlink_count": 18, "memory_gb": 80,
}


def node(hostname, gpus=None, **nvml_options):
    nvml = FakeNvml(gpus if gpus is not None else [healthy(i) for i in range(8)], **nvml_options)
    data = read_node_inventory(nvml).to_json()
    data["hostname"] = data["host"]["hostname"] = hostname
    return data


def test_node_matching_the_golden_configuration_has_no_findings():
    assert check_golden(node("node01"), GOLDEN) == []


def test_golden_mismatches_name_host_gpu_expected_and_actual():
    gpus = [healthy(i) for i in range(7)]
    gpus[2] = healthy(2, vbios="96.00.5E.00.01", pcie_width_max=8, pcie_width=8)
    gpus[5] = healthy(5, name="NVIDIA H100 NVL", memory_total=95830 * 2**20, nvlinks=None)
    findings = check_golden(node("node03", gpus, driver_version="535.104.05"), GOLDEN)
    messages = [f.message for f in findings]
    assert messages == [
        "host node03: 7 GPUs, expected 8 (golden configuration)",
        "host node03: driver 535.104.05, expected 550.54 (golden configuration)",
        f"host node03 GPU 2 ({gpus[2].uuid}): VBIOS 96.00.5E.00.01, expected 96.00.99.00.01 (golden configuration)",
        f"host node03 GPU 2 ({gpus[2].uuid}): PCIe max width 8, expected 16 (golden configuration)",
        f"host node03 GPU 5 ({gpus[5].uuid}): model NVIDIA H100 NVL, expected H100 80GB (golden configuration)",
        f"host node03 GPU 5 ({gpus[5].uuid}): NVLinks up cannot be confirmed (not supported), expected 18",
        f"host node03 GPU 5 ({gpus[5].uuid}): memory GiB 93.6, expected 80.0 (golden configuration)",
    ]
    assert {f.severity for f in findings} == {"fail"}
    assert findings[3].metric == "gpu.pcie_width" and findings[3].gpu_index == 2


def test_golden_driver_prefix_and_model_substring_match():
    assert check_golden(node("n", driver_version="550.54.15"), {"driver_version": "550", "gpu_model": "h100"}) == []
    assert check_golden(node("n", driver_version="550.540.1"), {"driver_version": "550.54"}) != []


def test_golden_expecting_gpus_on_a_host_without_driver_fails():
    data = node("cpu01", init_error=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    finding, = check_golden(data, {"gpu_count_per_node": 8})
    assert finding.severity == "fail" and finding.metric == "gpu.count"
    assert "GPU inventory not measured (NVML unavailable: NVML Shared Library Not Found" in finding.message
    assert check_golden(data, {}) == []  # a CPU profile pins nothing about GPUs


@pytest.mark.parametrize(
    ("golden", "error"),
    [({"gpu_modle": "H100"}, "unknown golden configuration key(s) gpu_modle"),
     ({"pcie_gen": "five"}, "pcie_gen = 'five': expected a whole number"),
     ({"nvlink_count": 17.5}, "nvlink_count = 17.5: expected a whole number")],
)
def test_bad_golden_input_is_one_clear_line(golden, error):
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)")):
        check_golden(node("n"), golden)


def test_outliers_across_five_hosts():
    odd_gpu = [healthy(i) for i in range(8)]
    odd_gpu[3] = healthy(3, pcie_width=8)
    nodes = [
        node("node01"), node("node02"), node("node03", odd_gpu),
        node("node04", driver_version="535.104.05"), node("node05"),
    ]
    findings = find_outliers(nodes)
    messages = [f.message for f in findings]
    assert messages == [
        "host node04: driver 535.104.05 differs from 550.54.15 on 4 of 5 hosts",
        f"host node03 GPU 3 ({odd_gpu[3].uuid}): PCIe width 8 differs from 16 on 39 of 40 GPUs",
    ]
    driver, width = findings
    assert (driver.host, driver.gpu_index, driver.metric, driver.severity) == ("node04", None,
                                                                               "inventory.driver_version", "fail")
    assert (width.host, width.gpu_index, width.metric) == ("node03", 3, "gpu.pcie_width")


def test_host_without_nvml_stands_out_among_gpu_hosts():
    nodes = [node(f"node0{i}") for i in range(1, 5)]
    nodes.append(node("node05", init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    finding, = find_outliers(nodes)
    assert finding.message == "host node05: NVML unavailable differs from available on 4 of 5 hosts"


def test_tie_is_reported_as_a_tie_and_blames_nobody():
    nodes = [node("node01"), node("node02"), node("node03", driver_version="535.104.05"),
             node("node04", driver_version="535.104.05")]
    finding, = find_outliers(nodes)
    assert (finding.host, finding.severity) == ("*", "warn")
    assert finding.message == (
        "driver: no majority across 4 hosts (a tie): 550.54.15 on node01, node02; 535.104.05 on node03, node04"
    )


def test_identical_hosts_and_single_host_have_no_outliers():
    assert find_outliers([node("node01"), node("node02"), node("node03")]) == []
    assert find_outliers([node("node01")]) == []
