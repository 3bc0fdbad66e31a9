"""Acceptance: memory bandwidth of every local device (device copy, host-to-device, device-to-host).

On a machine without an accelerator the copy test measures host memory, and the host-device tests
report NOT MEASURED with the reason instead of passing.
"""

from functools import partial

import pytest

from clusterbench.judge import Scope
from clusterbench.probes.memory import measure_copy, measure_d2h, measure_h2d

MEMORY_PROBES = {
    "memory.copy_gbps": measure_copy,
    "memory.h2d_gbps": measure_h2d,
    "memory.d2h_gbps": measure_d2h,
}


@pytest.mark.memory
@pytest.mark.parametrize("metric", list(MEMORY_PROBES))
def test_memory_bandwidth(acceptance, metric):
    probe = MEMORY_PROBES[metric]
    attempts = []
    for device in acceptance.devices:
        location = acceptance.location(device.torch_device)
        attempts.append((location, partial(probe, device, quick=acceptance.quick, location=location)))
    acceptance.measure(Scope(metric), attempts, compare_peers=True)
