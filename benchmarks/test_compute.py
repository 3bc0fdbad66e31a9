"""Acceptance: dense matmul throughput of every local device, per dtype.

Judged against the profile's `gemm.tflops` expectations and against the device's peers on the node,
so one slow GPU among eight is named even where the profile states no figure.
"""

from functools import partial

import pytest

from clusterbench.judge import Scope
from clusterbench.probes.devices import GEMM_DTYPES
from clusterbench.probes.gemm import measure_gemm


@pytest.mark.compute
@pytest.mark.parametrize("dtype", GEMM_DTYPES)
def test_gemm_throughput(acceptance, dtype):
    attempts = []
    for device in acceptance.devices:
        location = acceptance.location(device.torch_device)
        attempts.append((location, partial(measure_gemm, device, dtype, quick=acceptance.quick, location=location)))
    acceptance.measure(Scope("gemm.tflops", {"dtype": dtype}), attempts, compare_peers=True)
