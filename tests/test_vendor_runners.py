"""The vendor runners end to end with fake executables on PATH that print the tools' real outputs."""

import os
import stat
import threading
from pathlib import Path

import pytest

from clusterbench.model import Location, NotMeasured, ProbeFailed
from clusterbench.probes.vendor import dcgm_diag, nccl_tests, perftest

DATA = Path(__file__).parent / "data" / "vendor"
HERE = Location("node-a", 0, "node")


def fake_tool(folder: Path, name: str, output: Path, exit_status: int = 0) -> Path:
    """An executable `name` that records its arguments and prints `output`."""
    script = folder / name
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {folder}/{name}.args\ncat {output}\nexit {exit_status}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


@pytest.fixture
def on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_nccl_tests_binary_from_the_settings_folder_runs_and_is_parsed(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    fake_tool(build, "all_reduce_perf", DATA / "nccl_tests/all_reduce_perf_g4_tinygrad-open-gpu-kernel-modules36.txt")
    binary = nccl_tests.find_binary("all_reduce", str(tmp_path))
    figures = nccl_tests.run_nccl_tests("all_reduce", binary, max_bytes=1 << 30, ngpus=4, dtype="bf16",
                                        location=HERE, timeout_s=30)
    assert (build / "all_reduce_perf.args").read_text().split() == [
        "-b", "8", "-e", str(1 << 30), "-f", "2", "-g", "4", "-d", "bfloat16"]
    busbw = {(m.params["size_bytes"], m.params["inplace"]): m.value for m in figures if m.unit == "GB/s"}
    assert busbw[(1073741824, True)] == 25.95 and len(busbw) == 6


def test_nccl_tests_missing_or_failing_or_across_nodes(tmp_path):
    with pytest.raises(NotMeasured, match="sendrecv_perf is not installed"):
        nccl_tests.find_binary("sendrecv", str(tmp_path))
    fake_tool(tmp_path, "broadcast_perf", DATA / "nccl_tests/alltoall_perf_nccl-tests287.txt", exit_status=2)
    with pytest.raises(ProbeFailed, match="exit status 2"):
        nccl_tests.run_nccl_tests("broadcast", str(tmp_path / "broadcast_perf"), max_bytes=8, ngpus=1, dtype="fp32",
                                  location=HERE, timeout_s=30)
    assert "mpirun" in nccl_tests.single_node_reason({"a", "b"}, 8)
    assert "needs a GPU" in nccl_tests.single_node_reason({"a"}, 0)
    assert nccl_tests.single_node_reason({"a"}, 8) == ""


def test_dcgmi_failing_exit_status_still_yields_its_results(on_path):
    fake_tool(on_path, "dcgmi", DATA / "dcgm/synthetic_diag_v4_warnings_from_schema.json", exit_status=226)
    report = dcgm_diag.run_dcgm_diag(2)
    assert (on_path / "dcgmi.args").read_text().split() == ["diag", "-r", "2", "-j"]
    assert dcgm_diag.failures(report, HERE).value == 1


def test_dcgmi_absent_skipped_or_without_hostengine_is_not_measured(on_path, tmp_path_factory):
    with pytest.raises(NotMeasured, match="dcgm_diag_level = 0"):
        dcgm_diag.run_dcgm_diag(0)
    with pytest.raises(NotMeasured, match="dcgmi is not installed"):
        dcgm_diag.run_dcgm_diag(1)
    said = tmp_path_factory.mktemp("out") / "said.txt"
    said.write_text("Error: Unable to establish a connection to the specified host: localhost\n")
    fake_tool(on_path, "dcgmi", said, exit_status=255)
    with pytest.raises(NotMeasured, match="nv-hostengine"):
        dcgm_diag.run_dcgm_diag(1)


class ThreadExchange:
    """Two "nodes" as two threads meeting at the same barriers and gathers as ranks would."""

    def __init__(self, size):
        self._barrier = threading.Barrier(size, timeout=30)
        self._slots = [None] * size
        self.rank = threading.local()

    def all_gather(self, obj):
        self._slots[self.rank.value] = obj
        self._barrier.wait()
        gathered = list(self._slots)
        self._barrier.wait()
        return gathered

    def barrier(self):
        self._barrier.wait()


def fake_sysfs(root: Path, ports: dict[str, str]) -> Path:
    for device, state in ports.items():
        port = root / "class" / "infiniband" / device / "ports" / "1"
        port.mkdir(parents=True)
        (port / "state").write_text(state)
        (port / "phys_state").write_text("5: LinkUp")
        (port / "rate").write_text("400 Gb/sec (4X NDR)")
        (port / "link_layer").write_text("InfiniBand")
    return root


def test_ib_write_bw_between_two_nodes_over_their_common_active_ports(on_path, tmp_path_factory):
    fake_tool(on_path, "ib_write_bw", DATA / "perftest/ib_write_bw_report_gbits_perftest273.txt")
    sysfs = {"node-a": fake_sysfs(tmp_path_factory.mktemp("a"), {"mlx5_0": "4: ACTIVE", "mlx5_1": "4: ACTIVE"}),
             "node-b": fake_sysfs(tmp_path_factory.mktemp("b"), {"mlx5_0": "4: ACTIVE", "mlx5_1": "1: DOWN"})}
    exchange = ThreadExchange(2)
    results = {}

    def rank(number, host):
        exchange.rank.value = number
        offer = perftest.node_offer(host, number, sysfs[host])
        results[number] = perftest.measure_between_nodes(exchange, offer, duration_s=1, timeout_s=30)

    threads = [threading.Thread(target=rank, args=(n, h)) for n, h in enumerate(sysfs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results[0] == results[1]
    (link,) = results[0]
    figure = link.measurement()
    assert (figure.value, figure.unit, figure.params) == (0.48, "Gb/s", {"hca": "mlx5_0", "port": 1, "peer": "node-a"})
    assert figure.location == Location("node-b", 1, "mlx5_0/1")
    calls = [line.split() for line in (on_path / "ib_write_bw.args").read_text().splitlines()]
    assert sorted(call[-1] for call in calls) == ["--report_gbits", "node-a"]  # one server, one client


def test_ib_write_bw_on_one_node_or_without_the_tool_is_not_measured(on_path, tmp_path_factory):
    exchange = ThreadExchange(1)
    exchange.rank.value = 0
    with pytest.raises(NotMeasured, match="between two nodes; this run has 1 node"):
        perftest.measure_between_nodes(exchange, perftest.NodeOffer("node-a", 0), duration_s=1, timeout_s=5)
    offer = perftest.node_offer("node-a", 0, tmp_path_factory.mktemp("none"))
    assert "ib_write_bw is not installed" in offer.reason
    assert perftest.disjoint_rounds([("a", "b"), ("c", "a")]) == [[("a", "b")], [("c", "a")]]


def test_a_roce_port_runs_ib_write_bw_on_its_roce_v2_gid(tmp_path):
    from clusterbench.probes.vendor.perftest import Link, client_command, roce_v2_gid_index

    port = tmp_path / "class" / "infiniband" / "mlx5_2" / "ports" / "1"
    (port / "gid_attrs" / "types").mkdir(parents=True)
    (port / "gids").mkdir()
    for index, (kind, gid) in enumerate([("IB/RoCE v1", "fe80:0000:0000:0000:0a8c:fbff:fe11:2233"),
                                          ("RoCE v2", "fe80:0000:0000:0000:0a8c:fbff:fe11:2233"),
                                          ("IB/RoCE v1", "0000:0000:0000:0000:0000:ffff:0a00:0001"),
                                          ("RoCE v2", "0000:0000:0000:0000:0000:ffff:0a00:0001")]):
        (port / "gid_attrs" / "types" / str(index)).write_text(kind + "\n")
        (port / "gids" / str(index)).write_text(gid + "\n")
    assert roce_v2_gid_index(tmp_path, "mlx5_2", 1) == 3  # RoCE v2 and IPv4-mapped: it routes
    assert roce_v2_gid_index(tmp_path, "mlx5_0", 1) is None  # an InfiniBand port has no gid_attrs types
    command = client_command("ib_write_bw", Link("mlx5_2", 1), 18515, 2, "node-b", gid_index=1)
    assert command[command.index("-x") + 1] == "1" and command[-1] == "node-b"
