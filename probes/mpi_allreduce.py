"""MPI_Allreduce bus bandwidth through mpi4py, timed as OSU's osu_allreduce: a second opinion on the fabric.

Independent of torch: it runs wherever an MPI job runs (`mpiexec -n N python -m pytest ...`, or this
module's command line below), and compares with nccl-tests through the same busbw formula.

Method (OSU micro-benchmarks c/mpi/collective/blocking/osu_allreduce.c, mpi4py demo/osu_bw.py):
- uppercase buffer methods (`Allreduce` on NumPy arrays, near C speed), never the pickling lowercase ones;
- per size: a Barrier, `skip` untimed iterations then `iterations` timed ones (1000/100 up to 8 KiB,
  100/10 above; quick mode 100/10 and 20/2), each timing only the MPI_Allreduce with MPI.Wtime and
  followed by an untimed Barrier;
- latency = the mean across ranks of each rank's mean time (OSU's default "Avg Latency"); the
  per-iteration samples are each the mean across ranks of that iteration;
- busbw = bytes / latency x 2(n-1)/n in GB/s (1e9), nccl-tests' all_reduce factor.
After timing, one Allreduce on small integers whose sum is exact counts wrong elements (#wrong); the
inputs are written and the sums compared in chunks, so the check costs the two message buffers plus a
few MiB, not a multiple of the message.

MPI starts as OSU and IMB start it, without MPI_THREAD_MULTIPLE: mpi4py's default level is MULTIPLE,
under which MPICH takes a lock around every call and its progress loop, and the figure read 1.16-2.19x
IMB-MPI1's and osu_allreduce's at 1-16 MiB (issue 13). The level MPI actually provided is in each
figure's details, with a caveat when it is MULTIPLE or SERIALIZED (MPI was imported before this probe,
e.g. by the launcher detection).

Host sizes stop at 64 MiB by default (MPI_HOST_MAX_BYTES): the GPU sweep goes to 4 GiB, but host
allreduce bandwidth has levelled off long before (OSU stops at 1 MiB, IMB at 4 MiB), 64 MiB is past any
last-level cache so the largest size still measures memory and fabric, and 8 ranks a node then hold
about 1 GiB of buffers in all.

    mpiexec -n 2 python -m clusterbench.probes.mpi_allreduce --max-bytes 1048576 --quick

prints, on rank 0, one JSON object: {"measurements": [...]} or {"not_measured": "<reason>"}.
"""

from __future__ import annotations

import argparse
import json
import mmap
import socket
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.registry import declare_probe, metric

PROBE = declare_probe("mpi_allreduce", per="world", module=__name__, metrics=[
    metric("mpi.allreduce_busbw_gbps", "GB/s", "higher", "network",
           "MPI_Allreduce bus bandwidth through mpi4py buffer methods, OSU-style timing",
           ("size_bytes", "ranks", "dtype"), judged_at_max="size_bytes"),
])

GB = 1e9
MiB = 1 << 20
MPI_HOST_MAX_BYTES = 64 * MiB  # see the module docstring for why 64 MiB
# The probes call MPI from the main thread only, while torch's and pytest's threads run beside it: that is
# MPI_THREAD_FUNNELED. MPICH and Open MPI take no per-call lock below MULTIPLE, so it costs what OSU's
# and IMB's plain MPI_Init (SINGLE) costs; SINGLE would promise no other thread exists, untrue here.
MPI_THREAD_LEVEL = "funneled"
# Thread levels a figure may carry without a caveat: no lock around each MPI call.
UNLOCKED_THREAD_LEVELS = ("single", "funneled")
CHECK_CHUNK_ELEMENTS = 1 << 16  # the check's working set: ~32 B an element at peak (int64 temporaries), ~2 MiB
OSU_LARGE_MESSAGE = 8192  # bytes; OSU's LARGE_MESSAGE_SIZE, where iteration counts drop
# (iterations, skip) for small and large messages, full and quick.
OSU_ITERATIONS = {False: ((1000, 100), (100, 10)), True: ((100, 10), (20, 2))}
# MPI has no standard half-precision type, so only these dtypes; the value is the largest integer the
# dtype holds exactly, which bounds the correctness inputs.
DTYPES: dict[str, tuple[type, int]] = {"fp32": (np.float32, 2**24), "fp64": (np.float64, 2**53)}


