"""Run a Workload with fio and read back what fio measured.

One fio process per phase, all jobs reported as a group (`group_reporting`: `iops`, `bw_bytes` and
the latency percentiles are the group's; `iops_mean` would be a per-job average, axboe/fio#519, so
it is not used). Reads are time-based over files fio lays out first, after `ramp_time`.

Writes run in up to three fio processes. A sizing write for `ramp_s` (unmeasured; it also warms the
device up) gives the rate from which the measured write's size is chosen to last about `runtime_s`.
The measured write then goes through its files exactly once, each block carrying a crc32c header,
and a `verify_only` pass reads every block back. Size-bound because fio cannot verify a write that
its runtime cut short (see workloads.py); in a separate process so that the verify reads stay out of
the write figures, and so that a test can corrupt data between the two to prove it is caught.

Everything fio writes (data files and IOPS logs) lands in the workspace: `--directory` for data and
fio's working directory for the logs, each name claimed before fio starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from clusterbench.probes.storage.errors import FioUnavailable, StorageIntegrityError, StorageRunError
from clusterbench.probes.storage.figures import INTERVAL_S, AfterWrite, IOFigures
from clusterbench.probes.storage.workloads import Workload
from clusterbench.probes.storage.workspace import Workspace

# The slowest storage we are prepared to wait for while fio lays out or verifies files, before
# calling it hung; far below any disk or shared filesystem a training cluster would use.
SLOWEST_BPS = 20e6
MIN_MEASURED_BLOCKS = 64  # a measured write shorter than this is mostly start-up and fsync
# How fio's verify code words a mismatch ("crc32c: verify failed at file ...", "verify: bad magic
# header ...", "verify: bad header offset ...").
VERIFY_FAILURE = re.compile(r"verify failed|verify: bad|bad magic")
FIO_PERCENTILES = {"p50": "50.000000", "p99": "99.000000", "p99.9": "99.900000"}


@dataclass(frozen=True)
class FioOutcome:
    """What one fio process returned."""

    command: list[str]
    returncode: int
    report: dict[str, Any] | None  # the parsed JSON document, None when fio wrote none
    stderr: str

    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}, nothing on stderr"


def parse_json_output(stdout: str) -> dict[str, Any] | None:
    """fio's JSON document. fio may print error lines ("fio: pid=..., err=84/...") before it."""
    start = re.search(r"^\{", stdout, re.MULTILINE)
    if start is None:
        return None
    try:
        return json.loads(stdout[start.start():])
    except json.JSONDecodeError:
        return None


def read_iops_logs(paths: Sequence[Path], ddir: int) -> list[float]:
    """Group IOPS per averaging window: the jobs' `write_iops_log` files summed window by window.

    Each line is "time_ms, iops, direction, block size, offset[, priority]"; direction 0 is read,
    1 write. Windows past the end of the shortest job's log are dropped (not every job was running).
    """
    per_job: list[list[float]] = []
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            return []
        rows = [line.split(",") for line in text.splitlines() if line.strip()]
        per_job.append([float(row[1]) for row in rows if int(row[2]) == ddir])
    if not per_job:
        return []
    windows = min(len(values) for values in per_job)
    return [sum(values[i] for values in per_job) for i in range(windows)]


