"""Run a function on N local ranks of a fresh process group, with a deadline and nothing left behind.

When plain `pytest` runs on one host, the collective probes still need a world of several ranks. This
module starts them with torch's own multiprocessing, has them rendezvous over loopback on a port the
parent picked, runs `fn(rank, world_size, *args)` in each and returns the results as a list indexed
by rank.

Children never fork from the caller: a CUDA context or Gloo threads in it must not leak into them.
The default start method is "forkserver": children fork from a clean server process that imported
torch once, so a run starts in well under a second instead of every rank importing torch afresh
(seconds per run with "spawn", more on a loaded host, which eats into every deadline). "spawn" is
available for platforms without forkserver.

Never hang, never leave a process behind:
- each child reports on its own pipe (not one shared queue), so the parent knows which rank spoke and
  can wait on the pipes and the process sentinels together;
- a child that raises reports "<Type>: <first line>" and exits; its traceback goes to its stderr;
- a child that dies (non-zero exit, signal) or does not report by the deadline fails the run: the
  parent gives the others a short grace to report their own failure (a peer's death usually makes
  their collective fail at once), then terminates and kills every child still running and raises
  LocalRanksError naming each rank and why;
- the same cleanup runs on KeyboardInterrupt or any other exception in the parent, and each child asks
  the kernel to kill it if its parent process dies first (Linux; under forkserver that is the server,
  which exits with the caller), so no rank outlives the run.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing

# After the first failure, how long the other ranks get to report theirs before they are stopped.
FAILURE_GRACE_S = 3.0
# After every rank reported, how long each gets to tear its process group down and exit.
EXIT_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


class LocalRanksError(RuntimeError):
    """Some local ranks did not deliver a result. `failures` maps each such rank to why, first cause first."""

    def __init__(self, failures: dict[int, str], world_size: int) -> None:
        self.failures = failures
        self.world_size = world_size
        detail = "; ".join(f"rank {rank} {why}" for rank, why in failures.items())
        super().__init__(f"{len(failures)} of {world_size} local ranks failed: {detail}")


@dataclass(frozen=True)
class _Report:
    ok: bool
    value: Any  # the result, or "<Type>: <first line>" when not ok


def free_port() -> int:
    """A TCP port free on loopback now (the OS may hand it out again, so use it at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _describe(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(
    rank: int,
    world_size: int,
    port: int,
    backend: str,
    collective_timeout_s: float,
    fn: Callable[..., Any],
    args: Sequence[Any],
    channel: Connection,
) -> None:
    _die_with_parent()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world_size))
    if backend == "gloo":
        # Without it Gloo may pick an interface that routes loopback traffic badly (pytorch/gloo #335).
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    exit_code = 0
    try:
        device_id = None
        if backend == "nccl":
            # One GPU a rank; naming it at init also tells NCCL's barrier which device to use.
            device_id = torch.device("cuda", rank % torch.cuda.device_count())
            torch.cuda.set_device(device_id)
        dist.init_process_group(backend, rank=rank, world_size=world_size, device_id=device_id,
                                timeout=datetime.timedelta(seconds=collective_timeout_s))
        report = _Report(True, fn(rank, world_size, *args))
    except BaseException as exc:  # noqa: BLE001 - every failure must reach the parent, KeyboardInterrupt too
        traceback.print_exc()
        report, exit_code = _Report(False, _describe(exc)), 1
    try:
        channel.send(report)
    except Exception as exc:  # an unpicklable result: say so rather than die silently
        channel.send(_Report(False, f"result could not be sent to the parent: {_describe(exc)}"))
        exit_code = 1
    channel.close()
    if dist.is_initialized():
        dist.destroy_process_group()
    sys.exit(exit_code)


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}"
    if exitcode:
        return f"exited with code {exitcode} without reporting"
    return "exited without reporting"


def _stop(processes: Sequence[Any]) -> None:
    """Terminate, then kill, every child still running, and reap them all."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=2.0)
        if process.is_alive():
            process.kill()
            process.join()


def run_local_ranks(
    fn: Callable[..., Any],
    world_size: int,
    *,
    args: Sequence[Any] = (),
    backend: str = "gloo",
    timeout: float = 120.0,
    collective_timeout: float | None = None,
    start_method: str = "forkserver",
) -> list[Any]:
    """Run `fn(rank, world_size, *args)` on `world_size` local ranks; results indexed by rank.

    `fn` and `args` must be picklable (a module-level function). `timeout` (seconds) is the deadline
    for the whole run, counted from the moment every rank is started; `collective_timeout` is the
    process group's own timeout (default: `timeout`). `start_method` is "forkserver" or "spawn".
    Raises LocalRanksError if any rank fails, dies or misses the deadline.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
    context = torch.multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # Takes effect when the server first starts (once per process); later calls reuse it.
        context.set_forkserver_preload(["torch.distributed", __name__])
    port = free_port()
    processes: list[Any] = []
    channels: dict[int, Connection] = {}
    try:
        for rank in range(world_size):
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(
                target=_child,
                args=(rank, world_size, port, backend, collective_timeout or timeout, fn, tuple(args), writer),
                name=f"clusterbench-local-rank-{rank}",
            )
            process.start()
            writer.close()  # the child holds the only writer, so its death reads as end-of-file here
            processes.append(process)
            channels[rank] = reader
        # Counted from here so that starting the fork server, once per process, is not charged to a run.
        deadline = time.monotonic() + timeout
        results, failures = _collect(processes, channels, deadline, timeout)
        if failures:
            raise LocalRanksError(failures, world_size)
        for process in processes:
            process.join(timeout=max(0.0, min(EXIT_GRACE_S, deadline - time.monotonic())))
        return [results[rank] for rank in range(world_size)]
    finally:
        _stop(processes)
        for reader in channels.values():
            reader.close()


def _collect(
    processes: Sequence[Any], channels: dict[int, Connection], deadline: float, timeout: float
) -> tuple[dict[int, Any], dict[int, str]]:
    """Wait for every rank's report; stop waiting at the deadline or shortly after the first failure."""
    results: dict[int, Any] = {}
    failures: dict[int, str] = {}
    pending = set(channels)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        ready = wait([channels[r] for r in pending] + [processes[r].sentinel for r in pending], timeout=remaining)
        for rank in sorted(pending):
            channel, process = channels[rank], processes[rank]
            if channel in ready or process.sentinel in ready:
                try:
                    report = channel.recv() if channel.poll() else None
                except EOFError:  # the child closed its pipe without a report: it died
                    report = None
                if report is not None:
                    pending.discard(rank)
                    if report.ok:
                        results[rank] = report.value
                    else:
                        failures[rank] = f"raised {report.value}"
                else:  # end of file on the pipe, or the process ended: it died without a report
                    process.join(timeout=1.0)
                    pending.discard(rank)
                    failures[rank] = (_exit_reason(process.exitcode) if process.exitcode is not None
                                      else "closed its report channel without reporting")
        if failures and pending:
            deadline = min(deadline, time.monotonic() + FAILURE_GRACE_S)
    first = next(iter(failures), None)
    for rank in sorted(pending):
        failures[rank] = (f"was stopped {FAILURE_GRACE_S:g} s after rank {first} failed" if first is not None
                          else f"did not report within the {timeout:g} s deadline")
    return results, failures