def osu_sizes(min_bytes: int, max_bytes: int) -> list[int]:
    """OSU's sweep: powers of two from min_bytes (rounded up to one) to max_bytes."""
    if min_bytes <= 0 or max_bytes < min_bytes:
        raise ValueError(f"OSU sweep needs 0 < min_bytes <= max_bytes, got {min_bytes}..{max_bytes}")
    size = 1 << (min_bytes - 1).bit_length()
    sizes = []
    while size <= max_bytes:
        sizes.append(size)
        size *= 2
    return sizes


def osu_iterations(size_bytes: int, quick: bool) -> tuple[int, int]:
    """(iterations, skip) for a message of `size_bytes`."""
    small, large = OSU_ITERATIONS[quick]
    return small if size_bytes <= OSU_LARGE_MESSAGE else large


@dataclass(frozen=True)
class MpiAllreduceRow:
    size_bytes: int
    count: int
    iterations: int
    skip: int
    latency_us: float  # mean across ranks of each rank's mean
    min_latency_us: float  # the fastest rank's mean (OSU -f)
    max_latency_us: float  # the slowest rank's mean
    busbw_gbps: float
    wrong: int  # elements of the exact check that differ, summed over ranks
    samples_us: tuple[float, ...]  # per iteration, the mean across ranks


@dataclass(frozen=True)
class MpiAllreduceResult:
    ranks: int
    dtype: str
    location: Location
    rows: tuple[MpiAllreduceRow, ...]
    thread_level: str = "unknown"  # what MPI.Query_thread() said: single, funneled, serialized, multiple
    library: str = ""  # the first line of MPI_Get_library_version
    skipped_sizes: tuple[int, ...] = ()  # sizes asked for above the host cap, not run

    def caveat(self) -> str:
        if self.thread_level in UNLOCKED_THREAD_LEVELS:
            return ""
        return (f"MPI started at MPI_THREAD_{self.thread_level.upper()}, not single/funneled as OSU and IMB start it: "
                "MPICH locks every call, so the figure is not comparable with theirs "
                "(mpi4py was imported before the probe)")

    def measurements(self) -> list[Measurement]:
        """One "mpi.allreduce_busbw_gbps" a size, and one "collective.wrong" for the sweep."""
        factor = 2 * (self.ranks - 1) / self.ranks
        caveat = self.caveat()
        out = [
            Measurement(
                metric="mpi.allreduce_busbw_gbps",
                value=row.busbw_gbps,
                unit="GB/s",
                params={"size_bytes": row.size_bytes, "ranks": self.ranks, "dtype": self.dtype},
                location=self.location,
                samples=[row.size_bytes / (t * 1e-6) / GB * factor for t in row.samples_us if t > 0],
                details={
                    "latency_us": row.latency_us,
                    "min_latency_us": row.min_latency_us,
                    "max_latency_us": row.max_latency_us,
                    "iterations": row.iterations,
                    "skip": row.skip,
                    "wrong": row.wrong,
                    "timing": "OSU: mean across ranks of per-rank mean MPI_Allreduce time (MPI.Wtime)",
                    "mpi_thread_level": self.thread_level,
                    "mpi_library": self.library,
                    **({"caveat": caveat} if caveat else {}),
                },
            )
            for row in self.rows
        ]
        out.append(Measurement(
            metric="collective.wrong",
            value=float(sum(row.wrong for row in self.rows)),
            unit="count",
            params={"op": "MPI_Allreduce", "ranks": self.ranks, "dtype": self.dtype, "backend": "mpi"},
            location=self.location,
            details={
                "wrong_by_size": {str(row.size_bytes): row.wrong for row in self.rows},
                "sizes_above_host_cap": list(self.skipped_sizes),
            },
        ))
        return out


def import_mpi() -> Any:
    """mpi4py's MPI module; when this is the process's first import of it, MPI starts at MPI_THREAD_LEVEL.

    mpi4py initialises MPI on the first `from mpi4py import MPI`, at mpi4py.rc.thread_level (default
    "multiple"); once imported, the level is fixed for the process, and Query_thread() tells which it is.
    """
    if "mpi4py.MPI" not in sys.modules:
        import mpi4py

        mpi4py.rc.thread_level = MPI_THREAD_LEVEL
    from mpi4py import MPI

    return MPI


