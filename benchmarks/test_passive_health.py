"""Acceptance: passive health, what each node's own logs and counters say about the run.

- gpu.xid_errors: the NVIDIA driver's Xid errors in the kernel log since boot, and the NVML Xid
  events of the run (which NVML reports only to a watch registered before they happen);
- ib.port_errors: how much each InfiniBand/RoCE port error counter rose during the run.

Both need a "before". It is taken when pytest imports this file, that is at collection, before any
test of the run measures: the counters' values and the start of the NVML watch, on every rank (a
few sysfs reads and an nvmlInit; the node's first local rank is the one that measures). The
"after" is read when these tests run, and they run after every other test of the run (the
`after_probes` marker: the plugin moves them to the end), so the window spans every load of the
run, DCGM's diagnostic included. The kernel log's Xids since boot need no window. The probes know
nothing of this: they take a window and measure against it.
"""

import atexit

import pytest

from clusterbench.judge.passive_health import ib_counter_checks, xid_checks
from clusterbench.probes.health.xid import measure_xid_errors, start_xid_window
from clusterbench.probes.infiniband_counters import measure_port_errors, start_counter_window

XID_WINDOW = start_xid_window()
atexit.register(XID_WINDOW.watch.close)  # also where test_xid_errors is deselected or not this rank's
COUNTER_WINDOW = start_counter_window()

pytestmark = pytest.mark.after_probes


@pytest.mark.health
def test_xid_errors(acceptance):
    """No Xid since boot whose remedy is a GPU reset or more (FAIL); application Xids 13/31/43 WARN."""
    try:
        acceptance.also_judge(xid_checks)
        acceptance.measure("gpu.xid_errors", lambda: measure_xid_errors(XID_WINDOW, acceptance.location("node")),
                           per="node", compare_peers=False)
    finally:
        XID_WINDOW.watch.close()


@pytest.mark.health
def test_infiniband_port_errors(acceptance):
    """No InfiniBand/RoCE link error counter rose during the run (link down, retrain, corrupt packets)."""
    acceptance.also_judge(ib_counter_checks)
    acceptance.measure("ib.port_errors", lambda: measure_port_errors(COUNTER_WINDOW, acceptance.location("node")),
                       per="node", compare_peers=False)
