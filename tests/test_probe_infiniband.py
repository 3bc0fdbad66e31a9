"""InfiniBand/RoCE ports read from a fake sysfs tree."""

from __future__ import annotations

import pytest

from clusterbench.model import Location, NotMeasured
from clusterbench.probes.infiniband import IbPort, measure_ib_min_rate, measure_ib_ports, parse_rate_gbps, read_ib_ports

NODE = Location("node01", 0, "node")


def add_port(root, device, port, state, phys_state, rate, link_layer="InfiniBand"):
    port_dir = root / "class" / "infiniband" / device / "ports" / str(port)
    port_dir.mkdir(parents=True)
    for name, text in (("state", state), ("phys_state", phys_state), ("rate", rate), ("link_layer", link_layer)):
        (port_dir / name).write_text(text + "\n")


@pytest.fixture
def sysfs(tmp_path):
    add_port(tmp_path, "mlx5_0", 1, "4: ACTIVE", "5: LinkUp", "400 Gb/sec (4X NDR)")
    add_port(tmp_path, "mlx5_1", 1, "1: DOWN", "3: Disabled", "10 Gb/sec (4X SDR)")
    return tmp_path


def test_ports_are_read_with_their_state_and_rate(sysfs):
    assert read_ib_ports(sysfs) == [
        IbPort("mlx5_0", 1, "ACTIVE", "LinkUp", 400.0, "400 Gb/sec (4X NDR)", "InfiniBand"),
        IbPort("mlx5_1", 1, "DOWN", "Disabled", 10.0, "10 Gb/sec (4X SDR)", "InfiniBand"),
    ]


def test_active_ports_measurement_counts_only_active_ports(sysfs):
    measurement = measure_ib_ports(NODE, sysfs)
    assert (measurement.metric, measurement.value, measurement.unit) == ("ib.active_ports", 1.0, "count")
    assert measurement.details["active_rates_gbps"] == [400.0]
    assert [(p["device"], p["state"], p["rate_gbps"]) for p in measurement.details["ports"]] == [
        ("mlx5_0", "ACTIVE", 400.0), ("mlx5_1", "DOWN", 10.0),
    ]


@pytest.mark.parametrize("text, gbps", [("400 Gb/sec (4X NDR)", 400.0), ("2.5 Gb/sec (1X SDR)", 2.5),
                                        ("100 Gb/sec (2X HDR)", 100.0), ("", None), ("unknown", None)])
def test_rate_is_parsed_in_gbit_per_second(text, gbps):
    assert parse_rate_gbps(text) == gbps


def test_a_host_without_infiniband_is_not_measured(tmp_path):
    with pytest.raises(NotMeasured, match="^no InfiniBand/RoCE devices in /sys/class/infiniband$"):
        measure_ib_ports(NODE, tmp_path)
    (tmp_path / "class" / "infiniband").mkdir(parents=True)  # driver loaded, no device
    with pytest.raises(NotMeasured):
        read_ib_ports(tmp_path)


def test_min_active_rate_names_the_slowest_active_port(sysfs):
    add_port(sysfs, "mlx5_2", 1, "4: ACTIVE", "5: LinkUp", "200 Gb/sec (4X HDR)")
    measurement = measure_ib_min_rate(NODE, sysfs)
    assert (measurement.metric, measurement.value, measurement.unit) == ("ib.min_active_rate_gbps", 200.0, "Gb/s")
    assert measurement.details["slowest_port"] == "mlx5_2/1"  # the DOWN 10 Gb/s port does not count


def test_min_active_rate_without_active_ports_is_not_measured(tmp_path):
    add_port(tmp_path, "mlx5_0", 1, "1: DOWN", "3: Disabled", "400 Gb/sec (4X NDR)")
    with pytest.raises(NotMeasured, match="no ACTIVE"):
        measure_ib_min_rate(NODE, tmp_path)