def thread_level_name(MPI: Any) -> str:
    """The level MPI provided this process, as mpi4py.rc spells it."""
    names = {MPI.THREAD_SINGLE: "single", MPI.THREAD_FUNNELED: "funneled",
             MPI.THREAD_SERIALIZED: "serialized", MPI.THREAD_MULTIPLE: "multiple"}
    return names.get(MPI.Query_thread(), "unknown")


def host_buffer(count: int, np_dtype: Any) -> np.ndarray:
    """An array in ordinary pages, as OSU's and IMB's buffers are (malloc / posix_memalign).

    NumPy advises huge pages (MADV_HUGEPAGE) for arrays of 4 MiB and more; where transparent huge
    pages are in "madvise" mode that made MPI_Allreduce at 16 MiB read ~10% below OSU and IMB here
    (1.33-1.38 against 1.40-1.61 GB/s with the advice off, alternating runs). An anonymous mmap,
    page-aligned and unadvised, is what the C benchmarks measure with.
    """
    nbytes = count * np.dtype(np_dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype=np_dtype, count=count)


def host_sizes(sizes: Sequence[int], max_bytes: int) -> tuple[list[int], list[int]]:
    """(the sizes to run, the ones above max_bytes left out): host buffers, not the GPU sweep's."""
    return [s for s in sizes if s <= max_bytes], [s for s in sizes if s > max_bytes]


def _world(comm: Any = None) -> tuple[Any, Any]:
    """(the MPI module, the communicator) or NotMeasured with why MPI cannot be used here."""
    try:
        MPI = import_mpi()
    except (ImportError, RuntimeError) as exc:  # RuntimeError: mpi4py present but no MPI library
        raise NotMeasured(f"mpi4py is not usable: {exc}") from exc
    if not MPI.Is_initialized() or MPI.Is_finalized():
        raise NotMeasured("MPI is not initialised in this process")
    comm = comm if comm is not None else MPI.COMM_WORLD
    if comm.Get_size() < 2:
        raise NotMeasured(f"the MPI world has {comm.Get_size()} rank; launch with mpiexec -n N, N >= 2")
    return MPI, comm


