"""Collective bus bandwidth over an initialised torch.distributed process group, as nccl-tests measures it.

`sweep_collective` runs one collective (all_reduce, all_gather, reduce_scatter, all_to_all, broadcast,
or the sendrecv ring; clusterbench.probes.collective_ops) over a size sweep in one mode (out-of-place
or in-place) and returns one row a size with the columns of nccl-tests (size, count, type, redop,
root, time, algbw, busbw, #wrong), plus the Measurements the judge takes. It works on whatever group
the caller initialised: Gloo on CPU tensors, NCCL on CUDA tensors. It knows nothing of pytest or
launchers.

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

Correctness (`#wrong`), per size after timing: see collective_ops.count_wrong.

Asking for a mode torch.distributed lacks (collective_ops says which it offers), or one the backend rejects,
raises NotMeasured with the reason; any other error propagates unchanged.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from clusterbench.model import Location, Measurement, NotMeasured, ParamValue
from clusterbench.probes.collective_ops import (
    COLLECTIVES,
    DTYPES,
    NCCL_TESTS_TYPE_NAMES,
    Collective,
    GroupView,
    count_wrong,
    wait_all,
)
from clusterbench.progress import StepCallback
from clusterbench.registry import declare_probe, metric

# Every collective sweep yields nccl-tests' two figures at each size: busbw, and the time column
# (both judged at the sweep's largest size unless an expectation names `size_bytes`: a latency
# ceiling names a small one). The scaling and pairwise tests sweep all_reduce and send/recv in
# smaller groups of the same world.
SWEEP_PARAMS = ("size_bytes", "ranks", "dtype", "inplace", "backend")
METRIC_NAMES = tuple(collective.metric_name for collective in COLLECTIVES.values())
PROBE = declare_probe("collectives", per="world", settings=("collective_timeout_s", "local_ranks", "outlier_tolerance"),
                      module=__name__, metrics=[
    *(
        spec
        for name in METRIC_NAMES
        for spec in (
            metric(f"{name}.busbw_gbps", "GB/s", "higher", "network",
                   f"{name} bus bandwidth as nccl-tests defines it (algbw x its busbw factor)", SWEEP_PARAMS,
                   judged_at_max="size_bytes"),
            metric(f"{name}.time_us", "us", "lower", "network",
                   f"{name} time per op as nccl-tests' time column: n back-to-back ops / n, median of repeats",
                   SWEEP_PARAMS, judged_at_max="size_bytes"),
        )
    ),
    metric("collective.wrong", "count", "lower", "network",
           "elements that differ from the exact expected result of a collective (#wrong)",
           ("op", "ranks", "dtype", "inplace", "backend"), must_be_zero=True),
    metric("scaling.allreduce_busbw_gbps", "GB/s", "higher", "network",
           "all_reduce bus bandwidth of a group of `ranks` ranks within one node or across nodes (`span`)",
           ("ranks", "span", "size_bytes", "dtype", "backend", "inplace"), judged_at_max="size_bytes"),
    metric("pairwise.busbw_gbps", "GB/s", "higher", "network",
           "send/recv bus bandwidth between two nodes of a pair (pairwise node test; round 1 or 2)",
           ("round", "size_bytes", "dtype", "backend")),
])

GB = 1e9


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
            params: dict[str, ParamValue] = {**self._params(), "size_bytes": row.size_bytes}
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


def _randomise(tensor: torch.Tensor, generator: torch.Generator) -> None:
    """Seeded random data for the timed ops: zeros would flatter power-limited hardware."""
    if tensor.dtype.is_floating_point:
        tensor.uniform_(generator=generator)
    else:
        tensor.random_(-8, 8, generator=generator)


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
                wait_all(collective.launch(buffers, view), wait_timeout)
            except (RuntimeError, NotImplementedError) as exc:
                if attempt == 0 and _is_unsupported(exc):
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    raise NotMeasured(f"{collective.name} {mode} {dtype} on {backend}: {reason}") from exc
                raise

        per_op_s = []
        for _ in range(repeats):
            # Every rank starts the repeat together, so rank skew is not charged to the ops.
            wait_all([dist.barrier(group=group, async_op=True)], wait_timeout)
            timer.start()
            for _ in range(iterations):
                wait_all(collective.launch(buffers, view), hot_timeout)
            per_op_s.append(timer.stop() / iterations)
        slowest = torch.tensor(per_op_s, dtype=torch.float64, device=device)
        wait_all([dist.all_reduce(slowest, op=dist.ReduceOp.MAX, group=group, async_op=True)], wait_timeout)
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
