"""GPU health on a (fake) real GPU node: CUDA devices paired with NVML GPUs by UUID, each sampled
during its own load, idle and hidden GPUs never judged by idle readings, MIG slices not taken for
whole GPUs, and each rank reading only the GPUs it drives.

The node is tests/fake_gpu_node.py: NVML sees all GPUs; torch.cuda a visible subset, in its own order.
"""

from __future__ import annotations

import time

import pytest

from clusterbench.health_checks import assess_node, driven_gpus
from clusterbench.judge import health_findings
from clusterbench.model import NotMeasured
from clusterbench.probes.devices import local_devices
from clusterbench.probes.health import (
    GpuInventory,
    NodeInventory,
    PerDeviceSampling,
    ThrottleSampler,
    gpu_measurements,
    read_gpu_inventory,
    read_host_inventory,
    read_node_inventory,
)
from fake_gpu_node import FakeGpuNode, node_uuid
from fake_nvml import NOT_SUPPORTED, FakeNvml, healthy

HOST = "gpu-node-07"
INTERVAL = 0.01
LOAD_S = 0.08


def busy_power_node(gpus: int = 8, visible=None) -> FakeGpuNode:
    node = FakeGpuNode(gpus, visible)
    for gpu in node.nvml.gpus:
        gpu.power_mw = 690_000  # a healthy H100 under dense GEMM, near its 700 W limit
    return node


def run_loads_per_device(node: FakeGpuNode, devices) -> PerDeviceSampling:
    """What benchmarks/test_compute.py does: each device's GEMM, one after another, each sampled alone."""
    sampling = PerDeviceSampling(node.nvml, interval_s=INTERVAL)
    for device in devices:
        sampling.during(device.torch_device, device.uuid, lambda d=device: _busy(node, d.index))()
    return sampling


def _busy(node: FakeGpuNode, cuda_index: int) -> None:
    node.run_load(cuda_index, LOAD_S)


def node_inventory(node: FakeGpuNode) -> NodeInventory:
    return read_node_inventory(node.nvml)


def measurements_by(figures, metric):
    return {m.location.device: m for m in figures.measurements if m.metric == metric}


def test_torch_uuids_pair_with_nvml_uuids_whatever_the_order(monkeypatch):
    node = FakeGpuNode(8, visible=(5, 2))  # CUDA_VISIBLE_DEVICES=5,2: cuda:0 is NVML GPU 5
    node.install(monkeypatch)
    devices = local_devices()
    assert [(d.torch_device, d.uuid) for d in devices] == [
        ("cuda:0", node_uuid(5).removeprefix("GPU-")), ("cuda:1", node_uuid(2).removeprefix("GPU-")),
    ]
    mine = read_gpu_inventory(node.nvml, devices=driven_gpus(devices))
    assert [(gpu.index, gpu.cuda_device, gpu.uuid) for gpu in mine.gpus] == [
        (2, "cuda:1", node_uuid(2)), (5, "cuda:0", node_uuid(5)),
    ]
    assert mine.unpaired == {}
    # Nothing but UUIDs (and MIG mode) was read from the six GPUs nobody here drives.
    assert {function for index, function in node.nvml.calls if index not in (2, 5)} <= {
        "nvmlDeviceGetUUID", "nvmlDeviceGetMigMode"}


def test_a_visible_subset_with_idle_gpus_gives_no_false_fail(monkeypatch):
    node = busy_power_node(8, visible=(2, 5))
    node.install(monkeypatch)
    devices = local_devices()
    load = run_loads_per_device(node, devices).report
    health = assess_node(node_inventory(node), driven_gpus(devices), HOST, 0, load)
    assert health.findings == []
    gens = measurements_by(health.figures, "gpu.pcie_gen")
    assert sorted(gens) == ["gpu2", "gpu5"]  # the six idle GPUs are not judged by their Gen1 idle link
    assert all(m.value == 5.0 and m.details["under_load"] for m in gens.values())
    assert {m.details["cuda_device"] for m in gens.values()} == {"cuda:0", "cuda:1"}
    (count,) = measurements_by(health.figures, "gpu.count").values()
    assert count.value == 8.0  # the node inventory still counts every GPU
    assert len(health.inventory.gpu.gpus) == 8


def test_idle_gpus_stay_unjudged_even_where_the_driver_cannot_say_idle(monkeypatch):
    """Two guards keep an idle GPU's Gen1 link from failing it: pairing (only driven GPUs are
    sampled) and the GpuIdle reason (idle samples judge nothing). Where the driver gives no clock-event
    reasons only the first is left; sampling every GPU NVML sees, as the suite once did, then fails
    the six idle GPUs with the advice to reseat cards that are fine."""
    node = busy_power_node(8, visible=(2, 5))
    for gpu in node.nvml.gpus:
        gpu.errors.update({"nvmlDeviceGetCurrentClocksEventReasons": NOT_SUPPORTED,
                           "nvmlDeviceGetCurrentClocksThrottleReasons": NOT_SUPPORTED})
    with ThrottleSampler(node.nvml, interval_s=INTERVAL) as sampler:  # every GPU NVML sees
        for cuda_index in range(2):
            _busy(node, cuda_index)
    findings = health_findings(read_gpu_inventory(node.nvml), HOST, sampler.report)
    assert sorted(f.gpu_index for f in findings if f.metric == "gpu.pcie_gen") == [0, 1, 3, 4, 6, 7]

    node.install(monkeypatch)
    devices = local_devices()
    load = run_loads_per_device(node, devices).report
    assert assess_node(node_inventory(node), driven_gpus(devices), HOST, 0, load).findings == []