def _check_period(ranks: int, exact_max: int) -> int:
    """k of the ramps (i + rank) mod k: small, and n ranks' sum of values below k stays exact."""
    return max(2, min(8, exact_max // ranks + 1))


def _check_input(rank: int, period: int, start: int, count: int) -> np.ndarray:
    """This rank's check input for elements start .. start + count - 1."""
    return (np.arange(start, start + count, dtype=np.int64) + rank) % period


def _exact_sum(ranks: int, period: int, start: int, count: int) -> np.ndarray:
    """The exact sum over ranks of the check inputs for elements start .. start + count - 1."""
    # sum_{r<n} (i + r) mod k with n = q*k + s and a = i mod k: q full cycles of 0..k-1, then the s
    # residues a, a+1, ... that wrap past k - 1 to 0.
    full_cycles, rest = divmod(ranks, period)
    a = np.arange(start, start + count, dtype=np.int64) % period
    total = full_cycles * period * (period - 1) // 2 + rest * (rest - 1) // 2 + rest * a
    total -= period * np.maximum(a + rest - period, 0)
    return total


def _exact_sum_inputs(rank: int, ranks: int, count: int, exact_max: int,
                      start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(this rank's input, the exact sum over ranks): ramps (i + rank) mod k whose sum stays exact."""
    period = _check_period(ranks, exact_max)
    return _check_input(rank, period, start, count), _exact_sum(ranks, period, start, count)


def _chunks(count: int, chunk: int) -> list[tuple[int, int]]:
    return [(start, min(chunk, count - start)) for start in range(0, count, chunk)]


def fill_check_input(send: np.ndarray, rank: int, ranks: int, exact_max: int,
                     chunk: int = CHECK_CHUNK_ELEMENTS) -> None:
    """Write this rank's check input into `send`, a chunk at a time (no message-sized temporaries)."""
    period = _check_period(ranks, exact_max)
    for start, n in _chunks(send.size, chunk):
        send[start:start + n] = _check_input(rank, period, start, n)


def count_wrong(recv: np.ndarray, ranks: int, exact_max: int, chunk: int = CHECK_CHUNK_ELEMENTS) -> int:
    """Elements of `recv` that differ from the exact sum of every rank's check input, a chunk at a time."""
    period = _check_period(ranks, exact_max)
    return sum(int(np.count_nonzero(recv[start:start + n] != _exact_sum(ranks, period, start, n)))
               for start, n in _chunks(recv.size, chunk))


def measure_mpi_allreduce(
    sizes: Sequence[int],
    *,
    dtype: str = "fp32",
    quick: bool = False,
    comm: Any = None,
    location: Location | None = None,
    seed: int = 1234,
    max_bytes: int = MPI_HOST_MAX_BYTES,
) -> MpiAllreduceResult:
    """Time MPI_Allreduce (SUM) at each of `sizes` bytes up to `max_bytes` on every rank of `comm`
    (default COMM_WORLD); larger sizes are left out (the result lists them).

    Every rank must call it with the same arguments; every rank gets the same rows.
    """
    MPI, comm = _world(comm)
    if dtype not in DTYPES:
        raise NotMeasured(f"MPI_Allreduce probe has no dtype '{dtype}' (MPI has: {', '.join(DTYPES)})")
    sizes, skipped = host_sizes(sizes, max_bytes)
    if not sizes:
        raise NotMeasured(f"every size asked for is above the host cap of {max_bytes} bytes")
    np_dtype, exact_max = DTYPES[dtype]
    rank, ranks = comm.Get_rank(), comm.Get_size()
    location = location or Location(socket.gethostname(), rank, "cpu")
    element_size = np.dtype(np_dtype).itemsize
    random = np.random.default_rng(seed + rank)
    rows = []
    for size in sizes:
        count = size // element_size
        if count == 0:
            continue
        size_bytes = count * element_size
        iterations, skip = osu_iterations(size_bytes, quick)
        send, recv = host_buffer(count, np_dtype), host_buffer(count, np_dtype)
        send[:] = random.random(count, dtype=np_dtype)  # random, not zeros; overwritten by the check below
        times = np.empty(iterations)
        comm.Barrier()
        for i in range(skip + iterations):
            start = MPI.Wtime()
            comm.Allreduce(send, recv, op=MPI.SUM)
            elapsed = MPI.Wtime() - start
            if i >= skip:
                times[i - skip] = elapsed
            comm.Barrier()
        per_iteration = np.empty_like(times)
        comm.Allreduce(times, per_iteration, op=MPI.SUM)
        per_iteration /= ranks
        rank_mean = float(times.mean())

        # One Allreduce at the full size (the algorithm MPI picks depends on it), inputs in place of the timed data.
        fill_check_input(send, rank, ranks, exact_max)
        comm.Allreduce(send, recv, op=MPI.SUM)
        wrong = comm.allreduce(count_wrong(recv, ranks, exact_max), op=MPI.SUM)

        latency = statistics.fmean(per_iteration.tolist())
        rows.append(MpiAllreduceRow(
            size_bytes=size_bytes,
            count=count,
            iterations=iterations,
            skip=skip,
            latency_us=latency * 1e6,
            min_latency_us=comm.allreduce(rank_mean, op=MPI.MIN) * 1e6,
            max_latency_us=comm.allreduce(rank_mean, op=MPI.MAX) * 1e6,
            busbw_gbps=size_bytes / latency / GB * 2 * (ranks - 1) / ranks,
            wrong=wrong,
            samples_us=tuple(t * 1e6 for t in per_iteration.tolist()),
        ))
    library = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
    return MpiAllreduceResult(ranks, dtype, location, tuple(rows), thread_level_name(MPI), library, tuple(skipped))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="MPI_Allreduce busbw, OSU-style, as JSON on rank 0")
    parser.add_argument("--min-bytes", type=int, default=8)
    parser.add_argument("--max-bytes", type=int, default=1 << 20,
                        help="the largest size; asked for here, it may exceed the library's 64 MiB host cap")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--quick", action="store_true", help="OSU's osu_bw iteration counts (100/10, 20/2)")
    args = parser.parse_args(argv)
    try:
        sizes = osu_sizes(args.min_bytes, args.max_bytes)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        result = measure_mpi_allreduce(sizes, dtype=args.dtype,
                                       quick=args.quick, max_bytes=max(args.max_bytes, MPI_HOST_MAX_BYTES))
    except NotMeasured as exc:
        print(json.dumps({"not_measured": str(exc)}))
        return 0
    if result.location.rank == 0:
        print(json.dumps({"measurements": [m.to_json() for m in result.measurements()]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
