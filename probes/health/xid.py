"""Xid errors: the NVIDIA driver's fault reports, from the kernel log since boot and from NVML events.

The driver logs every Xid to the kernel ring buffer as

    NVRM: Xid (PCI:0000:3b:00): 79, pid=0, name=..., GPU has fallen off the bus.

(older drivers write "(0000:3b:00)" without "PCI:"). The kernel log is read from /dev/kmsg, else
with `dmesg`; a log neither can read (kernel.dmesg_restrict=1 without CAP_SYSLOG) is NOT MEASURED,
never "no Xid". A log that holds no NVRM line at all is a real zero, with one caveat: the ring
buffer may have wrapped, and the earliest record's time says since when it holds.

NVML's nvmlEventTypeXidCriticalError events reach only a watch registered before they happen, so
`XidWatch` is started at the beginning of a run and drained at its end: it sees the Xids of the run
even where the kernel log is unreadable. What an Xid means and what to do about it is the judge's
(clusterbench.judge.passive_health), after NVIDIA's Xid catalogue.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes.health.nvml_session import import_nvml, text
from clusterbench.registry import declare_probe, metric

PROBE = declare_probe("xid", per="node", module=__name__, metrics=[
    metric("gpu.xid_errors", "count", "lower", "health",
           "Xid errors the NVIDIA driver reported: in the kernel log since boot, and NVML Xid events during the run"),
])

KMSG = Path("/dev/kmsg")
KERNEL_LOG = "kernel log"
NVML_EVENTS = "NVML events"
# "NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus." anywhere in a line, so that
# dmesg's "[  12.3] ", /dev/kmsg's "4,812,1234567,-;" and syslog's "host kernel: " prefixes all parse.
_XID = re.compile(r"NVRM: Xid \((?:PCI:)?([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2})[^)]*\): (\d+),?\s*(.*)")
# dmesg's "[  12.345678]", also behind a syslog prefix ("Jan 18 11:38:05 host kernel: [ 269.5] NVRM: ...").
_DMESG_TIME = re.compile(r"^[^\[]*\[\s*(\d+\.\d+)\]")
_KMSG_TIME = re.compile(r"^\d+,\d+,(\d+),[^;]*;")


@dataclass(frozen=True)
class XidEvent:
    host: str
    pci_bus: str  # "0000:3b:00", as the driver names the GPU
    gpu_index: int | None  # NVML index, where NVML could map the bus; None when unknown
    code: int
    text: str  # the rest of the driver's line (or NVML's event description)
    # Seconds since boot, as the kernel log stamps it; None when the line has no stamp. An NVML event
    # carries no time: it is stamped when it was drained.
    when_s: float | None
    source: str = KERNEL_LOG  # KERNEL_LOG or NVML_EVENTS
    during_run: bool | None = None  # after the run started; None when the time is unknown

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class KernelLog:
    lines: list[str]
    source: str  # "/dev/kmsg" or "dmesg"

    @property
    def first_s(self) -> float | None:
        """The time since boot of the earliest record it still holds (the ring buffer wraps)."""
        return next((t for t in map(_line_time, self.lines) if t is not None), None)


def uptime_s() -> float:
    """Seconds since boot on the clock the kernel log stamps its records with."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _line_time(line: str) -> float | None:
    kmsg = _KMSG_TIME.match(line)
    if kmsg:
        return int(kmsg.group(1)) / 1e6
    dmesg = _DMESG_TIME.match(line)
    return float(dmesg.group(1)) if dmesg else None


SAME_EVENT_S = 1.0  # lines of one Xid (bus, code) this close together are one event


def normal_bus(bus: str) -> str:
    """"00000000:3B:00.0" (NVML) or "0000:3b:00" (the driver's log) -> "0000:3b:00"."""
    domain, rest = bus.lower().split(":", 1)
    return f"{int(domain, 16):04x}:{rest[:5]}"


