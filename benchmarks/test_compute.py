"""Acceptance: dense matmul throughput of every local device, per dtype.

Judged against the profile's `gemm.tflops` expectations and against the device's peers on the node,
so one slow GPU among eight is named even where the profile states no figure. NVML samples clocks,
power, temperature, PCIe generation and clock-event (throttle) reasons of each GPU while its own
GEMM loads it (the GPUs of one process run one after another; the others are idle meanwhile and say
nothing about load); the health tests judge those samples.
"""

from functools import partial

import pytest

from clusterbench import progress
from clusterbench.judge import Scope
from clusterbench.probes.devices import GEMM_DTYPES
from clusterbench.probes.gemm import measure_gemm
from clusterbench.probes.health import PerDeviceSampling


@pytest.mark.compute
@pytest.mark.parametrize("dtype", GEMM_DTYPES)
def test_gemm_throughput(acceptance, dtype):
    sampling = PerDeviceSampling()
    attempts = []
    for device in acceptance.devices:
        location = acceptance.location(device.torch_device)
        gemm = partial(measure_gemm, device, dtype, quick=acceptance.quick, location=location,
                       on_step=progress.callback_for(f"gemm {dtype} {device.torch_device}"))
        if device.kind == "cuda":
            gemm = sampling.during(device.torch_device, device.uuid, gemm)
        attempts.append((location, gemm))
    measured = acceptance.measure(Scope("gemm.tflops", {"dtype": dtype}), attempts, compare_peers=True)
    report = sampling.report
    if measured and report.sampled:
        acceptance.run.gpu_load_reports[dtype] = report
