"""InfiniBand/RoCE port error counters from sysfs, before and after a run, and what rose in between.

Reads /sys/class/infiniband/<hca>/ports/<port>/counters/<counter>, the PortCounters attribute that
`perfquery` shows, without rdma-core or root. The counters count since the driver loaded or since
someone cleared them (perfquery -R), so a count alone says little about this run: the figure is the
rise between a snapshot taken before the run and one taken at the test. The sysfs root is a
parameter so tests can point it at a fake tree.

The IBTA PortCounters fields are narrow and saturate at their maximum instead of wrapping (4 bits
for local_link_integrity_errors and excessive_buffer_overrun_errors, 8 for link_downed and
link_error_recovery, 16 for the others): a counter already at its maximum before the run cannot
show a rise, and the delta says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes.infiniband import NO_DEVICES
from clusterbench.registry import declare_probe, metric

PROBE = declare_probe("infiniband_counters", per="node", module=__name__, metrics=[
    metric("ib.port_errors", "count", "lower", "health",
           "rise of one InfiniBand/RoCE port error counter between the start of the run and the passive health test",
           params=("hca", "port", "counter")),
])

# Error counters and their IBTA widths (bits): a value of 2**bits - 1 is saturated.
ERROR_COUNTERS = {
    "symbol_error": 16,
    "link_error_recovery": 8,
    "link_downed": 8,
    "port_rcv_errors": 16,
    "port_rcv_remote_physical_errors": 16,
    "port_xmit_discards": 16,
    "local_link_integrity_errors": 4,
    "excessive_buffer_overrun_errors": 4,
}


@dataclass(frozen=True)
class PortCounters:
    hca: str  # e.g. "mlx5_0"
    port: int
    values: dict[str, int]  # counter -> value, for the ERROR_COUNTERS this port has
    link_layer: str = ""  # "InfiniBand" or "Ethernet" (RoCE)

    @property
    def key(self) -> tuple[str, int]:
        return self.hca, self.port


@dataclass(frozen=True)
class CounterSnapshot:
    ports: dict[tuple[str, int], PortCounters]
    taken_at: float  # time.time() when read


@dataclass(frozen=True)
class CounterDelta:
    hca: str
    port: int
    counter: str
    before: int | None  # None: the port or counter appeared after the "before" snapshot
    after: int
    saturated: bool = False  # at its maximum before or after: the true rise may be larger

    @property
    def rise(self) -> int:
        """The rise; a counter lower than before was cleared in between: at least `after`."""
        if self.before is None or self.after < self.before:
            return self.after
        return self.after - self.before

    @property
    def reset_between(self) -> bool:
        return self.before is not None and self.after < self.before


@dataclass
class CounterWindow:
    """The counters' "before", or why there is none, kept from the start of a run for its end."""

    before: CounterSnapshot | None = None
    reason: str = ""  # NotMeasured's reason when `before` is None


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_port_counters(sysfs_root: Path = Path("/sys")) -> CounterSnapshot:
    """Every port's error counters, now; NotMeasured when there is no InfiniBand/RoCE device or
    none of its ports has a counters directory."""
    ports: dict[tuple[str, int], PortCounters] = {}
    for port_dir in sorted((sysfs_root / "class" / "infiniband").glob("*/ports/*")):
        if not port_dir.name.isdigit() or not (port_dir / "counters").is_dir():
            continue
        values = {name: value for name in ERROR_COUNTERS
                  if (value := _read_int(port_dir / "counters" / name)) is not None}
        try:
            link_layer = (port_dir / "link_layer").read_text().strip()
        except OSError:
            link_layer = ""
        counters = PortCounters(port_dir.parent.parent.name, int(port_dir.name), values, link_layer)
        ports[counters.key] = counters
    if not ports:
        raise NotMeasured(NO_DEVICES if not any((sysfs_root / "class" / "infiniband").glob("*"))
                          else "no InfiniBand/RoCE port has a counters directory in sysfs")
    return CounterSnapshot(ports, time.time())


def counter_deltas(before: CounterSnapshot, after: CounterSnapshot) -> list[CounterDelta]:
    """One delta per counter of every port present after; a port gone since is not a delta (the
    port inventory test reports a missing port)."""
    deltas = []
    for key, port in sorted(after.ports.items()):
        earlier = before.ports.get(key)
        for name, value in port.values.items():
            was = earlier.values.get(name) if earlier is not None else None
            top = 2 ** ERROR_COUNTERS[name] - 1
            deltas.append(CounterDelta(port.hca, port.port, name, was, value, saturated=top in (was, value)))
    return deltas


def start_counter_window(sysfs_root: Path = Path("/sys")) -> CounterWindow:
    """The "before" snapshot, or the reason there is none (never raises)."""
    try:
        return CounterWindow(read_port_counters(sysfs_root))
    except NotMeasured as exc:
        return CounterWindow(reason=str(exc))


def measure_port_errors(window: CounterWindow, location: Location,
                        sysfs_root: Path = Path("/sys")) -> list[Measurement]:
    """"ib.port_errors": each error counter's rise since `window` was started, one figure a port
    and counter, with the values before and after and the window in the details."""
    if window.before is None:
        raise NotMeasured(window.reason)
    after = read_port_counters(sysfs_root)
    deltas = counter_deltas(window.before, after)
    if not deltas:
        raise NotMeasured("no InfiniBand/RoCE port exposes any of the error counters "
                          f"({', '.join(ERROR_COUNTERS)})")
    seconds = after.taken_at - window.before.taken_at
    return [_figure(delta, location, seconds) for delta in deltas]


def _figure(delta: CounterDelta, location: Location, seconds: float) -> Measurement:
    caveat = None
    if delta.reset_between:
        caveat = f"the counter was cleared during the run ({delta.before} before, {delta.after} after): at least"
    elif delta.before is None:
        caveat = "the port appeared during the run: the rise is the whole count"
    elif delta.saturated:
        caveat = f"the counter is saturated at {2 ** ERROR_COUNTERS[delta.counter] - 1}: the true rise may be larger"
    details: dict[str, Any] = {"before": delta.before, "after": delta.after, "window_s": round(seconds, 3)}
    if caveat:
        details["caveat"] = caveat
    return Measurement(
        metric="ib.port_errors",
        value=float(delta.rise),
        unit="count",
        params={"hca": delta.hca, "port": delta.port, "counter": delta.counter},
        location=location,
        details=details,
    )
