"""ThrottleSampler: samples in a background thread while the caller's load runs, never stopping it."""

from __future__ import annotations

import time

import pynvml
from fake_nvml import FakeNvml, healthy

from clusterbench.probes.health import ThrottleSampler

INTERVAL = 0.01


def run_load(seconds=0.15):
    time.sleep(seconds)
    return "done"


def test_samples_under_load_and_union_of_throttling_reasons():
    nvml = FakeNvml([
        healthy(0, clock_events=[0x1, 0x0, 0x4, 0x0], pcie_gen=[1, 5]),
        healthy(1, clock_events=[0x0, 0x40, 0x20, 0x0], temperature=[70, 88, 91, 85]),
    ])
    with ThrottleSampler(nvml, interval_s=INTERVAL) as sampler:
        result = run_load()
    report = sampler.report
    assert result == "done" and report.not_measured is None
    assert report.duration_s >= 0.15
    first, second = report.gpus[0], report.gpus[1]
    assert len(first.samples) >= 5
    assert [s.t_s for s in first.samples] == sorted(s.t_s for s in first.samples)
    assert first.clock_events_seen == ["GpuIdle", "SwPowerCap"] and first.throttling_seen == ["SwPowerCap"]
    assert first.throttled_samples == 1
    assert first.pcie_gen_max == 5  # the link trained up once loaded
    assert second.throttling_seen == ["HwThermalSlowdown", "SwThermalSlowdown"]
    assert max(second.temperature_samples_c) == 91
    assert nvml.inits == nvml.shutdowns == 1


def test_selected_indices_only():
    with ThrottleSampler(FakeNvml([healthy(0), healthy(1), healthy(2)]), indices=[2], interval_s=INTERVAL) as sampler:
        run_load(0.05)
    assert list(sampler.report.gpus) == [2] and sampler.report.gpus[2].samples


def test_without_nvml_the_load_still_runs_and_the_report_says_why():
    nvml = FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED)
    with ThrottleSampler(nvml, interval_s=INTERVAL) as sampler:
        result = run_load(0.02)
    assert result == "done"
    assert sampler.report.gpus == {} and sampler.report.not_measured.startswith("NVML unavailable: Driver Not Loaded")


def test_real_pynvml_sampler_never_raises():
    with ThrottleSampler(interval_s=INTERVAL) as sampler:
        run_load(0.03)
    report = sampler.report
    assert report.not_measured is None or report.not_measured.startswith("NVML unavailable: ")


def test_load_shorter_than_interval_is_not_measured():
    with ThrottleSampler(FakeNvml([healthy(0)]), interval_s=1.0) as sampler:
        pass
    assert sampler.report.not_measured.startswith("no samples: the load lasted 0.00 s, shorter than the 1.0 s")


def test_gpu_lost_during_load_stops_sampling_it_only():
    nvml = FakeNvml([healthy(0), healthy(1)])
    with ThrottleSampler(nvml, interval_s=INTERVAL) as sampler:
        time.sleep(0.05)
        nvml.gpus[1].lost = True
        time.sleep(0.05)
        lost_at = len(sampler.report.gpus[1].samples)
        time.sleep(0.05)
    gpus = sampler.report.gpus
    assert gpus[1].lost.startswith("GPU lost (NVML_ERROR_GPU_IS_LOST")
    assert len(gpus[1].samples) == lost_at and len(gpus[0].samples) > lost_at


def test_unopenable_gpu_is_reported_and_others_sampled():
    nvml = FakeNvml([healthy(0, handle_error=pynvml.NVML_ERROR_NO_PERMISSION), healthy(1)])
    with ThrottleSampler(nvml, interval_s=INTERVAL) as sampler:
        run_load(0.05)
    assert sampler.report.gpus[0].lost == "NVML cannot open the GPU: no permission"
    assert sampler.report.gpus[1].samples


def test_a_field_the_gpu_lacks_is_none_in_every_sample_with_its_reason():
    gpu = healthy(0, errors={"nvmlDeviceGetPowerUsage": pynvml.NVML_ERROR_NO_PERMISSION})
    with ThrottleSampler(FakeNvml([gpu]), interval_s=INTERVAL) as sampler:
        run_load(0.05)
    load = sampler.report.gpus[0]
    assert load.samples and all(s.power_w is None for s in load.samples)
    assert load.unavailable == {"power_w": "no permission"}
    assert load.to_json()["samples"][0]["power_w"] is None