def parse_kernel_log(lines: Iterable[str], host: str, bus_to_index: dict[str, int] | None = None,
                     run_started_s: float | None = None) -> list[XidEvent]:
    """Every Xid of the kernel log, in order; `run_started_s` (seconds since boot) marks those of the
    run, and `bus_to_index` names the GPU by its NVML index. The driver writes one fault as several
    lines (Xid 13's warp, global and ESR lines): lines of one bus and code within SAME_EVENT_S of the
    previous one are that one event, not more."""
    events: list[XidEvent] = []
    last: dict[tuple[str, int], float] = {}  # (bus, code) -> the time of its last line
    for line in lines:
        match = _XID.search(line)
        if not match:
            continue
        bus = normal_bus(match.group(1))
        when = _line_time(line)
        key = (bus, int(match.group(2)))
        if when is not None and key in last and when - last[key] <= SAME_EVENT_S:
            last[key] = when
            continue
        if when is not None:
            last[key] = when
        events.append(XidEvent(
            host=host,
            pci_bus=bus,
            gpu_index=(bus_to_index or {}).get(bus),
            code=int(match.group(2)),
            text=match.group(3).strip(),
            when_s=when,
            during_run=None if when is None or run_started_s is None else when >= run_started_s,
        ))
    return events


def read_kernel_log(kmsg: Path = KMSG) -> KernelLog:
    """The kernel ring buffer from /dev/kmsg, else from `dmesg`; NotMeasured when neither can read it."""
    try:
        return KernelLog(_read_kmsg(kmsg), str(kmsg))
    except OSError as exc:
        kmsg_problem = f"{kmsg}: {exc.strerror or exc}"
    try:
        done = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30, check=False)
        if done.returncode == 0:
            return KernelLog(done.stdout.splitlines(), "dmesg")
        dmesg_problem = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[0]
    except (OSError, subprocess.TimeoutExpired) as exc:
        dmesg_problem = str(exc)
    raise NotMeasured(f"kernel log unreadable ({kmsg_problem}; dmesg: {dmesg_problem}){_restrict_hint()}")


def _read_kmsg(kmsg: Path) -> list[str]:
    """Every line /dev/kmsg holds now, without waiting for new records (one read returns one record;
    its continuation lines, " SUBSYSTEM=pci", start with a space)."""
    fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    records = []
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break  # no more records: the end of the buffer
            except BrokenPipeError:
                continue  # a record was overwritten while reading: the next read resumes after it
            if not record:
                break
            records.append(record)
    finally:
        os.close(fd)
    return b"".join(records).decode(errors="replace").splitlines()


def _restrict_hint() -> str:
    with suppress(OSError):
        if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() == "1":
            return "; kernel.dmesg_restrict=1: run as root or with CAP_SYSLOG"
    return ""


class XidWatch:
    """NVML Xid events from start() on: nvmlDeviceRegisterEvents on every GPU with
    nvmlEventTypeXidCriticalError, drained without waiting by events(). `reason` says why it
    watches nothing (no NVML, no GPU, or no GPU that supports the event)."""

    def __init__(self, nvml: Any | None = None) -> None:
        self._nvml: Any = nvml  # pynvml (or a test's fake), imported by start() when not given
        self._event_set: Any = None
        self.bus_to_index: dict[str, int] = {}
        self.reason = ""
        self.watched: list[int] = []  # NVML indexes whose Xid events are registered
        self.unwatched: dict[int, str] = {}  # NVML index -> why its events are not watched

    def start(self) -> XidWatch:
        try:
            nvml = self._nvml if self._nvml is not None else import_nvml()
            self._nvml = nvml
            nvml.nvmlInit()  # kept initialised until close(): the event set lives in this NVML session
        except NotMeasured as exc:
            self.reason = str(exc)
            return self
        except Exception as exc:  # pynvml.NVMLError (no driver), or a missing libnvidia-ml
            self.reason = f"NVML unavailable: {exc}"
            return self
        try:
            self._register(nvml)
        except nvml.NVMLError as exc:
            self.reason = f"NVML Xid events unavailable: {exc}"
        except AttributeError as exc:  # an NVML binding without the event API: the kernel log still counts
            self.reason = f"this NVML binding has no Xid event API ({exc})"
        return self

    def _register(self, nvml: Any) -> None:
        self._event_set = nvml.nvmlEventSetCreate()
        for index in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                self.bus_to_index[normal_bus(text(nvml.nvmlDeviceGetPciInfo(handle).busId))] = index
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._event_set)
                self.watched.append(index)
            except nvml.NVMLError as exc:
                self.unwatched[index] = str(exc)
        if not self.watched:
            self.reason = "no GPU whose Xid events NVML can watch" + (
                f" ({'; '.join(f'GPU {i}: {why}' for i, why in sorted(self.unwatched.items()))})"
                if self.unwatched else "")

    def events(self, host: str) -> list[XidEvent]:
        """The Xid events since start() (or the last call); NotMeasured with `reason` when not watching."""
        if self._event_set is None or self.reason:
            raise NotMeasured(self.reason or "the NVML Xid watch was not started")
        nvml = self._nvml
        events: list[XidEvent] = []
        while True:
            try:
                data = nvml.nvmlEventSetWait_v2(self._event_set, 0)
            except nvml.NVMLError as exc:
                if exc.value == nvml.NVML_ERROR_TIMEOUT:
                    return events
                raise NotMeasured(f"NVML Xid events: {exc}") from None
            try:
                bus, what = normal_bus(text(nvml.nvmlDeviceGetPciInfo(data.device).busId)), "reported by NVML"
            except nvml.NVMLError as exc:  # a GPU fallen off the bus (Xid 79) may no longer answer
                bus, what = "unknown", f"reported by NVML; the GPU did not say its PCI bus: {exc}"
            events.append(XidEvent(host, bus, self.bus_to_index.get(bus), int(data.eventData), what,
                                   uptime_s(), NVML_EVENTS, during_run=True))

    def close(self) -> None:
        if self._event_set is not None:
            with suppress(self._nvml.NVMLError):
                self._nvml.nvmlEventSetFree(self._event_set)
            with suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._event_set = None


