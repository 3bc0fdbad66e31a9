"""ThrottleSampler: samples in a background thread while the caller's load runs, never stopping it."""

from __future__ import annotations

import re
import time

import pynvml
import pytest

from clusterbench.probes.health import LoadReport, PerDeviceSampling, ThrottleSampler
from fake_nvml import FakeNvml, healthy

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
    # The exact duration is the machine's (a loaded test host may take 10 ms to stop a thread).
    assert re.match(r"no samples: the load lasted 0\.\d\d s, shorter than the 1\.0 s", sampler.report.not_measured)


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


def test_reports_of_one_gpu_per_load_merge_into_one():
    nvml = FakeNvml([healthy(0), healthy(1)])
    reports = []
    for index in (1, 0):
        with ThrottleSampler(nvml, indices=[index], interval_s=INTERVAL) as sampler:
            run_load(0.05)
        reports.append(sampler.report)
    with ThrottleSampler(nvml, indices=[1], interval_s=1.0) as too_short:
        pass
    merged = LoadReport.merge([*reports, too_short.report], INTERVAL)
    assert sorted(merged.gpus) == [0, 1] and merged.sampled and merged.not_measured is None
    assert len(merged.gpus[1].samples) == len(reports[0].gpus[1].samples)  # the empty one added nothing
    assert merged.gpus[1].not_measured is None
    assert merged.duration_s == pytest.approx(sum(r.duration_s for r in [*reports, too_short.report]))


def test_a_merge_with_no_samples_at_all_says_why():
    with ThrottleSampler(FakeNvml([healthy(0)]), interval_s=1.0) as sampler:
        pass
    merged = LoadReport.merge([sampler.report], 1.0)
    assert not merged.sampled and merged.not_measured.startswith("no samples: the load lasted")
    assert merged.gpus[0].not_measured.startswith("no samples")
    assert LoadReport.merge([], 0.1).not_measured == "no GPU was sampled"


def test_per_device_sampling_keeps_the_loads_result_and_its_exception():
    nvml = FakeNvml([healthy(0)])
    sampling = PerDeviceSampling(nvml, interval_s=INTERVAL)
    assert sampling.during("cuda:0", healthy(0).uuid.removeprefix("GPU-"), lambda: run_load(0.03))() == "done"

    def broken():
        time.sleep(0.03)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        sampling.during("cuda:0", healthy(0).uuid, broken)()  # NVML's own "GPU-" form pairs as well
    report = sampling.report
    assert list(report.gpus) == [0] and report.gpus[0].cuda_device == "cuda:0"
    assert len(report.gpus[0].samples) >= 2
