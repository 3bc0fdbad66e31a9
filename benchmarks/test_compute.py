"""Acceptance: dense matmul throughput of every local device, per dtype.

Judged against the profile's `gemm.tflops` expectations and against the device's peers on the node,
so one slow GPU among eight is named even where the profile states no figure. NVML samples clocks,
power, temperature, PCIe generation and clock-event (throttle) reasons of each GPU while its own
GEMM loads it (the GPUs of one process run one after another; the others are idle meanwhile and say
nothing about load); the health tests judge those samples.
"""

import pytest

from clusterbench import progress
from clusterbench.probes.devices import GEMM_DTYPES
from clusterbench.probes.gemm import measure_gemm
from clusterbench.probes.health import PerDeviceSampling


@pytest.mark.compute
@pytest.mark.parametrize("dtype", GEMM_DTYPES)
def test_gemm_throughput(acceptance, dtype):
    sampling = PerDeviceSampling()

    def gemm(device):
        def run():
            return measure_gemm(device, dtype, quick=acceptance.quick,
                                location=acceptance.location(device.torch_device),
                                on_step=progress.callback_for(f"gemm {dtype} {device.torch_device}"))

        return sampling.during(device.torch_device, device.uuid, run)() if device.kind == "cuda" else run()

    measured = acceptance.measure("gemm.tflops", gemm, params={"dtype": dtype})
    if measured and sampling.report.sampled:
        acceptance.health.load_reports[dtype] = sampling.report
