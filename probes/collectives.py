"""Collective bus bandwidth over an initialised torch.distributed process group, as nccl-tests measures it.

`sweep_collective` runs one collective (all_reduce, all_gather, reduce_scatter, all_to_all, broadcast,
or the sendrecv ring) over a size sweep in one mode (out-of-place or in-place) and returns one row a
size with the columns of nccl-tests (size, count, type, redop, root, time, algbw, busbw, #wrong), plus
the Measurements the judge takes. It works on whatever group the caller initialised: Gloo on CPU
tensors, NCCL on CUDA tensors. It knows nothing of pytest or launchers.

Definitions (nccl-tests doc/PERFORMANCE.md):
- size is max(send, recv) bytes; the element count is derived from it and, where the op splits a
  buffer among ranks, rounded down to a multiple of the group size (the row shows the rounded size);
- algbw = size / time in GB/s (1e9 bytes); busbw = algbw x the op's factor (see `busbw_factor`).

Timing, per size: `warmup` untimed ops (at least one: nccl-tests runs one per size and mode), then
`repeats` timed repeats, each a barrier followed by `iterations` back-to-back ops (nccl-tests' -n).
A repeat's time per op is its elapsed time / `iterations`, exactly nccl-tests' time column: on CPU the
host clock around the ops (Gloo ops return complete), on GPU two CUDA events on the current stream
around them (a synchronous collective makes the current stream wait for it, so the end event follows
the last op; the gap a host launch leaves between ops is inside the span, as in nccl-tests). Timing
one op at a time would add a Python call, a wait and an event to every op: tens of microseconds, as
long as a whole 1 MiB NVLink all_reduce. Ranks are combined with MAX per repeat, so the slowest rank
governs (nccl-tests `-a 3`; its default `-a 1` averages ranks, which hides a slow one).

A size's figure is the MEDIAN over the repeats of the time per op (one scheduler hiccup moves one
repeat, not the figure); the repeats' own figures are its raw samples. The table row, the busbw
Measurement judged against the profile and the `<op>.time_us` Measurement are that one figure, so
what is printed, judged, plotted and stored is the same number.

Under TORCH_NCCL_BLOCKING_WAIT=1 every wait blocks the host until its op completes: consecutive ops
no longer overlap a launch with the previous op, which each figure's caveat says.

Correctness (`#wrong`), per size after timing: the op runs once more on inputs whose exact result is
known (small integers, sums kept below the largest integer the dtype holds exactly), each rank counts
the elements of its output that differ, and the counts are summed over the group.

Modes follow what torch.distributed offers: all_reduce and broadcast only exist in place (the tensor is
both send and receive buffer, i.e. nccl-tests' in-place), all_to_all and sendrecv only out of place (one
buffer for both would race). Asking for a mode torch lacks, or one the backend rejects, raises
NotMeasured with the reason; any other error propagates unchanged.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable, ClassVar, Mapping, Sequence

import torch
import torch.distributed as dist

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.progress import StepCallback

GB = 1e9

# The dtypes a collective sweep takes, named as profiles name them, with nccl-tests' type column.
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "fp64": torch.float64,
    "int8": torch.int8,
}
NCCL_TESTS_TYPE_NAMES = {"fp32": "float", "fp16": "half", "bf16": "bfloat16", "fp64": "double", "int8": "int8"}
# The largest integer each dtype represents exactly, with every integer below it: reductions of the
# correctness inputs must stay below it so that any rounding is an error, not arithmetic.
_EXACT_INT_MAX = {"fp32": 2**24, "fp16": 2**11, "bf16": 2**8, "fp64": 2**53, "int8": 127}
# Data-movement checks use a ramp of this period: every value below it is exact in every dtype above.
_MOVE_PERIOD = 127
# Inputs and checks are generated in chunks so that the int64 index tensors of a multi-GiB buffer
# never need several times the buffer's memory.
_CHUNK_ELEMENTS = 1 << 24


def size_sweep(min_bytes: int, max_bytes: int, factor: int = 2) -> list[int]:
    """Message sizes from min_bytes, multiplied by factor, up to max_bytes inclusive (nccl-tests -b/-e/-f)."""
    if min_bytes <= 0 or max_bytes < min_bytes:
        raise ValueError(f"size sweep needs 0 < min_bytes <= max_bytes, got {min_bytes}..{max_bytes}")
    if factor < 2:
        raise ValueError(f"size sweep factor must be an integer >= 2, got {factor}")
    sizes = [min_bytes]
    while sizes[-1] * factor <= max_bytes:
        sizes.append(sizes[-1] * factor)
    return sizes


@dataclass(frozen=True)
class GroupView:
    """The caller's process group as seen from this rank."""

    group: dist.ProcessGroup | None
    rank: int
    size: int
    root: int  # group rank of the root, for ops that have one

    def global_rank(self, group_rank: int) -> int:
        return group_rank if self.group is None else dist.get_global_rank(self.group, group_rank)


