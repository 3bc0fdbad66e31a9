"""Passive health: Xid errors and InfiniBand port error counters as checks naming the host, the device
and what to do.

What an Xid means and what to do about it follows NVIDIA's Xid catalogue ("Analyzing Xid Errors with
the Xid Catalog", https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html), whose
"Resolution Bucket (Immediate Action)" column says RESTART_APP, RESET_GPU, RESTART_BM (reboot the
node) or CONTACT_SUPPORT, and NVIDIA's dynamic page retirement guide for 48/63/64
(https://docs.nvidia.com/deploy/dynamic-page-retirement/). An Xid whose remedy is a GPU reset or more
is a FAIL: the node is not fit for a job until it is done. One whose remedy is restarting the
application (13, 31, 43: an illegal address, an MMU fault, a stopped channel) is usually the
application's own error and a WARN: the catalogue asks for a pattern (the same GPU again and again)
before suspecting the hardware. A code not in the table is a WARN pointing at the catalogue.

A port counter that rose during the run is a FAIL where it means a bad link (the link went down or
retrained, packets arrived corrupt) and a WARN where it may be congestion or a single marginal
symbol (port_xmit_discards, symbol_error alone).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

from clusterbench.judge.rules import rule_check
from clusterbench.model import Check, Location, Measurement, Verdict

Severity = Literal["fail", "warn"]
XID_CATALOG = "NVIDIA Xid catalog (docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html)"
IB_COUNTER_RULES = "InfiniBand PortCounters (IBTA; as perfquery and ibdiagnet read them)"


@dataclass(frozen=True)
class XidRule:
    severity: Severity
    meaning: str
    action: str


_RESET = "drain the node and reset the GPU (nvidia-smi -r -i {gpu}) or reboot; run dcgmi diag -r 3 before returning it"
_REBOOT = "drain the node and reboot it; "
XID_RULES: dict[int, XidRule] = {
    13: XidRule("warn", "Graphics Engine Exception (usually an application fault: illegal address or instruction)",
                "check the application (compute-sanitizer); if it recurs on this GPU only, run dcgmi diag -r 3"),
    31: XidRule("warn", "GPU memory page fault (MMU fault; usually an application's invalid memory access)",
                "check the application; repeated faults on this GPU only: run dcgmi diag -r 3 (catalog: RUN_DCGMEUD)"),
    43: XidRule("warn", "GPU stopped processing: a channel was reset after an application fault",
                "restart the application; no action on the GPU unless it recurs"),
    45: XidRule("warn", "preemptive cleanup after an earlier error (a process was killed)",
                "look at the Xid that preceded it on this GPU"),
    48: XidRule("fail", "double-bit (uncorrectable) ECC error", _RESET + "; RMA the GPU if it recurs"),
    61: XidRule("fail", "internal micro-controller breakpoint/warning", _RESET),
    62: XidRule("fail", "internal micro-controller halt", _RESET),
    63: XidRule("warn", "row remapping / page retirement recorded (an ECC error was contained)",
                "reset the GPU (nvidia-smi -r -i {gpu}) when idle to apply the remap; gpu.retired_pages fails "
                "while it is pending"),
    64: XidRule("fail", "row remapping / page retirement failed", "drain the node and RMA the GPU"),
    74: XidRule("fail", "NVLink error", _RESET + "; check nvidia-smi nvlink -s and -e; reseat or RMA the GPU or "
                "NVSwitch baseboard if the link errors persist"),
    79: XidRule("fail", "GPU has fallen off the bus",
                _REBOOT + "reseat the GPU and check its power and riser; RMA the GPU if it happens again"),
    92: XidRule("warn", "high single-bit ECC error rate",
                "watch the GPU's ECC counts; run dcgmi diag -r 3 at the next drain"),
    94: XidRule("warn", "contained ECC error (the application that touched the memory was stopped)",
                "restart the application; reset the GPU (nvidia-smi -r -i {gpu}) when idle to remap the row"),
    95: XidRule("fail", "uncontained ECC error", _RESET + "; RMA the GPU if it recurs"),
    119: XidRule("fail", "GSP RPC timeout (the GPU System Processor stopped answering)",
                 _RESET + "; update the driver if it recurs"),
    120: XidRule("fail", "GSP error", _RESET + "; update the driver if it recurs"),
    140: XidRule("fail", "unrecovered ECC error", _RESET),
    154: XidRule("fail", "GPU recovery action changed (the text names it: GPU reset or node reboot required)",
                 "do what the message says: drain the node, then reset the GPU or reboot the node"),
}


def xid_rule(code: int) -> XidRule:
    return XID_RULES.get(code, XidRule(
        "warn", "not in clusterbench's table", "look the code up in NVIDIA's Xid catalog and act on its resolution"))


def xid_checks(figures: list[Measurement]) -> list[Check]:
    """Each node's gpu.xid_errors figure as checks: one per GPU and Xid code with what to do, or one
    PASS naming what was read when there was none."""
    checks = []
    for figure in figures:
        if figure.metric != "gpu.xid_errors":
            continue
        events = figure.details.get("events", [])
        if not events:
            checks.append(_pass(figure, f"no Xid errors: {_xid_sources(figure)}", XID_CATALOG))
            continue
        grouped: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for event in events:
            grouped[(event["pci_bus"], event["code"])].append(event)
        checks += [_xid_check(figure, bus, code, group) for (bus, code), group in sorted(grouped.items())]
    return checks


def _xid_sources(figure: Measurement) -> str:
    details = figure.details
    log, nvml = details.get("kernel_log", ""), details.get("nvml_events", "")
    if details.get("driver_messages") == 0:
        read = f"the kernel log since boot ({log}) holds no NVIDIA driver (NVRM) message at all"
    elif details.get("driver_messages"):
        read = f"none in the kernel log since boot ({log})"
    else:
        read = f"kernel log: {log}"
    caveat = f"; {figure.caveat}" if figure.caveat else ""
    return f"{read}; NVML events: {nvml}{caveat}"


def _xid_check(figure: Measurement, bus: str, code: int, events: list[dict]) -> Check:
    rule = xid_rule(code)
    index = events[0]["gpu_index"]
    gpu = f"GPU {index} (PCI {bus})" if index is not None else f"the GPU at PCI {bus}"
    during = sum(1 for e in events if e["during_run"])
    when = (f"{during} during this run" if during == len(events) else
            f"{during} of them during this run" if during else "before this run, since boot")
    action = rule.action.format(gpu=index if index is not None else "<gpu>")
    message = (f"host {figure.location.host} {gpu}: Xid {code} x{len(events)} ({when}): {rule.meaning}; "
               f"first: \"{events[0]['text']}\"; what to do: {action}")
    # Only an Xid of this run fails it: the kernel log keeps a line since boot after the GPU was reset
    # as its action says (or one of another tenant's GPU), and the GPU's state now is judged by the
    # health and load figures of this run. An earlier one is said, as a WARN.
    failing = rule.severity == "fail" and during > 0
    if rule.severity == "fail" and not during:
        message += "; it happened before this run: if the GPU has been reset or replaced since, nothing is left to do"
    return rule_check(
        figure, Verdict.FAIL if failing else Verdict.WARN, source=XID_CATALOG, message=message,
        observed=float(len(events)), params={"code": code},
        location=Location(figure.location.host, figure.location.rank, f"gpu{index}" if index is not None else bus),
    )


@dataclass(frozen=True)
class CounterRule:
    severity: Severity
    meaning: str
    action: str


_CABLE = "reseat or replace the cable of {port}, check the transceiver and the switch port; ibdiagnet -pc then rerun"
COUNTER_RULES: dict[str, CounterRule] = {
    "link_downed": CounterRule("fail", "the link went down", _CABLE),
    "link_error_recovery": CounterRule("fail", "the link retrained (error recovery)", _CABLE),
    "port_rcv_errors": CounterRule("fail", "packets arrived corrupt (CRC, length or VL errors)", _CABLE),
    "local_link_integrity_errors": CounterRule("fail", "local physical errors exceeded the link's threshold", _CABLE),
    "excessive_buffer_overrun_errors": CounterRule(
        "fail", "receive buffer overruns (flow-control credits lost)", _CABLE + "; check the peer's VL/credit setup"),
    "port_rcv_remote_physical_errors": CounterRule(
        "warn", "packets marked bad by an upstream link (EBP)", "look for the faulty link upstream of {port}: "
        "ibdiagnet -pc on the fabric shows which port's counters rise"),
    "symbol_error": CounterRule("warn", "symbol errors on a lane (a marginal link, before any packet was lost)",
                                "watch it; if it keeps rising, reseat or replace the cable of {port}"),
    "port_xmit_discards": CounterRule("warn", "packets discarded on transmit (congestion or a peer not ready)",
                                      "check the fabric for congestion and the peer of {port}; a link fault shows "
                                      "in the other counters too"),
}


def ib_counter_checks(figures: list[Measurement]) -> list[Check]:
    """Each ib.port_errors figure that rose as a check naming the port and what to do; one PASS a
    node naming how many ports and counters stayed flat."""
    checks = []
    flat: dict[str, list[Measurement]] = defaultdict(list)
    for figure in figures:
        if figure.metric != "ib.port_errors":
            continue
        if figure.value > 0:
            checks.append(_counter_check(figure))
        else:
            flat[figure.location.host].append(figure)
    risen_hosts = {c.location.host for c in checks if c.location is not None}
    for host, figures_of_host in sorted(flat.items()):
        if host in risen_hosts:
            continue
        ports = {(f.params["hca"], f.params["port"]) for f in figures_of_host}
        window = figures_of_host[0].details.get("window_s")
        saturated = [f for f in figures_of_host if f.caveat]
        note = f"; {len(saturated)} with a caveat: {saturated[0].caveat}" if saturated else ""
        checks.append(_pass(figures_of_host[0], f"no error counter rose on {len(ports)} InfiniBand/RoCE port(s) "
                            f"over {window} s of the run{note}", IB_COUNTER_RULES, params={}))
    return checks


def _counter_check(figure: Measurement) -> Check:
    counter = str(figure.params["counter"])
    rule = COUNTER_RULES[counter]
    port = f"{figure.params['hca']} port {figure.params['port']}"
    caveat = f" ({figure.caveat})" if figure.caveat else ""
    window = figure.details.get("window_s")
    message = (f"host {figure.location.host} {port}: {counter} rose by {figure.value:g}{caveat} over {window} s of the "
               f"run: {rule.meaning}; what to do: {rule.action.format(port=port)}")
    # The node's figure: its params name the port.
    return rule_check(figure, Verdict.FAIL if rule.severity == "fail" else Verdict.WARN, source=IB_COUNTER_RULES,
                      message=message)


def _pass(figure: Measurement, message: str, source: str, params: dict | None = None) -> Check:
    return rule_check(figure, Verdict.PASS, source=source, message=message, params=params)