@dataclass(frozen=True)
class XidWindow:
    """What a run's start leaves for its passive health test: when it started and the NVML watch."""

    started_s: float  # seconds since boot
    watch: XidWatch


def start_xid_window(nvml: Any | None = None) -> XidWindow:
    return XidWindow(uptime_s(), XidWatch(nvml).start())


def measure_xid_errors(window: XidWindow, location: Location, kmsg: Path = KMSG) -> Measurement:
    """"gpu.xid_errors": Xids in the kernel log since boot, plus the NVML events of the run that the
    log does not show; every event in the details, for the judge. NOT MEASURED only when neither
    source can be read."""
    host = location.host
    try:
        log = read_kernel_log(kmsg)
        logged = parse_kernel_log(log.lines, host, window.watch.bus_to_index, window.started_s)
        log_problem = ""
    except NotMeasured as exc:
        log, logged, log_problem = None, [], str(exc)
    try:
        watched, watch_problem = window.watch.events(host), ""
    except NotMeasured as exc:
        watched, watch_problem = [], str(exc)
    if log is None and watch_problem:
        raise NotMeasured(f"{log_problem}; {watch_problem}")
    events = logged + _not_logged(watched, logged)
    caveats = []
    if log is None:
        caveats.append(f"only the NVML events of this run: {log_problem}")
    elif log.first_s is not None and log.first_s > 1.0:  # the kernel's banner is stamped 0.0
        caveats.append(f"the kernel log holds only from {log.first_s:.0f} s after boot (the ring buffer wrapped)")
    details = {
        "events": [event.to_json() for event in events],
        "kernel_log": log.source if log is not None else log_problem,
        # No NVRM line at all: no NVIDIA driver logged since the buffer's start, so "no Xid" proves little.
        "driver_messages": sum("NVRM:" in line for line in log.lines) if log is not None else None,
        "nvml_events": watch_problem or f"watched {len(window.watch.watched)} GPUs during the run",
        "run_started_s": round(window.started_s, 3),
    }
    if caveats:
        details["caveat"] = "; ".join(caveats)
    return Measurement("gpu.xid_errors", float(len(events)), "count", {}, location, details=details)


def _not_logged(watched: list[XidEvent], logged: list[XidEvent]) -> list[XidEvent]:
    """The NVML events the kernel log does not show (the same GPU and code, during the run)."""
    unmatched = [(e.pci_bus, e.code) for e in logged if e.during_run]
    kept = []
    for event in watched:
        if (event.pci_bus, event.code) in unmatched:
            unmatched.remove((event.pci_bus, event.code))
        else:
            kept.append(event)
    return kept
