"""Passive health probes and their judge: Xid errors from real kernel-log lines (tests/data/xid/) and
fake NVML events, InfiniBand port counters from a fake sysfs tree; and the suite end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clusterbench.judge.passive_health import XID_RULES, ib_counter_checks, xid_checks
from clusterbench.model import Location, NotMeasured, Verdict
from clusterbench.probes.health import xid
from clusterbench.probes.health.xid import (
    XidWatch,
    XidWindow,
    measure_xid_errors,
    normal_bus,
    parse_kernel_log,
    read_kernel_log,
)
from clusterbench.probes.infiniband_counters import (
    counter_deltas,
    measure_port_errors,
    read_port_counters,
    start_counter_window,
)
from clusterbench.registry import metric_spec
from fake_nvml import healthy
from fake_nvml_events import FakeNvmlEvents, bus_of
from test_acceptance_run import run_suite

DATA = Path(__file__).parent / "data" / "xid"
NODE = Location("node7", 0, "node")


def lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


# --- the kernel log ---------------------------------------------------------------------------------


def test_dmesg_lines_give_code_bus_text_and_time():
    events = parse_kernel_log(lines("dmesg.txt"), "node7", run_started_s=50_000.0)
    assert [(e.pci_bus, e.code) for e in events] == [
        ("0000:01:00", 31), ("0000:01:00", 13), ("0000:01:00", 32), ("0000:43:00", 13)]
    first = events[0]
    assert first.host == "node7" and first.when_s == pytest.approx(31543.449443) and first.gpu_index is None
    assert first.text.startswith("Ch 0000003a, intr 10000000. MMU Fault")
    assert [e.during_run for e in events] == [False, False, False, True]
    assert events[3].text.startswith("pid='<unknown>', name=<unknown>, Graphics Exception")


def test_journal_lines_without_a_stamp_and_the_old_form_without_pci():
    events = parse_kernel_log(lines("journal.txt"), "node7", {"0000:2b:00": 3}, run_started_s=10.0)
    assert [(e.pci_bus, e.code, e.gpu_index) for e in events] == [
        ("0000:2b:00", 79, 3), ("0000:dc:00", 45, None), ("0000:01:00", 3, None)]
    assert events[0].text == "GPU has fallen off the bus." and events[0].when_s is None
    assert events[0].during_run is None  # no stamp: not known to be of this run
    assert events[2].when_s == pytest.approx(269.517039) and events[2].during_run is True


def test_kmsg_records_and_their_continuation_lines(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text((DATA / "kmsg.txt").read_text())
    log = read_kernel_log(kmsg)
    assert log.source == str(kmsg) and log.first_s == 0.0
    events = parse_kernel_log(log.lines, "node7", run_started_s=3000.0)
    assert [(e.pci_bus, e.code, e.when_s, e.during_run) for e in events] == [
        ("0000:10:1c", 63, 1200.0, False), ("0000:9b:00", 94, 5400.0, True), ("0018:01:00", 145, 5400.1, True)]


def test_nvml_bus_ids_match_the_drivers_names():
    assert normal_bus("00000000:3B:00.0") == "0000:3b:00" == normal_bus("0000:3b:00")
    assert normal_bus("00000018:01:00.0") == "0018:01:00"


def test_an_unreadable_kernel_log_is_not_measured_with_both_reasons(tmp_path, monkeypatch):
    def dmesg_refused(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "dmesg: read kernel buffer failed: Operation not permitted\n")

    monkeypatch.setattr(xid.subprocess, "run", dmesg_refused)
    with pytest.raises(NotMeasured, match="kernel log unreadable .*No such file.*Operation not permitted"):
        read_kernel_log(tmp_path / "no-kmsg")


# --- NVML events and the figure -------------------------------------------------------------------


def watching(nvml: FakeNvmlEvents, started_s: float = 3000.0) -> XidWindow:
    return XidWindow(started_s, XidWatch(nvml).start())


def test_nvml_events_of_the_run_are_counted_once_beside_the_log(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text((DATA / "kmsg.txt").read_text())
    nvml = FakeNvmlEvents([healthy(0), healthy(1)])
    window = watching(nvml)
    nvml.xid(1, 79)  # only NVML saw it (the log above does not hold it)
    figure = measure_xid_errors(window, NODE, kmsg)
    assert figure.metric == "gpu.xid_errors" and figure.value == 4.0 and figure.unit == "count"
    nvml_event = figure.details["events"][-1]
    assert nvml_event["source"] == xid.NVML_EVENTS and nvml_event["code"] == 79
    assert nvml_event["pci_bus"] == bus_of(1) and nvml_event["gpu_index"] == 1 and nvml_event["during_run"]
    assert figure.details["nvml_events"] == "watched 2 GPUs during the run" and figure.details["driver_messages"] == 3
    window.watch.close()
    assert nvml.freed == 1 and nvml.shutdowns == 1


def test_an_nvml_event_the_log_also_shows_is_not_counted_twice(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text(f"4,9,4000000000,-;NVRM: Xid (PCI:{bus_of(0)}): 48, pid=7, name=python3, DBE (0x1)\n")
    nvml = FakeNvmlEvents([healthy(0)])
    window = watching(nvml)
    nvml.xid(0, 48)
    figure = measure_xid_errors(window, NODE, kmsg)
    assert figure.value == 1.0 and figure.details["events"][0]["gpu_index"] == 0


def test_without_a_log_the_nvml_events_alone_with_a_caveat(tmp_path, monkeypatch):
    monkeypatch.setattr(xid.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "denied"))
    nvml = FakeNvmlEvents([healthy(0), healthy(1)], no_events=(1,))
    window = watching(nvml)
    assert window.watch.watched == [0] and "Not Supported" in window.watch.unwatched[1]
    figure = measure_xid_errors(window, NODE, tmp_path / "none")
    assert figure.value == 0.0 and figure.caveat.startswith("only the NVML events of this run: kernel log unreadable")


def test_neither_source_is_not_measured_not_zero(tmp_path, monkeypatch):
    monkeypatch.setattr(xid.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "denied"))
    nvml = FakeNvmlEvents([healthy(0)], init_error=9)  # NVML_ERROR_DRIVER_NOT_LOADED
    window = watching(nvml)
    with pytest.raises(NotMeasured, match="kernel log unreadable.*denied.*NVML unavailable"):
        measure_xid_errors(window, NODE, tmp_path / "none")


def test_a_wrapped_ring_buffer_says_since_when(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("6,900,86400000000,-;usb 1-1: new device\n")
    figure = measure_xid_errors(watching(FakeNvmlEvents([healthy(0)])), NODE, kmsg)
    assert figure.value == 0.0 and "only from 86400 s after boot" in figure.caveat
    assert figure.details["driver_messages"] == 0


# --- the Xid judge ------------------------------------------------------------------------------------


def test_xid_checks_fail_hardware_faults_and_warn_application_errors(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("\n".join(f"4,{i},{i}000000,-;{line.split('kernel: ', 1)[1]}"
                              for i, line in enumerate(lines("journal.txt")[:2])) + "\n"
                    "4,7,9000000,-;NVRM: Xid (PCI:0000:01:00): 13, Graphics Exception: Class 0x0 Subchannel 0x0\n")
    nvml = FakeNvmlEvents([healthy(0)])
    figure = measure_xid_errors(watching(nvml, started_s=5.0), NODE, kmsg)
    checks = {c.params["code"]: c for c in xid_checks([figure])}
    fell_off, application = checks[79], checks[13]
    # Before this run (the log keeps it after a reset): said as a WARN, never failing the node for good.
    assert fell_off.verdict is Verdict.WARN and not fell_off.blocking and fell_off.location.host == "node7"
    assert "GPU has fallen off the bus" in fell_off.message and "reseat the GPU" in fell_off.message
    assert "before this run, since boot" in fell_off.message and "if the GPU has been reset" in fell_off.message
    assert application.verdict is Verdict.WARN and not application.blocking and "during this run" in application.message
    assert application.source.startswith("NVIDIA Xid catalog")


def test_a_hardware_xid_during_the_run_fails_the_node(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("4,1,9000000,-;NVRM: Xid (PCI:0000:2b:00): 79, pid=1234, GPU has fallen off the bus.\n")
    figure = measure_xid_errors(watching(FakeNvmlEvents([healthy(0)]), started_s=5.0), NODE, kmsg)
    (check,) = xid_checks([figure])
    assert check.verdict is Verdict.FAIL and check.blocking and "during this run" in check.message


def test_no_xid_is_one_pass_that_says_what_was_read(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("6,0,0,-;Linux version 6.8.0\n6,1,1000,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module\n")
    (check,) = xid_checks([measure_xid_errors(watching(FakeNvmlEvents([healthy(0)])), NODE, kmsg)])
    assert check.verdict is Verdict.PASS and check.observed == 0.0
    assert check.message.startswith(f"no Xid errors: none in the kernel log since boot ({kmsg})")


def test_the_catalogue_table_covers_the_codes_operators_meet():
    assert {13, 31, 43, 48, 63, 64, 74, 79, 92, 94, 95, 119, 120} <= set(XID_RULES)
    assert {code for code, rule in XID_RULES.items() if rule.severity == "warn"} >= {13, 31, 43}


def test_an_nvml_event_from_a_gpu_that_no_longer_answers_is_still_counted(tmp_path):
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("6,0,0,-;Linux version 6.8.0\n")
    nvml = FakeNvmlEvents([healthy(0)])
    window = watching(nvml)
    nvml.xid(0, 79)
    nvml.gpus[0].lost = True  # nvmlDeviceGetPciInfo now answers NVML_ERROR_GPU_IS_LOST
    figure = measure_xid_errors(window, NODE, kmsg)
    (event,) = figure.details["events"]
    assert event["code"] == 79 and event["pci_bus"] == "unknown" and "did not say its PCI bus" in event["text"]
    (check,) = xid_checks([figure])
    assert check.verdict is Verdict.FAIL and "the GPU at PCI unknown" in check.message


# --- InfiniBand port counters ---------------------------------------------------------------------


def fake_port(root: Path, hca: str, port: int, **counters: int) -> None:
    port_dir = root / "class" / "infiniband" / hca / "ports" / str(port)
    (port_dir / "counters").mkdir(parents=True, exist_ok=True)
    (port_dir / "link_layer").write_text("InfiniBand\n")
    for name, value in counters.items():
        (port_dir / "counters" / name).write_text(f"{value}\n")


CLEAN = dict(symbol_error=0, link_error_recovery=0, link_downed=1, port_rcv_errors=0,
             port_rcv_remote_physical_errors=0, port_xmit_discards=12, local_link_integrity_errors=0,
             excessive_buffer_overrun_errors=0, port_xmit_data=123456789)


def test_counters_are_read_per_port_and_only_the_error_counters(tmp_path):
    fake_port(tmp_path, "mlx5_0", 1, **CLEAN)
    fake_port(tmp_path, "mlx5_1", 1, **CLEAN)
    snapshot = read_port_counters(tmp_path)
    assert sorted(snapshot.ports) == [("mlx5_0", 1), ("mlx5_1", 1)]
    assert "port_xmit_data" not in snapshot.ports[("mlx5_0", 1)].values
    assert snapshot.ports[("mlx5_0", 1)].values["link_downed"] == 1


def test_no_infiniband_is_not_measured(tmp_path):
    with pytest.raises(NotMeasured, match="no InfiniBand/RoCE devices"):
        read_port_counters(tmp_path)
    window = start_counter_window(tmp_path)
    with pytest.raises(NotMeasured, match="no InfiniBand/RoCE devices"):
        measure_port_errors(window, NODE, tmp_path)


def test_the_rise_during_the_run_not_the_count_since_boot(tmp_path):
    fake_port(tmp_path, "mlx5_0", 1, **CLEAN)
    fake_port(tmp_path, "mlx5_1", 1, **CLEAN)
    window = start_counter_window(tmp_path)
    fake_port(tmp_path, "mlx5_0", 1, link_downed=2, symbol_error=40)
    figures = {(f.params["hca"], f.params["counter"]): f for f in measure_port_errors(window, NODE, tmp_path)}
    assert len(figures) == 16 and figures[("mlx5_0", "link_downed")].value == 1.0
    assert figures[("mlx5_0", "link_downed")].details["before"] == 1
    assert figures[("mlx5_0", "symbol_error")].value == 40.0 and figures[("mlx5_1", "port_xmit_discards")].value == 0.0
    checks = ib_counter_checks(list(figures.values()))
    by_counter = {(c.params.get("hca"), c.params.get("counter")): c for c in checks}
    downed = by_counter[("mlx5_0", "link_downed")]
    assert downed.verdict is Verdict.FAIL and downed.params == {"hca": "mlx5_0", "port": 1, "counter": "link_downed"}
    assert "reseat or replace the cable of mlx5_0 port 1" in downed.message and "node7" in downed.message
    assert by_counter[("mlx5_0", "symbol_error")].verdict is Verdict.WARN
    assert not any(c.verdict is Verdict.PASS for c in checks)  # node7 has a risen counter: no PASS for it


def test_cleared_and_saturated_counters_say_so(tmp_path):
    fake_port(tmp_path, "mlx5_0", 1, **{**CLEAN, "port_rcv_errors": 500, "local_link_integrity_errors": 15})
    before = read_port_counters(tmp_path)
    fake_port(tmp_path, "mlx5_0", 1, port_rcv_errors=3)
    deltas = {d.counter: d for d in counter_deltas(before, read_port_counters(tmp_path))}
    assert deltas["port_rcv_errors"].reset_between and deltas["port_rcv_errors"].rise == 3
    assert deltas["local_link_integrity_errors"].saturated and deltas["local_link_integrity_errors"].rise == 0


def test_flat_counters_are_one_pass_a_node(tmp_path):
    fake_port(tmp_path, "mlx5_0", 1, **CLEAN)
    window = start_counter_window(tmp_path)
    (check,) = ib_counter_checks(measure_port_errors(window, NODE, tmp_path))
    assert check.verdict is Verdict.PASS and check.message.startswith("no error counter rose on 1 InfiniBand/RoCE port")


def test_metrics_are_declared_per_node_in_the_health_family():
    xids, ports = metric_spec("gpu.xid_errors"), metric_spec("ib.port_errors")
    assert (xids.per, xids.family, xids.unit, xids.better.value) == ("node", "health", "count", "lower")
    assert ports.params == ("hca", "port", "counter") and ports.per == "node" and ports.family == "health"
    # Not must_be_zero: the judge decides per Xid code and counter (an application Xid, a discard on
    # a congested port are WARN, not FAIL).
    assert not xids.must_be_zero and not ports.must_be_zero



# --- the suite ----------------------------------------------------------------------------------------


def test_the_suite_on_this_machine_says_what_it_could_read(tmp_path):
    # The file named, not the whole suite with -k: a collection error elsewhere must not hide these.
    run = run_suite(tmp_path, "--cluster=local", "-m", "health", "benchmarks/test_passive_health.py")
    assert run.returncode == 0, run.stdout + run.stderr
    results = run.results
    outcomes = {t["nodeid"].rsplit("::", 1)[1]: t for t in results["tests"]}
    xid_test, ib_test = outcomes["test_xid_errors"], outcomes["test_infiniband_port_errors"]
    if Path("/sys/class/infiniband").is_dir() and any(Path("/sys/class/infiniband").iterdir()):
        assert ib_test["verdict"] in ("PASS", "WARN", "FAIL")
    else:
        assert ib_test["verdict"] == "NOT MEASURED" and "no InfiniBand/RoCE devices" in ib_test["message"]
    figures = [m for m in results["measurements"] if m["metric"] == "gpu.xid_errors"]
    if figures:  # the kernel log (or NVML) was readable: a real count, with what was read
        assert xid_test["verdict"] in ("PASS", "WARN", "FAIL") and figures[0]["details"]["kernel_log"]
        assert any(c["metric"] == "gpu.xid_errors" for c in results["checks"])
    else:
        assert xid_test["verdict"] == "NOT MEASURED" and "kernel log unreadable" in xid_test["message"]


def test_the_lines_of_one_xid_are_one_event_and_a_later_one_is_another():
    lines = [  # Xid 13 as the driver writes it: several lines per fault (the text is trimmed here)
        "[  100.100000] NVRM: Xid (PCI:0000:3b:00): 13, Graphics SM Warp Exception on (GPC 0, TPC 0)",
        "[  100.100200] NVRM: Xid (PCI:0000:3b:00): 13, Graphics SM Global Exception on (GPC 0, TPC 0)",
        "[  100.100400] NVRM: Xid (PCI:0000:3b:00): 13, Graphics Exception: ESR 0x504648=0x102000e",
        "[  160.000000] NVRM: Xid (PCI:0000:3b:00): 13, Graphics SM Warp Exception on (GPC 1, TPC 0)",
    ]
    events = xid.parse_kernel_log(lines, "node7")
    assert [(e.code, e.when_s) for e in events] == [(13, 100.1), (13, 160.0)]
