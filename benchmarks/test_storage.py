"""Acceptance: storage IOPS, bandwidth, latency, metadata rate and checkpoint throughput per target.

fio runs the I/O workloads where it is installed, a Python engine otherwise (the figures say which);
the probe works in a fresh directory of its own inside each target and removes it, also on failure.
Every rank measures at once, so a shared filesystem is measured under many clients: the aggregate
(sum of throughputs, worst latency, N x the slowest checkpoint) is reported beside each rank's
figure, and the peers check names the slowest node.
"""

import pytest

from clusterbench.judge import Scope
from clusterbench.metrics import METRICS

STORAGE_METRICS = [name for name, spec in METRICS.items() if spec.family == "storage"]


@pytest.mark.storage
@pytest.mark.parametrize("metric", STORAGE_METRICS)
def test_storage(acceptance, metric):
    acceptance.measure(Scope(metric), acceptance.run.storage.attempts(metric), compare_peers=True, aggregate=True)
