"""Acceptance: the GPU-to-GPU copy matrix of each node (nvbandwidth's device-to-device copies).

Each node's first local rank measures every ordered pair of the node's GPUs, one way and both
ways at once. The judge names the slow pairs among the node's own, the GPU they share, and pairs
that go over PCIe where the hardware table gives the GPUs NVLink. With fewer than two GPUs on a
node the test is NOT MEASURED, with the reason.
"""

import pytest

from clusterbench.judge import copy_matrix_checks
from clusterbench.probes import p2p
from clusterbench.reports.copy_matrix import render_copy_matrices


@pytest.mark.memory
def test_p2p_copy_matrix(acceptance):
    tolerance = acceptance.profile.settings.outlier_tolerance
    # The node's own pairs are each other's peers (copy_matrix_checks, as the metric declares).
    measured = acceptance.measure(
        p2p.METRIC, lambda: p2p.measure_node(quick=acceptance.quick, location=acceptance.location("node"))
    )
    acceptance.also_judge(lambda figures: copy_matrix_checks(figures, tolerance))
    if measured:
        acceptance.show(render_copy_matrices(measured))
