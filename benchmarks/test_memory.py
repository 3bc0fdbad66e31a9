"""Acceptance: memory bandwidth of every local device (device copy, host-to-device, device-to-host).

On a machine without an accelerator the copy test measures host memory, and the host-device tests
report NOT MEASURED with the reason instead of passing.
"""

import pytest

from clusterbench.probes import memory


@pytest.mark.memory
@pytest.mark.parametrize("metric", memory.PROBE.metric_names)
def test_memory_bandwidth(acceptance, metric):
    probe = memory.MEASURES[metric]
    acceptance.measure(
        metric, lambda device: probe(device, quick=acceptance.quick, location=acceptance.location(device.torch_device))
    )
