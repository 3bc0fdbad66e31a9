"""The collectives nccl-tests measures, as torch.distributed offers them: buffers, launch, busbw factor, exact result.

Each op (all_reduce, all_gather, reduce_scatter, all_to_all, broadcast, the sendrecv ring) is one
`Collective`: its buffer layout, how to launch it on a group, nccl-tests' bus bandwidth factor and the
exact result of known inputs. clusterbench.probes.collectives sweeps and times them.

Definitions (nccl-tests doc/PERFORMANCE.md):
- size is max(send, recv) bytes; the element count is derived from it and, where the op splits a
  buffer among ranks, rounded down to a multiple of the group size (the row shows the rounded size);
- algbw = size / time in GB/s (1e9 bytes); busbw = algbw x the op's factor (see `busbw_factor`).

Correctness (`#wrong`, `count_wrong`): the op runs once more on inputs whose exact result is known
(small integers, sums kept below the largest integer the dtype holds exactly), each rank counts the
elements of its output that differ, and the counts are summed over the group.

Modes follow what torch.distributed offers: all_reduce and broadcast only exist in place (the tensor is
both send and receive buffer, i.e. nccl-tests' in-place), all_to_all and sendrecv only out of place (one
buffer for both would race).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import ClassVar

import torch
import torch.distributed as dist

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


def wait_all(works: Sequence[dist.Work], timeout: timedelta | None) -> None:
    """Wait for each of `works`, each within `timeout` (None: as long as the process group allows)."""
    for work in works:
        if timeout is None:
            work.wait()
        else:
            work.wait(timeout)


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
    wait_all(collective.launch(buffers, view), timeout)
    wrong = torch.tensor([_mismatches(buffers.recv, collective.expected_values(view, count, dtype))],
                         dtype=torch.int64, device=buffers.recv.device)
    wait_all([dist.all_reduce(wrong, op=dist.ReduceOp.SUM, group=view.group, async_op=True)], timeout)
    return int(wrong.item())