def test_under_load_figures_come_from_each_devices_own_load(monkeypatch):
    node = busy_power_node(8)
    node.install(monkeypatch)
    devices = local_devices()
    load = run_loads_per_device(node, devices).report
    figures = gpu_measurements(read_gpu_inventory(node.nvml, devices=driven_gpus(devices)), HOST, 0, load)
    power = measurements_by(figures, "gpu.power_w")
    assert len(power) == 8
    for m in power.values():
        assert m.value == 690.0 and m.details["under_load"] and set(m.samples) == {690.0}
    throttle = measurements_by(figures, "gpu.throttle_reasons")
    assert all(m.details["sm_clock_median_mhz"] == 1980 for m in throttle.values())


def test_one_sampler_around_sequential_loads_reports_idle_power():
    """The defect of item 2, on the same node: one sampler around eight loads run one after another
    sees each GPU busy about 1/8 of the time, so the median it calls "under load" is the idle draw."""
    node = busy_power_node(8)
    with ThrottleSampler(node.nvml, interval_s=INTERVAL) as sampler:
        for cuda_index in range(8):
            _busy(node, cuda_index)
    raw = [s.power_w for s in sampler.report.gpus[0].samples]
    assert sorted(raw)[len(raw) // 2] == 70.0  # what the median of every sample was
    # Busy samples only (GpuIdle excluded): even this sampler's figure is the loaded one now.
    assert set(sampler.report.gpus[0].power_samples_w) == {690.0}


def test_gpu_idle_samples_judge_nothing():
    nvml = FakeNvml([healthy(0, pcie_gen=[1, 1, 5], clock_events=[0x1, 0x1, 0x0], temperature=[30, 30, 60])])
    with ThrottleSampler(nvml, interval_s=INTERVAL) as sampler:
        deadline = time.monotonic() + 10
        while len(sampler.report.gpus[0].samples) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    load = sampler.report.gpus[0]
    assert load.samples[0].busy is False and len(load.busy_samples) == len(load.samples) - 2
    assert load.pcie_gen_samples and set(load.pcie_gen_samples) == {5.0}
    assert min(load.temperature_samples_c) == 60.0


def test_an_all_idle_window_is_not_under_load():
    """A GPU idle through its whole window (say its load never reached the device) gives no
    under-load figure: its Gen1 link is NOT MEASURED, not a FAIL."""
    node = FakeGpuNode(1)
    with ThrottleSampler(node.nvml, interval_s=INTERVAL, devices={"cuda:0": node.cuda_uuids[0]}) as sampler:
        time.sleep(0.05)
    inventory = read_gpu_inventory(node.nvml)
    assert health_findings(inventory, HOST, sampler.report) == []
    figures = gpu_measurements(inventory, HOST, 0, sampler.report)
    reasons = {u.metric: u.reason for u in figures.not_measured}
    assert "gpu.pcie_gen" in reasons and "read at idle (Gen1 of max Gen5)" in reasons["gpu.pcie_gen"]


def test_a_mig_slice_is_not_judged_as_its_whole_gpu(monkeypatch):
    mig_uuid = "MIG-9b1e2f3a-0000-5555-aaaa-123456789abc"
    node = FakeGpuNode(
        8, visible=(3,), cuda_names=["NVIDIA H100 80GB HBM3 MIG 3g.40gb"], cuda_uuids=[mig_uuid.removeprefix("MIG-")],
    )
    node.nvml.gpus[3].mig_mode = 1
    node.nvml.gpus[3].mig_uuids = [mig_uuid, "MIG-00000000-1111-2222-3333-444444444444"]
    node.install(monkeypatch)
    devices = local_devices()
    mine = read_gpu_inventory(node.nvml, devices=driven_gpus(devices))
    assert mine.gpus == [] and "a MIG slice of NVML GPU 3" in mine.unpaired["cuda:0"]
    figures = gpu_measurements(mine, HOST, 0, None, include_count=False)
    assert figures.measurements == []
    assert {(u.metric, u.location.device) for u in figures.not_measured} == {
        (metric, "cuda:0") for metric in ("gpu.ecc_uncorrected", "gpu.ecc_corrected", "gpu.retired_pages",
                                          "gpu.pcie_gen", "gpu.pcie_width", "gpu.nvlink_up", "gpu.temperature_c",
                                          "gpu.power_w", "gpu.throttle_reasons")}
    with ThrottleSampler(node.nvml, interval_s=INTERVAL, devices=driven_gpus(devices)) as sampler:
        time.sleep(0.03)
    assert sampler.report.gpus == {} and "a MIG slice of NVML GPU 3" in sampler.report.not_measured
    assert read_gpu_inventory(node.nvml).gpus[3].mig_uuids == node.nvml.gpus[3].mig_uuids


def test_torch_without_device_uuids_is_unpaired_with_the_reason(monkeypatch):
    node = FakeGpuNode(2, cuda_uuids=[None, None])
    node.install(monkeypatch)
    mine = read_gpu_inventory(node.nvml, devices=driven_gpus(local_devices()))
    assert mine.gpus == [] and set(mine.unpaired) == {"cuda:0", "cuda:1"}
    assert "torch gives no UUID" in mine.unpaired["cuda:0"]


def test_a_uuid_nvml_does_not_know_is_unpaired_naming_what_nvml_sees():
    node = FakeGpuNode(2)
    mine = read_gpu_inventory(node.nvml, devices={"cuda:0": "deadbeef-0000-0000-0000-000000000000"})
    assert mine.gpus == [] and "no NVML GPU has UUID deadbeef" in mine.unpaired["cuda:0"]
    assert node_uuid(1) in mine.unpaired["cuda:0"]


def test_a_launcher_rank_reads_and_samples_only_its_own_gpu(monkeypatch):
    """torchrun --nproc-per-node=8: local rank 3 drives cuda:3, which is NVML GPU 3's UUID. It does
    not read the node inventory (local rank 0 does) and never samples the other seven GPUs."""
    node = busy_power_node(8)
    node.install(monkeypatch)
    rank_device = [local_devices()[3]]
    load = run_loads_per_device(node, rank_device).report
    assert list(load.gpus) == [3]
    node.nvml.calls.clear()
    health = assess_node(None, driven_gpus(rank_device), HOST, 3, load)
    assert health.inventory is None and health.findings == []
    assert {m.location.device for m in health.figures.measurements} == {"gpu3"}
    assert not any(m.metric == "gpu.count" for m in health.figures.measurements)  # the node's, from rank 0
    assert {function for index, function in node.nvml.calls if index != 3} <= {
        "nvmlDeviceGetUUID", "nvmlDeviceGetMigMode"}
    assert measurements_by(health.figures, "gpu.pcie_gen")["gpu3"].details["under_load"]


def test_the_node_reporter_names_a_gpu_nvml_lost_even_though_no_process_drives_it():
    nvml = FakeNvml([healthy(0), healthy(1, lost=True)])
    inventory = NodeInventory(read_host_inventory(), read_gpu_inventory(nvml))
    health = assess_node(inventory, {"cuda:0": healthy(0).uuid.removeprefix("GPU-")}, HOST, 0, None)
    (lost,) = health.findings
    assert (lost["gpu_index"], lost["metric"], lost["severity"]) == (1, "gpu.count", "fail")
    (count,) = measurements_by(health.figures, "gpu.count").values()
    assert count.value == 1.0


def test_without_nvml_each_driven_device_is_not_measured_with_the_reason():
    inventory = NodeInventory(read_host_inventory(), None, "NVML unavailable: Driver Not Loaded")
    health = assess_node(inventory, {"cuda:0": "x", "cuda:1": "y"}, HOST, 0, None)
    devices = {(u.metric, u.location.device) for u in health.figures.not_measured}
    assert ("gpu.count", "node") in devices and ("gpu.pcie_gen", "cuda:1") in devices
    assert {u.reason for u in health.figures.not_measured} == {"NVML unavailable: Driver Not Loaded"}


def test_a_cpu_rank_reports_per_gpu_metrics_once_for_the_node():
    inventory = NodeInventory(read_host_inventory(), GpuInventory("550.54.15", "12.4", []))
    health = assess_node(inventory, {}, HOST, 0, None)
    assert {u.location.device for u in health.figures.not_measured} == {"node"}
    assert "drives no CUDA device" in health.figures.not_measured[0].reason
    assert assess_node(None, {}, HOST, 1, None).figures.not_measured == []  # other local ranks: nothing


def test_sampler_takes_indices_or_devices_not_both():
    with pytest.raises(ValueError, match="not both"):
        ThrottleSampler(FakeNvml([]), indices=[0], devices={"cuda:0": "x"})


def test_read_gpu_inventory_without_nvml_is_not_measured_for_a_device_subset():
    import pynvml

    with pytest.raises(NotMeasured, match="NVML unavailable"):
        read_gpu_inventory(FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED), devices={"cuda:0": "x"})


def test_a_gpu_lost_after_its_uuid_was_read_still_pairs_and_is_reported_lost():
    import pynvml

    node = FakeGpuNode(2)
    node.nvml.gpus[1].errors["nvmlDeviceGetMigMode"] = pynvml.NVML_ERROR_GPU_IS_LOST
    mine = read_gpu_inventory(node.nvml, devices={"cuda:1": node.cuda_uuids[1]})
    (gpu,) = mine.gpus
    assert gpu.index == 1 and gpu.lost.startswith("GPU lost (NVML_ERROR_GPU_IS_LOST while reading mig)")
    (finding,) = health_findings(mine, HOST)
    assert (finding.metric, finding.severity) == ("gpu.count", "fail")
