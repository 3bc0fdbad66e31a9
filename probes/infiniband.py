"""InfiniBand/RoCE port inventory from sysfs: state, physical state, rate and link layer of every port.

Reads /sys/class/infiniband/<device>/ports/<port>/{state,phys_state,rate,link_layer}, the files
`ibstat` itself reads, so it needs neither rdma-core nor root. The sysfs root is a parameter so tests
can point it at a fake tree. A host without the class directory, or with no ports in it, has no
InfiniBand or RoCE devices (or no driver loaded): that is NOT MEASURED, not zero ports, so that a
profile expecting ports fails with the reason instead of a bare 0.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.registry import declare_probe, metric

PROBE = declare_probe("infiniband", per="node", module=__name__, metrics=[
    metric("ib.active_ports", "count", "higher", "network", "InfiniBand/RoCE ports ACTIVE"),
    metric("ib.min_active_rate_gbps", "Gb/s", "higher", "network",
           "rate of the slowest ACTIVE InfiniBand/RoCE port, in gigabits per second as the port reports it"),
])

NO_DEVICES = "no InfiniBand/RoCE devices in /sys/class/infiniband"
_RATE = re.compile(r"^\s*([0-9.]+)\s*Gb/sec")


@dataclass(frozen=True)
class IbPort:
    device: str  # e.g. "mlx5_0"
    port: int
    state: str  # "ACTIVE", "DOWN", "INIT", ... ("" when the file is missing)
    phys_state: str  # "LinkUp", "Disabled", "Polling", ...
    rate_gbps: float | None  # 400.0 from "400 Gb/sec (4X NDR)"; None when absent or unparsable
    rate: str  # the rate file as the kernel wrote it
    link_layer: str  # "InfiniBand" or "Ethernet" (RoCE)

    @property
    def active(self) -> bool:
        return self.state == "ACTIVE"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _named_state(text: str) -> str:
    """'4: ACTIVE' -> 'ACTIVE'; the kernel prefixes the numeric code."""
    return text.split(":", 1)[-1].strip()


def parse_rate_gbps(text: str) -> float | None:
    match = _RATE.match(text)
    return float(match.group(1)) if match else None


def read_ib_ports(sysfs_root: Path = Path("/sys")) -> list[IbPort]:
    """Every port of every InfiniBand/RoCE device, sorted by device and port; NotMeasured when none."""
    class_dir = sysfs_root / "class" / "infiniband"
    ports = []
    for port_dir in sorted(class_dir.glob("*/ports/*")):
        if not port_dir.name.isdigit():
            continue
        rate = _read(port_dir / "rate")
        ports.append(IbPort(
            device=port_dir.parent.parent.name,
            port=int(port_dir.name),
            state=_named_state(_read(port_dir / "state")),
            phys_state=_named_state(_read(port_dir / "phys_state")),
            rate_gbps=parse_rate_gbps(rate),
            rate=rate,
            link_layer=_read(port_dir / "link_layer"),
        ))
    if not ports:
        raise NotMeasured(NO_DEVICES)
    return ports


def measure_ib_ports(location: Location, sysfs_root: Path = Path("/sys")) -> Measurement:
    """"ib.active_ports": the count of ACTIVE ports, with every port's record in the details."""
    ports = read_ib_ports(sysfs_root)
    active = [port for port in ports if port.active]
    return Measurement(
        metric="ib.active_ports",
        value=float(len(active)),
        unit="count",
        params={},
        location=location,
        details={
            "ports": [asdict(port) for port in ports],
            "active_rates_gbps": [port.rate_gbps for port in active],
        },
    )


def measure_ib_min_rate(location: Location, sysfs_root: Path = Path("/sys")) -> Measurement:
    """"ib.min_active_rate_gbps": the slowest ACTIVE port's rate, so one port trained down (200
    instead of 400 Gb/s) fails an expectation on the rate even when the count of ports is right."""
    ports = read_ib_ports(sysfs_root)
    rated = [(port, port.rate_gbps) for port in ports if port.active and port.rate_gbps is not None]
    if not rated:
        raise NotMeasured(f"no ACTIVE InfiniBand/RoCE port with a readable rate among {len(ports)} ports")
    slowest, slowest_rate = min(rated, key=lambda rated_port: rated_port[1])
    return Measurement(
        metric="ib.min_active_rate_gbps",
        value=float(slowest_rate),
        unit="Gb/s",
        params={},
        location=location,
        details={"slowest_port": f"{slowest.device}/{slowest.port}",
                 "rates_gbps": {f"{p.device}/{p.port}": rate for p, rate in rated}},
    )


# Each declared metric's probe, so that the suite parametrizes over PROBE's metrics alone.
MEASURES = {"ib.active_ports": measure_ib_ports, "ib.min_active_rate_gbps": measure_ib_min_rate}
