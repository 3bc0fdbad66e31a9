"""Acceptance: storage IOPS, bandwidth, latency, metadata rate and checkpoint throughput per target.

fio runs the I/O workloads where it is installed, a Python engine otherwise (the figures say which);
the probe works in a fresh directory of its own inside each target and removes it, also on failure.
Every rank measures at once, so a shared filesystem is measured under many clients: the aggregate
(sum of throughputs, worst latency, N x the slowest checkpoint) is reported beside each rank's
figure, and the peers check names the slowest node.
"""

import pytest

from clusterbench.probes import storage


@pytest.mark.storage
@pytest.mark.parametrize("metric", storage.PROBE.metric_names)
def test_storage(acceptance, metric):
    # One attempt per target, each with its own location and reason: the lower level of measure().
    acceptance.measure_attempts(metric, acceptance.runners.storage.attempts(metric), compare_peers=True)
