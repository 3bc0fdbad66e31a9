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

GPUs in a compute mode that allows one CUDA context at a time (EXCLUSIVE_PROCESS) or none
(PROHIBITED): the caller (a pytest session whose GEMM and memory tests ran on every GPU) holds a
context on each GPU it has used, and a process cannot give its CUDA contexts back while torch lives
in it. A child would then fail to open its own, after the deadline on the other ranks. So with NCCL
the compute mode is read first (NVML) and such a run is NOT MEASURED at once, with the reason and
what to do instead (a launcher, one process a GPU, never shares a GPU between two processes).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing

from clusterbench import progress
from clusterbench.model import NotMeasured
from clusterbench.runners.devices import bind_gpu, local_gpu

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


def _holds_cuda_context(index: int) -> bool:
    """Whether this process holds a CUDA context on device `index` (its primary context, which torch uses)."""
    if not torch.cuda.is_initialized():
        return False
    has_primary_context = getattr(torch._C, "_cuda_hasPrimaryContext", None)
    # A torch without the query: assume the worst once CUDA is initialised here.
    return True if has_primary_context is None else bool(has_primary_context(index))


_COMPUTE_MODE_NAMES = ("DEFAULT", "EXCLUSIVE_THREAD", "PROHIBITED", "EXCLUSIVE_PROCESS")


def _compute_modes(indices: Sequence[int], nvml: Any | None) -> dict[int, str]:
    """The compute mode ("DEFAULT", "EXCLUSIVE_PROCESS", ...) of each CUDA device in `indices` that NVML
    can be asked about; paired with its NVML GPU by UUID, since the two number GPUs differently."""
    from clusterbench.probes.health.gpu_pairing import pair_devices, read_gpu_ids
    from clusterbench.probes.health.nvml_session import nvml_session

    uuids = {f"cuda:{i}": str(getattr(torch.cuda.get_device_properties(i), "uuid", "") or "") or None
             for i in indices}
    modes: dict[int, str] = {}
    with nvml_session(nvml) as session:
        names = {getattr(session, f"NVML_COMPUTEMODE_{name}"): name for name in _COMPUTE_MODE_NAMES}
        pairing = pair_devices(uuids, read_gpu_ids(session))
        for index in indices:
            paired = pairing.indices.get(f"cuda:{index}")
            if paired is None:
                continue  # a MIG slice or an unreadable GPU: nothing to tell from here
            try:
                mode = session.nvmlDeviceGetComputeMode(session.nvmlDeviceGetHandleByIndex(paired))
            except session.NVMLError:
                continue
            modes[index] = names.get(mode, f"mode {mode}")
    return modes


def cuda_context_conflict(world_size: int, nvml: Any | None = None) -> str | None:
    """Why `world_size` local ranks could not each open a CUDA context on their GPU, or None when they can
    (or when NVML cannot tell: then a child's own error says it). `nvml` is for tests (a fake pynvml)."""
    gpus = [local_gpu(rank) for rank in range(world_size)]
    try:
        modes = _compute_modes(sorted(set(gpus)), nvml)
    except NotMeasured:
        return None  # no NVML here: no compute mode to read
    remedy = ("run under a launcher instead (torchrun --nproc-per-node=N -m pytest ..., one process a GPU), "
              "or set the compute mode to DEFAULT (nvidia-smi -i N -c DEFAULT)")
    for index, mode in sorted(modes.items()):
        name = f"GPU {index} ({torch.cuda.get_device_name(index)})"
        if mode == "PROHIBITED":
            return f"{name} is in compute mode PROHIBITED: no process may open a CUDA context on it"
        if mode not in ("EXCLUSIVE_PROCESS", "EXCLUSIVE_THREAD"):
            continue
        if _holds_cuda_context(index):
            return (f"{name} is in compute mode {mode} and this process (pid {os.getpid()}) already holds a CUDA "
                    f"context on it from earlier tests, which it cannot release: local ranks cannot open theirs; "
                    f"{remedy}")
        if gpus.count(index) > 1:
            return (f"{name} is in compute mode {mode} and {gpus.count(index)} of the {world_size} local ranks "
                    f"would share it ({torch.cuda.device_count()} GPUs); {remedy}")
    return None


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
    if rank == 0:
        # Rank 0's sweep steps travel up the result pipe, ahead of its result, to the parent's reporter.
        progress.install(progress.ForwardingReporter(channel.send))
    try:
        device_id = None
        if backend == "nccl":
            device_id = bind_gpu(rank)
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
    Raises LocalRanksError if any rank fails, dies or misses the deadline, and NotMeasured, before
    starting any, when the GPUs' compute mode would refuse the ranks their CUDA contexts (NCCL).
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if start_method not in ("forkserver", "spawn"):
        raise ValueError(f"start_method must be 'forkserver' or 'spawn', got {start_method!r}")
    if backend == "nccl" and (conflict := cuda_context_conflict(world_size)):
        raise NotMeasured(conflict)
    # Any: typeshed's BaseContext declares no Process; each start method's context adds its own.
    context: Any = torch.multiprocessing.get_context(start_method)
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


def _show_progress(step: progress.Step) -> None:
    reporter = progress.current()
    if reporter is not None:
        reporter.step(step)


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
                if isinstance(report, progress.Step):  # a finished sweep step, not the rank's result
                    _show_progress(report)
                    continue
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
