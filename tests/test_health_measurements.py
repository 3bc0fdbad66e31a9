"""gpu.* Measurements from the inventory: one location per GPU, and a reason for every missing figure."""

from __future__ import annotations

import json

import pynvml
import pytest

from clusterbench.model import Location, NotMeasured
from clusterbench.probes.health import (
    GpuLoad,
    HealthMeasurements,
    LoadReport,
    LoadSample,
    gpu_measurements,
    read_gpu_inventory,
)
from clusterbench.probes.health.measurements import ALL_METRICS, PER_GPU_METRICS
from fake_nvml import FakeNvml, healthy

HOST = "node01"


def measure(*gpus, load=None, rank=0):
    return gpu_measurements(read_gpu_inventory(FakeNvml(list(gpus))), HOST, rank, load)


def by_key(result):
    return {(m.metric, m.location.device): m for m in result.measurements}


def missing(result):
    return {(u.metric, u.location.device): u.reason for u in result.not_measured}


def loaded(clock_events=(0x4, 0x4 | 0x40, 0x0), pcie_gen=5):
    samples = [
        LoadSample(i * 0.1, mask, 1900, 650.0 + 10 * i, 70 + i, pcie_gen) for i, mask in enumerate(clock_events)
    ]
    return LoadReport({0: GpuLoad(0, samples)}, interval_s=0.1, duration_s=0.3)


def test_idle_healthy_node_measures_every_metric_but_load_only_ones():
    result = measure(healthy(0), healthy(1), rank=8)
    figures = by_key(result)
    count = figures[("gpu.count", "node")]
    assert (count.value, count.unit, count.location) == (2.0, "count", Location(HOST, 8, "node"))
    for device in ("gpu0", "gpu1"):
        for metric in ("gpu.ecc_uncorrected", "gpu.ecc_corrected", "gpu.retired_pages", "gpu.pcie_gen",
                       "gpu.pcie_width", "gpu.nvlink_up", "gpu.temperature_c", "gpu.power_w"):
            assert (metric, device) in figures, (metric, device)
    width = figures[("gpu.pcie_width", "gpu1")]
    assert (width.value, width.unit, width.details["max"]) == (16.0, "lanes", 16)
    assert width.details["uuid"].startswith("GPU-00000001")
    assert figures[("gpu.nvlink_up", "gpu0")].value == 18.0
    assert figures[("gpu.power_w", "gpu0")].details == {
        "uuid": healthy(0).uuid, "name": "NVIDIA H100 80GB HBM3", "under_load": False, "limit_w": 700.0,
        "default_limit_w": 700.0,
    }
    assert missing(result) == {
        ("gpu.throttle_reasons", "gpu0"): "not sampled under load (run a load inside ThrottleSampler)",
        ("gpu.throttle_reasons", "gpu1"): "not sampled under load (run a load inside ThrottleSampler)",
    }


def test_under_load_figures_come_from_the_samples():
    figures = by_key(measure(healthy(0, pcie_gen=1), load=loaded()))
    throttle = figures[("gpu.throttle_reasons", "gpu0")]
    assert throttle.value == 2.0 and throttle.samples == [1.0, 2.0, 0.0]
    assert throttle.details["throttling"] == ["HwThermalSlowdown", "SwPowerCap"]
    assert throttle.details["throttled_samples"] == 2
    assert figures[("gpu.temperature_c", "gpu0")].value == 72.0
    assert figures[("gpu.power_w", "gpu0")].value == 660.0  # median of 650, 660, 670
    gen = figures[("gpu.pcie_gen", "gpu0")]
    assert (gen.value, gen.details["under_load"], gen.samples) == (5.0, True, [5.0, 5.0, 5.0])


def test_idle_pcie_gen_below_max_is_not_measured_rather_than_misjudged():
    result = measure(healthy(0, pcie_gen=1))
    assert ("gpu.pcie_gen", "gpu0") not in by_key(result)
    assert missing(result)[("gpu.pcie_gen", "gpu0")].startswith("read at idle (Gen1 of max Gen5)")


def test_missing_fields_are_not_measured_with_nvml_reason():
    gpu = healthy(0, nvlinks=None, errors={
        "nvmlDeviceGetTotalEccErrors": pynvml.NVML_ERROR_NO_PERMISSION,
        "nvmlDeviceGetRemappedRows": pynvml.NVML_ERROR_NOT_SUPPORTED,
    })
    reasons = missing(measure(gpu))
    assert reasons[("gpu.ecc_uncorrected", "gpu0")] == "ecc.volatile_uncorrected: no permission"
    assert reasons[("gpu.nvlink_up", "gpu0")] == "nvlink: not supported"
    assert "memory_repair.remapped_rows: not supported" in reasons[("gpu.retired_pages", "gpu0")]


def test_ecc_disabled_says_so():
    gpu = healthy(0, ecc_mode=(0, 0), errors={"nvmlDeviceGetTotalEccErrors": pynvml.NVML_ERROR_NOT_SUPPORTED})
    assert missing(measure(gpu))[("gpu.ecc_corrected", "gpu0")] == "ECC is disabled"


def test_lost_gpu_lowers_count_and_every_figure_of_it_is_not_measured():
    result = measure(healthy(0), healthy(1, lost=True))
    count = by_key(result)[("gpu.count", "node")]
    assert count.value == 1.0 and count.details["enumerated"] == 2 and 1 in count.details["unusable"]
    reasons = missing(result)
    assert all(reasons[(metric, "gpu1")].startswith("GPU lost") for metric in PER_GPU_METRICS)


def test_throttle_reasons_missing_from_driver_says_so():
    samples = [LoadSample(0.1, None, 1900, 600.0, 70, 5)]
    load = LoadReport({0: GpuLoad(0, samples, unavailable={"clock_event_mask": "not available in this driver"})}, 0.1)
    reason = missing(measure(healthy(0), load=load))[("gpu.throttle_reasons", "gpu0")]
    assert reason == "clock-event reasons: not available in this driver"


def test_sampler_without_nvml_passes_its_reason_on():
    load = LoadReport({}, 0.1, not_measured="NVML unavailable: Driver Not Loaded")
    reasons = missing(measure(healthy(0), load=load))
    assert reasons[("gpu.throttle_reasons", "gpu0")] == "NVML unavailable: Driver Not Loaded"


def test_nvml_unavailable_marks_every_metric_on_the_node():
    result = HealthMeasurements.unavailable("NVML unavailable: no driver", HOST, rank=0)
    assert result.measurements == []
    assert {u.metric for u in result.not_measured} == set(ALL_METRICS)
    assert {(u.location.device, u.reason) for u in result.not_measured} == {("node", "NVML unavailable: no driver")}


def test_attempts_fit_the_acceptance_handle():
    result = measure(healthy(0), healthy(1, nvlinks=None))
    attempts = result.attempts("gpu.nvlink_up")
    assert [location.device for location, _ in attempts] == ["gpu0", "gpu1"]
    assert attempts[0][1]().value == 18.0
    with pytest.raises(NotMeasured, match="nvlink: not supported"):
        attempts[1][1]()


def test_to_json_round_trips_through_json():
    data = json.loads(json.dumps(measure(healthy(0), load=loaded()).to_json()))
    assert data["not_measured"] == []
    assert {m["metric"] for m in data["measurements"]} == set(ALL_METRICS)