def _milliseconds(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


class FioEngine:
    """The fio binary on PATH, checked to run, and the jobs it is asked to run."""

    def __init__(self, binary: str, version: str) -> None:
        self.binary = binary
        self.version = version
        self._io_uring: bool | None = None

    @classmethod
    def find(cls) -> FioEngine:
        binary = shutil.which("fio")
        if binary is None:
            raise FioUnavailable("fio is not installed (not on PATH); install fio, e.g. apt-get install fio")
        try:
            done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise FioUnavailable(f"{binary} does not run: {exc}") from None
        version = done.stdout.strip()
        major = re.match(r"fio-(\d+)", version)
        if done.returncode != 0 or major is None:
            raise FioUnavailable(f"{binary} --version says {version or done.stderr.strip()!r}; "
                                 "expected fio-3.x or later")
        if int(major.group(1)) < 3:  # latencies in ns (clat_ns) came to the JSON with fio 3.0
            raise FioUnavailable(f"{binary} is {version}; clusterbench needs fio 3.0 or later")
        return cls(binary, version)

    # --- command lines ---------------------------------------------------------------------------

    def command(self, workload: Workload, workspace: Workspace, *, ioengine: str, seed: int,
                phase: str = "measure") -> list[str]:
        """The fio command line of one phase of `workload`: "measure"; for writes also "size" (the
        time-capped write that sizes the measured one) and "verify" (the read-back)."""
        w = workload
        cmd = [
            self.binary, f"--name={w.name}", f"--directory={workspace.path}",
            "--filename_format=$jobname.$jobnum.$filenum",
            f"--rw={w.rw}", f"--bs={w.block_size}", f"--size={w.size_per_job}", f"--numjobs={w.numjobs}",
            f"--iodepth={w.iodepth}", f"--ioengine={ioengine}", f"--direct={int(w.direct)}",
            f"--randseed={seed}", "--invalidate=1", "--unlink=0", "--group_reporting", "--output-format=json",
        ]
        if not w.is_write:
            cmd += ["--time_based", f"--runtime={_milliseconds(w.runtime_s)}"]
            if w.ramp_s:
                cmd.append(f"--ramp_time={_milliseconds(w.ramp_s)}")
        elif phase == "size":
            return cmd + [f"--runtime={_milliseconds(w.ramp_s)}", "--end_fsync=1"]
        else:
            cmd += ["--verify=crc32c", "--verify_fatal=1", "--verify_state_save=0"]
            if phase == "verify":
                return cmd + ["--verify_only"]
            cmd += ["--do_verify=0", "--end_fsync=1"]
        return cmd + [f"--write_iops_log={w.name}", f"--log_avg_msec={round(INTERVAL_S * 1000)}"]

    def _claim_outputs(self, workload: Workload, workspace: Workspace) -> list[str]:
        names = workload.file_names() + [f"{workload.name}_iops.{job + 1}.log" for job in range(workload.numjobs)]
        for name in names:
            workspace.file(name)
        return names

    # --- running ---------------------------------------------------------------------------------

    def execute(self, command: list[str], workspace: Workspace, timeout_s: float) -> FioOutcome:
        """Run one fio process in the workspace; a hang becomes StorageRunError after `timeout_s`.

        fio forks a process per job, so it runs in a process group of its own, and every way out
        short of fio finishing (timeout, Ctrl-C, SIGTERM) kills the whole group before the
        workspace is removed: no job outlives the measurement or writes after cleanup.
        """
        process = subprocess.Popen(
            command, cwd=workspace.path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError):  # fio may have ended just then
                os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            if isinstance(exc, subprocess.TimeoutExpired):
                raise StorageRunError(
                    f"fio did not finish within {timeout_s:g} s in {workspace.path}; the filesystem may be "
                    f"hung: {shlex.join(command)}"
                ) from None
            raise
        return FioOutcome(command, process.returncode, parse_json_output(stdout), stderr)

    def ioengine_for(self, workload: Workload, workspace: Workspace) -> tuple[str, Workload]:
        """fio's ioengine for `workload`, and the workload as that engine will really run it.

        libaio for direct I/O (the reference jobs use it); io_uring for buffered I/O, where libaio
        would silently block on every I/O; psync when neither applies, with iodepth 1 since a
        synchronous engine ignores queue depth and the figure must not claim one it did not have.
        """
        if workload.iodepth == 1:
            return "psync", workload
        if workload.direct:
            return "libaio", workload
        if self._io_uring_works(workspace):
            return "io_uring", workload
        return "psync", replace(workload, iodepth=1)

    def _io_uring_works(self, workspace: Workspace) -> bool:
        if self._io_uring is None:
            probe = Workload("uring-probe", "read", 4096, iodepth=2, numjobs=1, size_per_job=65536, runtime_s=0.05,
                             direct=False)
            names = self._claim_outputs(probe, workspace)
            try:
                outcome = self.execute(self.command(probe, workspace, ioengine="io_uring", seed=1), workspace,
                                       timeout_s=30)
                self._io_uring = (outcome.returncode == 0 and outcome.report is not None
                          and outcome.report["jobs"][0]["error"] == 0)
            finally:
                for name in names:
                    workspace.remove(name)
        return self._io_uring

    def run(
        self, workload: Workload, workspace: Workspace, *, ioengine: str | None = None,
        after_write: AfterWrite | None = None
    ) -> IOFigures:
        """Run `workload` in `workspace` and return fio's figures; its files are gone afterwards.

        `ioengine` forces one (the fidelity tool's psync comparison); `after_write` is called with the
        data files between a write and its verification (tests corrupt data there).
        """
        if ioengine is None:
            ioengine, workload = self.ioengine_for(workload, workspace)
        names = self._claim_outputs(workload, workspace)
        seed = secrets.randbelow(2**31) + 1  # fresh offsets each run; the verify pass replays the same ones
        try:
            if workload.is_write and workload.ramp_s:
                workload = self._sized(workload, workspace, ioengine, seed)
            command = self.command(workload, workspace, ioengine=ioengine, seed=seed)
            outcome = self.execute(command, workspace, self._timeout(workload))
            stats = self._checked_direction(outcome, workload, "write" if workload.is_write else "read")
            verified = None
            if workload.is_write:
                if after_write is not None:
                    after_write([workspace.path / name for name in workload.file_names()])
                verified = self._verify(workload, workspace, ioengine, seed, written=int(stats["io_bytes"]))
            logs = [workspace.path / f"{workload.name}_iops.{job + 1}.log" for job in range(workload.numjobs)]
            return IOFigures(
                workload=workload,
                engine="fio",
                ioengine=ioengine,
                iops=float(stats["iops"]),
                bandwidth_bps=float(stats["bw_bytes"]),
                total_ios=int(stats["total_ios"]),
                seconds=stats["runtime"] / 1000,
                interval_iops=read_iops_logs(logs, ddir=1 if workload.is_write else 0),
                latency_ns=self._latency(stats, workload),
                verified_bytes=verified,
                command=shlex.join(command),
            )
        finally:
            for name in names:
                workspace.remove(name)

    @staticmethod
    def _timeout(workload: Workload) -> float:
        """Generous: a run past it is hung, not slow. Writes are size-bound, so their time is sized
        from the ramp's rate; the factor 10 covers a device that slows down once its cache fills."""
        return 60 + 10 * (workload.runtime_s + workload.ramp_s) + workload.footprint / SLOWEST_BPS

    def _sized(self, workload: Workload, workspace: Workspace, ioengine: str, seed: int) -> Workload:
        """The write workload with files sized to take about `runtime_s` at the rate of a `ramp_s`
        unmeasured write (at least MIN_MEASURED_BLOCKS blocks, at most the planned size)."""
        command = self.command(workload, workspace, ioengine=ioengine, seed=seed, phase="size")
        stats = self._checked_direction(self.execute(command, workspace, self._timeout(workload)), workload, "write")
        per_job = int(stats["bw_bytes"] * workload.runtime_s / workload.numjobs)
        per_job = max(MIN_MEASURED_BLOCKS * workload.block_size, per_job // workload.block_size * workload.block_size)
        return replace(workload, size_per_job=min(per_job, workload.size_per_job))

    def _verify(self, workload: Workload, workspace: Workspace, ioengine: str, seed: int, written: int) -> int:
        command = self.command(workload, workspace, ioengine=ioengine, seed=seed, phase="verify")
        outcome = self.execute(command, workspace, self._timeout(workload))
        verified = int(self._checked_direction(outcome, workload, "read")["io_bytes"])
        if verified != written:
            raise StorageIntegrityError(
                f"fio {workload.name}: read back {verified} of the {written} bytes written in {workspace.path}; "
                "the rest could not be verified"
            )
        return verified

    @staticmethod
    def _checked_direction(outcome: FioOutcome, workload: Workload, direction: str) -> dict[str, Any]:
        """The job group's read or write statistics, or the error that stopped fio, in one line."""
        job = outcome.report["jobs"][0] if outcome.report and outcome.report.get("jobs") else None
        code = job["error"] if job is not None else None
        if job is None or code or outcome.returncode != 0:
            verify_lines = [line.strip() for line in outcome.stderr.splitlines() if VERIFY_FAILURE.search(line)]
            if code == errno.EILSEQ or verify_lines:  # fio's verify failure is EILSEQ (err=84)
                detail = verify_lines[0] if verify_lines else outcome.last_error_line()
                raise StorageIntegrityError(f"fio {workload.name}: data read back differs from "
                                            f"what was written: {detail}")
            reason = os.strerror(code) if code else f"exit status {outcome.returncode}"
            raise StorageRunError(f"fio {workload.name} failed: {reason}: {outcome.last_error_line()}")
        stats = job[direction]
        if not stats["total_ios"]:
            raise StorageRunError(f"fio {workload.name} completed no I/O: {outcome.last_error_line()}")
        return stats

    @staticmethod
    def _latency(stats: dict[str, Any], workload: Workload) -> dict[str, float]:
        clat = stats["clat_ns"]
        percentiles = clat.get("percentile", {})
        missing = [key for key in FIO_PERCENTILES.values() if key not in percentiles]
        if missing:
            raise StorageRunError(f"fio {workload.name}: JSON lacks clat percentiles {', '.join(missing)}")
        return {"mean": float(clat["mean"]), **{name: float(percentiles[key]) for name, key in FIO_PERCENTILES.items()}}
