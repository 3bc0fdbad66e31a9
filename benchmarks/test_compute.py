"""Acceptance: dense matmul throughput of every local device, per dtype.

Judged against the profile's `gemm.tflops` expectations and against the device's peers on the node,
so one slow GPU among eight is named even where the profile states no figure. NVML samples clocks,
power, temperature and clock-event (throttle) reasons while the GEMM loads the GPUs; the health
tests judge those samples.
"""

from functools import partial

import pytest

from clusterbench.judge import Scope
from clusterbench.probes.devices import GEMM_DTYPES
from clusterbench.probes.gemm import measure_gemm
from clusterbench.probes.health import ThrottleSampler


@pytest.mark.compute
@pytest.mark.parametrize("dtype", GEMM_DTYPES)
def test_gemm_throughput(acceptance, dtype):
    attempts = []
    for device in acceptance.devices:
        location = acceptance.location(device.torch_device)
        attempts.append((location, partial(measure_gemm, device, dtype, quick=acceptance.quick, location=location)))
    with ThrottleSampler() as sampler:
        measured = acceptance.measure(Scope("gemm.tflops", {"dtype": dtype}), attempts, compare_peers=True)
    if measured and not sampler.report.not_measured:
        acceptance.run.gpu_load_reports[dtype] = sampler.report