@dataclass(frozen=True)
class Buffers:
    """Send and receive tensors of one op; in place, one is a view of the other (or the same tensor)."""

    send: torch.Tensor
    recv: torch.Tensor


IndexFn = Callable[[torch.Tensor], torch.Tensor]  # element indices (int64) -> values (int64)


def _ramp(rank: int, period: int) -> IndexFn:
    return lambda idx: (idx + rank) % period


def _reduce_period(dtype: str, ranks: int) -> int:
    """The ramp period that keeps a sum over `ranks` ramps exact in `dtype`; below 2, no ramp fits."""
    return min(8, _EXACT_INT_MAX[dtype] // ranks + 1)


def _reduce_input(rank: int, ranks: int, dtype: str) -> IndexFn:
    period = _reduce_period(dtype, ranks)
    if period >= 2:
        return _ramp(rank, period)
    # Too many ranks for any ramp: one rank contributes a 1 to each element, so every sum is 1.
    return lambda idx: ((idx + rank) % ranks == 0).to(torch.int64)


def _reduce_expected(ranks: int, dtype: str) -> IndexFn:
    """The exact sum over ranks r of _reduce_input(r)(i), in closed form (one pass, any world size)."""
    period = _reduce_period(dtype, ranks)
    if period < 2:
        return lambda idx: torch.ones_like(idx)
    # sum_{r<n} (i + r) mod k with n = q*k + s and a = i mod k: q full cycles of 0..k-1, then the s
    # residues a, a+1, ... that wrap past k - 1 to 0.
    full_cycles, rest = divmod(ranks, period)
    base = full_cycles * period * (period - 1) // 2 + rest * (rest - 1) // 2

    def expected(idx: torch.Tensor) -> torch.Tensor:
        a = idx % period
        return base + rest * a - period * (a + rest - period).clamp(min=0)

    return expected


class Collective:
    """One collective: its buffer layout, how to launch it, its busbw factor and its exact result."""

    name: ClassVar[str]
    metric_name: ClassVar[str]  # the metric family: "<metric_name>.busbw_gbps"
    redop: ClassVar[str] = "none"
    inplace_modes: ClassVar[tuple[bool, ...]]  # the modes torch.distributed offers for it
    split_among_ranks: ClassVar[bool] = False  # the size is split into one chunk per rank
    has_root: ClassVar[bool] = False

    def busbw_factor(self, ranks: int) -> float:
        raise NotImplementedError

    def elements(self, count: int, ranks: int) -> tuple[int, int]:
        """(send, receive) element counts for nccl-tests' `count` column."""
        raise NotImplementedError

    def buffers(
        self, count: int, view: GroupView, dtype: torch.dtype, device: torch.device, inplace: bool
    ) -> Buffers:
        send_n, recv_n = self.elements(count, view.size)
        if not inplace:
            return Buffers(torch.empty(send_n, dtype=dtype, device=device),
                           torch.empty(recv_n, dtype=dtype, device=device))
        whole = torch.empty(max(send_n, recv_n), dtype=dtype, device=device)
        if send_n == recv_n:
            return Buffers(whole, whole)
        # nccl-tests' in-place: the smaller buffer is the rank's chunk of the larger one.
        chunk = whole.narrow(0, view.rank * min(send_n, recv_n), min(send_n, recv_n))
        return Buffers(chunk, whole) if send_n < recv_n else Buffers(whole, chunk)

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        raise NotImplementedError

    def input_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        """Correctness input of this rank, by element index of the send buffer."""
        return _ramp(view.rank, _MOVE_PERIOD)

    def expected_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        """Exact result on this rank, by element index of the receive buffer."""
        raise NotImplementedError


class AllReduce(Collective):
    name, metric_name, redop, inplace_modes = "all_reduce", "allreduce", "sum", (True,)

    def busbw_factor(self, ranks: int) -> float:
        return 2 * (ranks - 1) / ranks

    def elements(self, count: int, ranks: int) -> tuple[int, int]:
        return count, count

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        return [dist.all_reduce(buffers.recv, op=dist.ReduceOp.SUM, group=view.group, async_op=True)]

    def input_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        return _reduce_input(view.rank, view.size, dtype)

    def expected_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        return _reduce_expected(view.size, dtype)


# torch 2.13 renamed the single-tensor gather/scatter collectives; the old names warn but remain, and
# the project supports torch releases that only have them.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class AllGather(Collective):
    name, metric_name, inplace_modes, split_among_ranks = "all_gather", "allgather", (False, True), True

    def busbw_factor(self, ranks: int) -> float:
        return (ranks - 1) / ranks

    def elements(self, count: int, ranks: int) -> tuple[int, int]:
        return count, count * ranks

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        return [_all_gather_single(buffers.recv, buffers.send, group=view.group, async_op=True)]

    def expected_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        # Chunk j of the output is rank j's input.
        return lambda idx: (idx % count + idx // count) % _MOVE_PERIOD


class ReduceScatter(Collective):
    name, metric_name, redop, inplace_modes = "reduce_scatter", "reducescatter", "sum", (False, True)
    split_among_ranks = True

    def busbw_factor(self, ranks: int) -> float:
        return (ranks - 1) / ranks

    def elements(self, count: int, ranks: int) -> tuple[int, int]:
        return count * ranks, count

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        return [_reduce_scatter_single(buffers.recv, buffers.send, op=dist.ReduceOp.SUM, group=view.group,
                                       async_op=True)]

    def input_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        return _reduce_input(view.rank, view.size, dtype)

    def expected_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        total = _reduce_expected(view.size, dtype)
        return lambda idx: total(idx + view.rank * count)


class AllToAll(Collective):
    name, metric_name, inplace_modes, split_among_ranks = "all_to_all", "alltoall", (False,), True

    def busbw_factor(self, ranks: int) -> float:
        return (ranks - 1) / ranks

    def elements(self, count: int, ranks: int) -> tuple[int, int]:
        return count * ranks, count * ranks

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        return [dist.all_to_all_single(buffers.recv, buffers.send, group=view.group, async_op=True)]

    def expected_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        # Chunk j of the output is chunk `rank` of rank j's input.
        return lambda idx: (view.rank * count + idx % count + idx // count) % _MOVE_PERIOD


class Broadcast(Collective):
    name, metric_name, inplace_modes, has_root = "broadcast", "broadcast", (True,), True

    def busbw_factor(self, ranks: int) -> float:
        return 1.0

    def elements(self, count: int, ranks: int) -> tuple[int, int]:
        return count, count

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        return [dist.broadcast(buffers.recv, src=view.global_rank(view.root), group=view.group, async_op=True)]

    def expected_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        return _ramp(view.root, _MOVE_PERIOD)


class SendRecv(Collective):
    """The ring of nccl-tests' sendrecv: every rank sends to rank+1 and receives from rank-1."""

    name, metric_name, inplace_modes = "sendrecv", "sendrecv", (False,)

    def busbw_factor(self, ranks: int) -> float:
        return 1.0

    def elements(self, count: int, ranks: int) -> tuple[int, int]:
        return count, count

    def launch(self, buffers: Buffers, view: GroupView) -> list[dist.Work]:
        ring_next = view.global_rank((view.rank + 1) % view.size)
        ring_prev = view.global_rank((view.rank - 1) % view.size)
        return dist.batch_isend_irecv([
            dist.P2POp(dist.isend, buffers.send, ring_next, view.group),
            dist.P2POp(dist.irecv, buffers.recv, ring_prev, view.group),
        ])

    def expected_values(self, view: GroupView, count: int, dtype: str) -> IndexFn:
        return _ramp((view.rank - 1) % view.size, _MOVE_PERIOD)


COLLECTIVES: dict[str, Collective] = {
    c.name: c for c in (AllReduce(), AllGather(), ReduceScatter(), AllToAll(), Broadcast(), SendRecv())
}


def busbw_factor(op: str, ranks: int) -> float:
    """nccl-tests' bus bandwidth factor of `op` on `ranks` ranks."""
    return COLLECTIVES[op].busbw_factor(ranks)


@dataclass(frozen=True)
class CollectiveRow:
    """One size of a sweep in one mode: nccl-tests' columns, plus the raw per-repeat times."""

    size_bytes: int  # max(send, recv) bytes after rounding the count
    count: int  # nccl-tests' count column (per-rank chunk for split ops)
    dtype: str  # nccl-tests' type name
    redop: str
    root: int  # -1 for ops without a root, as nccl-tests prints
    time_us: float  # median over repeats of (n back-to-back ops) / n, each repeat the slowest rank's
    algbw_gbps: float
    busbw_gbps: float
    wrong: int  # elements differing from the exact result, summed over ranks
    samples_us: tuple[float, ...]  # time per op of each repeat, the slowest rank's


# How a row's time is made, for anyone reading a figure without this module at hand.
TIMING = ("median over repeats of (n back-to-back ops between two timestamps) / n, "
          "each repeat the slowest rank's (nccl-tests' time column, -a 3)")
BLOCKING_WAIT_VARIABLES = ("TORCH_NCCL_BLOCKING_WAIT", "NCCL_BLOCKING_WAIT")  # the second: torch's old name


@dataclass(frozen=True)
class CollectiveSweep:
    op: str
    dtype: str  # as the caller named it ("bf16"), the params' spelling
    inplace: bool
    backend: str
    ranks: int
    location: Location
    rows: tuple[CollectiveRow, ...]
    iterations: int = 0  # back-to-back ops per repeat (nccl-tests -n)
    repeats: int = 0  # timed repeats per size: one sample each
    caveat: str | None = None  # what qualifies every figure of the sweep, one line

    def measurements(self) -> list[Measurement]:
        """Per size one "<op>.busbw_gbps" and one "<op>.time_us" (the row's figures, a sample a repeat);
        then one "collective.wrong" for the sweep."""
        collective = COLLECTIVES[self.op]
        factor = collective.busbw_factor(self.ranks)
        out = []
        for row in self.rows:
            params = {**self._params(), "size_bytes": row.size_bytes}
            details = self._details(row)
            out.append(Measurement(
                metric=f"{collective.metric_name}.busbw_gbps",
                value=row.busbw_gbps,
                unit="GB/s",
                params=params,
                location=self.location,
                samples=[_busbw(row.size_bytes, t_us, factor) for t_us in row.samples_us],
                details={**details, "time_us": row.time_us, "algbw_gbps": row.algbw_gbps},
            ))
            out.append(Measurement(
                metric=f"{collective.metric_name}.time_us",
                value=row.time_us,
                unit="us",
                params=params,
                location=self.location,
                samples=list(row.samples_us),
                details={**details, "busbw_gbps": row.busbw_gbps, "algbw_gbps": row.algbw_gbps},
            ))
        out.append(Measurement(
            metric="collective.wrong",
            value=float(sum(row.wrong for row in self.rows)),
            unit="count",
            params={**self._params(), "op": self.op},
            location=self.location,
            details={"wrong_by_size": {str(row.size_bytes): row.wrong for row in self.rows}},
        ))
        return out

    def _params(self) -> dict[str, str | int | bool]:
        return {"ranks": self.ranks, "dtype": self.dtype, "inplace": self.inplace, "backend": self.backend}

    def _details(self, row: CollectiveRow) -> dict[str, object]:
        details: dict[str, object] = {
            "op": self.op, "count": row.count, "wrong": row.wrong,
            "iterations_per_repeat": self.iterations, "repeats": self.repeats, "timing": TIMING,
        }
        if self.caveat:
            details["caveat"] = self.caveat
        return details


def blocking_wait_caveat(backend: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The caveat of NCCL figures taken under TORCH_NCCL_BLOCKING_WAIT (None when it is off)."""
    if backend != "nccl":
        return None  # Gloo's ops complete on the host whatever the variable says
    for name in BLOCKING_WAIT_VARIABLES:
        if environ.get(name, "").strip().lower() in ("1", "true", "yes", "y"):
            return (f"{name}={environ[name]}: each op's wait blocks the host until the op completes, so back-to-back "
                    "ops cannot overlap a launch with the previous op; small-message times include a host round "
                    "trip each and read slower than nccl-tests'")
    return None


def _busbw(size_bytes: int, time_us: float, factor: float) -> float:
    return size_bytes / (time_us * 1e-6) / GB * factor if time_us > 0 else 0.0


def _wait(works: Sequence[dist.Work], timeout: timedelta | None) -> None:
    for work in works:
        if timeout is None:
            work.wait()
        else:
            work.wait(timeout)


def _is_unsupported(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, NotImplementedError) or "not supported" in text or "unsupported" in text


class RepeatTimer:
    """Elapsed seconds of one repeat of back-to-back ops: the host clock on CPU, where Gloo ops return
    complete; on GPU two CUDA events on the current stream, which waits for each collective."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self.begin = torch.cuda.Event(enable_timing=True)
            self.end = torch.cuda.Event(enable_timing=True)
        self.started = 0.0

    def start(self) -> None:
        if not self.cuda:
            self.started = time.perf_counter()
            return
        # Nothing queued earlier may sit between the start event and the first op.
        torch.cuda.synchronize(self.device)
        self.begin.record()

    def stop(self) -> float:
        if not self.cuda:
            return time.perf_counter() - self.started
        self.end.record()
        torch.cuda.synchronize(self.device)  # outside the span: the events mark it
        return self.begin.elapsed_time(self.end) / 1e3  # elapsed_time is in milliseconds


def _fill(tensor: torch.Tensor, values: IndexFn) -> None:
    flat = tensor.view(-1)
    for start in range(0, flat.numel(), _CHUNK_ELEMENTS):
        stop = min(start + _CHUNK_ELEMENTS, flat.numel())
        flat[start:stop] = values(torch.arange(start, stop, device=tensor.device)).to(tensor.dtype)


def _mismatches(tensor: torch.Tensor, values: IndexFn) -> int:
    flat = tensor.view(-1)
    wrong = torch.zeros((), dtype=torch.int64, device=tensor.device)
    for start in range(0, flat.numel(), _CHUNK_ELEMENTS):
        stop = min(start + _CHUNK_ELEMENTS, flat.numel())
        expected = values(torch.arange(start, stop, device=tensor.device)).to(tensor.dtype)
        wrong += (flat[start:stop] != expected).sum()
    return int(wrong.item())


def _randomise(tensor: torch.Tensor, generator: torch.Generator) -> None:
    """Seeded random data for the timed ops: zeros would flatter power-limited hardware."""
    if tensor.dtype.is_floating_point:
        tensor.uniform_(generator=generator)
    else:
        tensor.random_(-8, 8, generator=generator)


def count_wrong(
    collective: Collective,
    buffers: Buffers,
    view: GroupView,
    count: int,
    dtype: str,
    timeout: timedelta | None,
) -> int:
    """Run `collective` once on exact inputs; elements of the result that differ, summed over the group."""
    _fill(buffers.send, collective.input_values(view, count, dtype))
    _wait(collective.launch(buffers, view), timeout)
    wrong = torch.tensor([_mismatches(buffers.recv, collective.expected_values(view, count, dtype))],
                         dtype=torch.int64, device=buffers.recv.device)
    _wait([dist.all_reduce(wrong, op=dist.ReduceOp.SUM, group=view.group, async_op=True)], timeout)
    return int(wrong.item())


def sweep_collective(
    op: str | Collective,
    *,
    sizes: Sequence[int],
    dtype: str,
    device: torch.device,
    location: Location,
    inplace: bool,
    group: dist.ProcessGroup | None = None,
    warmup: int = 5,
    iterations: int = 20,
    repeats: int = 5,
    backend: str | None = None,
    root: int = 0,
    timeout: float | None = None,
    seed: int = 1234,
    on_step: StepCallback | None = None,
) -> CollectiveSweep:
    """Measure one collective over `sizes` (bytes) in one mode on every rank of `group`.

    Every rank of the group must call it with the same arguments; every rank gets the same rows, and
    a NotMeasured (a mode torch lacks, an op the backend rejects) is raised on every rank alike.
    `iterations` back-to-back ops make one repeat (nccl-tests -n); each of `repeats` repeats is one
    sample, and a size's figure is their median.
    `timeout` (seconds) bounds each host-side wait (barriers, untimed ops, the check, the rank
    combination). The timed ops on CUDA wait on the stream only, so a hang there is bounded by the
    process group's own timeout (set at init_process_group), not by `timeout`.
    `backend` is what the params report; by default the group's backend.
    `on_step(done, total, detail)`, if given, is called on the group's rank 0 after each size (progress).
    """
    collective = COLLECTIVES[op] if isinstance(op, str) else op
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype '{dtype}' (valid: {', '.join(DTYPES)})")
    if not sizes:
        raise ValueError("sweep_collective needs at least one size")
    if iterations < 1 or repeats < 1:
        raise ValueError(f"iterations and repeats must be >= 1, got {iterations} and {repeats}")
    view = GroupView(group, dist.get_rank(group), dist.get_world_size(group), root if collective.has_root else -1)
    if collective.has_root and not 0 <= root < view.size:
        raise ValueError(f"root {root} is not a rank of the group (0..{view.size - 1})")
    group_backend = str(dist.get_backend(group))
    backend = backend or group_backend
    mode = "in-place" if inplace else "out-of-place"
    if inplace not in collective.inplace_modes:
        raise NotMeasured(f"{collective.name} {mode} is not offered by torch.distributed")
    if collective.name == "sendrecv" and view.size < 2:
        raise NotMeasured("sendrecv needs at least 2 ranks")
    wait_timeout = timedelta(seconds=timeout) if timeout is not None else None
    # On CPU every op returns complete, so the deadline applies to the timed ops too.
    hot_timeout = None if device.type == "cuda" else wait_timeout
    torch_dtype = DTYPES[dtype]
    element_size = torch.empty((), dtype=torch_dtype).element_size()
    generator = torch.Generator(device=device)
    generator.manual_seed(seed + view.rank)
    timer = RepeatTimer(device)

    rows: list[CollectiveRow] = []
    for requested in sizes:
        count = requested // element_size // (view.size if collective.split_among_ranks else 1)
        size_bytes = max(collective.elements(count, view.size)) * element_size
        # nccl-tests prints sizes that round to no element; torch rejects or no-ops on empty
        # tensors, so those sizes (and repeats after rounding) are left out of the sweep.
        if count == 0 or any(row.size_bytes == size_bytes for row in rows):
            continue
        # Timed ops reuse one buffer set, as nccl-tests does; in place, a sum grows by the group size
        # each op and may saturate at inf, which costs a reduction kernel nothing.
        buffers = collective.buffers(count, view, torch_dtype, device, inplace)
        _randomise(buffers.send, generator)
        for attempt in range(max(1, warmup)):
            try:
                _wait(collective.launch(buffers, view), wait_timeout)
            except (RuntimeError, NotImplementedError) as exc:
                if attempt == 0 and _is_unsupported(exc):
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise NotMeasured(f"{collective.name} {mode} {dtype} on {backend}: {reason}") from exc
                raise

        per_op_s = []
        for _ in range(repeats):
            # Every rank starts the repeat together, so rank skew is not charged to the ops.
            _wait([dist.barrier(group=group, async_op=True)], wait_timeout)
            timer.start()
            for _ in range(iterations):
                _wait(collective.launch(buffers, view), hot_timeout)
            per_op_s.append(timer.stop() / iterations)
        slowest = torch.tensor(per_op_s, dtype=torch.float64, device=device)
        _wait([dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=group, async_op=True)], wait_timeout)
        samples_us = tuple(t * 1e6 for t in slowest.tolist())

        wrong = count_wrong(collective, buffers, view, count, dtype, wait_timeout)
        time_us = statistics.median(samples_us)
        algbw = size_bytes / (time_us * 1e-6) / GB if time_us > 0 else 0.0
        rows.append(CollectiveRow(
            size_bytes=size_bytes,
            count=count,
            dtype=NCCL_TESTS_TYPE_NAMES[dtype],
            redop=collective.redop,
            root=view.root,
            time_us=time_us,
            algbw_gbps=algbw,
            busbw_gbps=algbw * collective.busbw_factor(view.size),
            wrong=wrong,
            samples_us=samples_us,
        ))
        del buffers  # free this size's buffers before the next, larger size allocates its own
        if on_step is not None and view.rank == 0:
            row = rows[-1]
            on_step(len(rows), len(sizes), f"{row.size_bytes} B: busbw {row.busbw_gbps:.2f} GB/s, #wrong {row.wrong}")
    return CollectiveSweep(collective.name, dtype, inplace, backend, view.size, location, tuple(rows),
                           iterations=iterations, repeats=repeats, caveat=blocking_wait_caveat(group_backend))
