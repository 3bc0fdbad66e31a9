"""GPU-to-GPU copy bandwidth within a node (GB/s, 1e9 bytes per second): nvbandwidth's copy matrix.

Every ordered pair (src, dst) of the node's GPUs is measured twice:

- unidirectional: src's buffer copied into dst's, one pair at a time (nvbandwidth's
  device_to_device_memcpy_write_ce: the copy is queued on the source GPU, whose copy engine pushes
  the data; torch's cross-device copy_ is a cudaMemcpyAsync, peer-to-peer where CUDA allows it);
- bidirectional: src -> dst and dst -> src at once, each on a stream of its own GPU, both released
  together. The figure is the two directions' bandwidths summed, as the published bidirectional
  figures are (nvbandwidth on H200: 396.4 GB/s one way, 783.7 both ways). nvbandwidth's current CE
  test reports the measured stream alone; that figure is kept too, in details["forward_gbps"].

Timing follows nvbandwidth: a spin kernel holds the stream while the host queues the start event,
`copies` copies and the end event, so the host's queueing cost is outside the timing; then the
events' elapsed time is read. One warm-up sample first (it also enables peer access and faults the
buffers in), then `samples` timed ones; the median is the figure and every sample is kept. A sample
counts each byte once: buffer_bytes x copies / seconds.

The timing itself is behind `CopyTimer`, so the matrix, the warm-up, the medians and the link
details are tested on a CPU with a fake node; `CudaCopyTimer` is the real one. The path each pair
takes (NVLink, PCIe, host memory) comes from probes.p2p_links.

The probe runs on each node's first local rank and measures every GPU that rank sees: a launcher
that hides the others behind a per-rank CUDA_VISIBLE_DEVICES leaves it one, and the reason says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes.devices import LocalDevice
from clusterbench.probes.p2p_links import Pair, PairLink, read_pair_links, too_few_gpus_reason
from clusterbench.probes.stats import summarize
from clusterbench.registry import declare_probe, metric

METRIC = "p2p.copy_gbps"
UNIDIRECTIONAL, BIDIRECTIONAL = "unidirectional", "bidirectional"
DIRECTIONS = (UNIDIRECTIONAL, BIDIRECTIONAL)

PROBE = declare_probe("p2p", per="node", module=__name__, metrics=[
    metric(METRIC, "GB/s", "higher", "memory",
           "GPU-to-GPU copy bandwidth within a node, per ordered pair; bidirectional: both directions at once, "
           "summed", params=("src", "dst", "direction"), compared_across_locations=False),
])

UNIT = "GB/s"
MiB = 1 << 20
FLOAT_BYTES = 4
# How long the spin kernel holds a stream while the host queues a sample's copies: 20 M GPU clock
# cycles, ~10 ms at 2 GHz, well above the ~2 ms the host takes to queue 2 x 16 copies and their events.
SPIN_CYCLES = 20_000_000


@dataclass(frozen=True)
class CopyPlan:
    buffer_bytes: int  # nvbandwidth's --bufferSize: 512 MiB by default
    copies: int  # copies per sample, between one pair of events (nvbandwidth's loop count, 16)
    samples: int  # timed samples; the median is the figure (nvbandwidth: 3)
    warmup_copies: int  # copies of the one untimed sample before them


def copy_plan(quick: bool) -> CopyPlan:
    # 512 MiB moves in ~1.3 ms over NVLink4 and ~10 ms over PCIe Gen5: a sample of 16 is long
    # against the events' microsecond resolution everywhere, and 56 pairs x 2 take seconds.
    if quick:
        return CopyPlan(buffer_bytes=128 * MiB, copies=8, samples=3, warmup_copies=2)
    return CopyPlan(buffer_bytes=512 * MiB, copies=16, samples=5, warmup_copies=4)


class CopyTimer(Protocol):
    """Times copies between two GPUs of this node; seconds for `copies` back-to-back copies."""

    def one_way(self, src: int, dst: int, copies: int) -> float:
        """src's buffer into dst's, `copies` times, alone."""
        ...

    def both_ways(self, a: int, b: int, copies: int) -> tuple[float, float]:
        """a -> b and b -> a at once, `copies` times each; the seconds of each direction's stream."""
        ...


def measure_node(*, quick: bool, location: Location) -> list[Measurement]:
    """The copy matrix of every GPU this process sees (the node's first local rank calls it)."""
    from clusterbench.probes.devices import local_devices

    gpus = [d for d in local_devices() if d.kind == "cuda"]
    if len(gpus) < 2:
        raise NotMeasured(too_few_gpus_reason(len(gpus)))
    plan = copy_plan(quick)
    links = read_pair_links({gpu.index: gpu.uuid for gpu in gpus})
    try:
        with CudaCopyTimer.over(gpus, plan.buffer_bytes) as timer:
            measurements = measure_copy_matrix(gpus, timer=timer, links=links, plan=plan, location=location)
    except RuntimeError as exc:
        if "busy or unavailable" not in str(exc):
            raise
        # EXCLUSIVE_PROCESS compute mode: the other local ranks hold their GPUs, and one process
        # cannot open a context beside theirs. Not the node's fault: said, not failed.
        raise NotMeasured(f"a GPU refused this rank a CUDA context ({str(exc).splitlines()[0]}): in an "
                          "exclusive-process compute mode the copy matrix needs a run in which one process "
                          "drives every GPU of the node (plain pytest on the node)") from None
    peak = max(timer.peak_bytes.values(), default=0)  # of the GPUs' peaks: each holds the same two buffers
    for m in measurements:
        m.details["peak_device_memory_bytes"] = peak
    return measurements


def measure_copy_matrix(
    gpus: Sequence[LocalDevice],
    *,
    timer: CopyTimer,
    links: Mapping[Pair, PairLink],
    plan: CopyPlan,
    location: Location,
) -> list[Measurement]:
    """One figure per ordered pair and direction: the unidirectional matrix, then the bidirectional one."""
    by_index = {gpu.index: gpu for gpu in gpus}
    pairs = [(a.index, b.index) for a in gpus for b in gpus if a.index != b.index]
    figures = [_one_way(pair, timer, plan) for pair in pairs]
    figures += [_both_ways(pair, timer, plan) for pair in pairs]
    return [
        _measurement(figure, by_index, links.get(figure.pair), plan, location) for figure in figures
    ]


@dataclass(frozen=True)
class _PairFigure:
    pair: Pair
    direction: str
    samples: list[float]  # GB/s per sample
    forward: list[float] | None = None  # bidirectional only: each direction's own GB/s per sample
    reverse: list[float] | None = None


def _gbps(plan: CopyPlan, seconds: float) -> float:
    return plan.buffer_bytes * plan.copies / seconds / 1e9


def _one_way(pair: Pair, timer: CopyTimer, plan: CopyPlan) -> _PairFigure:
    timer.one_way(*pair, plan.warmup_copies)
    samples = [_gbps(plan, timer.one_way(*pair, plan.copies)) for _ in range(plan.samples)]
    return _PairFigure(pair, UNIDIRECTIONAL, samples)


def _both_ways(pair: Pair, timer: CopyTimer, plan: CopyPlan) -> _PairFigure:
    timer.both_ways(*pair, plan.warmup_copies)
    forward, reverse = [], []
    for _ in range(plan.samples):
        there, back = timer.both_ways(*pair, plan.copies)
        forward.append(_gbps(plan, there))
        reverse.append(_gbps(plan, back))
    return _PairFigure(pair, BIDIRECTIONAL, [f + r for f, r in zip(forward, reverse)], forward, reverse)


def _measurement(figure: _PairFigure, gpus: Mapping[int, LocalDevice], link: PairLink | None, plan: CopyPlan,
                 location: Location) -> Measurement:
    src, dst = (gpus[i] for i in figure.pair)
    details: dict[str, Any] = {
        "src_device": src.torch_device, "dst_device": dst.torch_device,
        "src_name": src.name, "dst_name": dst.name, "src_uuid": src.uuid, "dst_uuid": dst.uuid,
        "gpus_on_node": len(gpus),
        "buffer_bytes": plan.buffer_bytes, "copies_per_sample": plan.copies, "warmup_copies": plan.warmup_copies,
        "counting": "buffer_bytes x copies / seconds between CUDA events, each byte once",
        **(link.to_details() if link is not None else {"path": "unknown"}),
    }
    if figure.direction == BIDIRECTIONAL:
        details["counting"] = "both directions at once, each stream's bytes / its own time, summed"
        details["forward_gbps"] = figure.forward
        details["reverse_gbps"] = figure.reverse
    return Measurement(
        metric=METRIC,
        value=summarize(figure.samples).median,
        unit=UNIT,
        params={"src": figure.pair[0], "dst": figure.pair[1], "direction": figure.direction},
        location=location,
        samples=figure.samples,
        details=details,
    )


class CudaCopyTimer:
    """Copies between the node's GPUs, timed with CUDA events on streams of their own.

    Each GPU holds one source buffer (random data) and one destination buffer for the whole matrix.
    torch's cross-device copy_ runs on the source GPU's current stream and makes the destination
    GPU's current stream wait for it; so while a direction's copies are queued, the destination's
    current stream is an idle one of its own: otherwise the two directions of a bidirectional pair
    would wait on each other and run one after the other.
    """

    def __init__(self, gpus: Sequence[LocalDevice], buffer_bytes: int) -> None:
        import torch

        self._torch = torch
        count = buffer_bytes // FLOAT_BYTES
        self._send = {g.index: torch.rand(count, device=g.torch_device) for g in gpus}
        self._receive = {g.index: torch.empty(count, device=g.torch_device) for g in gpus}
        self._copying = {g.index: torch.cuda.Stream(device=g.index) for g in gpus}
        self._idle = {g.index: torch.cuda.Stream(device=g.index) for g in gpus}
        self.peak_bytes: dict[str, int] = {}

    @classmethod
    @contextlib.contextmanager
    def over(cls, gpus: Sequence[LocalDevice], buffer_bytes: int) -> Iterator[CudaCopyTimer]:
        """The timer, its buffers freed and each GPU's cached memory handed back when the block ends."""
        import torch

        for gpu in gpus:
            torch.cuda.reset_peak_memory_stats(gpu.index)
        timer = None
        try:
            timer = cls(gpus, buffer_bytes)
            yield timer
        finally:
            if timer is not None:
                timer.peak_bytes = {g.torch_device: int(torch.cuda.max_memory_allocated(g.index)) for g in gpus}
                timer.release()
            for gpu in gpus:
                with torch.cuda.device(gpu.index):
                    torch.cuda.empty_cache()

    def release(self) -> None:
        self._send.clear()
        self._receive.clear()

    def one_way(self, src: int, dst: int, copies: int) -> float:
        stream = self._copying[src]
        start, end = self._events(), self._events()
        self._spin(stream)
        start.record(stream)
        for _ in range(copies):
            self._copy(src, dst)
        end.record(stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in ms

    def both_ways(self, a: int, b: int, copies: int) -> tuple[float, float]:
        there, back = self._copying[a], self._copying[b]
        starts, ends = (self._events(), self._events()), (self._events(), self._events())
        self._spin(there)
        starts[0].record(there)
        back.wait_event(starts[0])  # the reverse stream is released with the forward one
        starts[1].record(back)
        for _ in range(copies):
            self._copy(a, b)
            self._copy(b, a)
        ends[0].record(there)
        ends[1].record(back)
        ends[0].synchronize()
        ends[1].synchronize()
        return starts[0].elapsed_time(ends[0]) / 1e3, starts[1].elapsed_time(ends[1]) / 1e3

    def _copy(self, src: int, dst: int) -> None:
        torch = self._torch
        with torch.cuda.stream(self._copying[src]), torch.cuda.stream(self._idle[dst]):
            self._receive[dst].copy_(self._send[src], non_blocking=True)

    def _spin(self, stream: Any) -> None:
        sleep: Callable[[int], None] | None = getattr(self._torch.cuda, "_sleep", None)
        if sleep is not None:  # without it the first copies' queueing is timed: a few us of ~20 ms
            with self._torch.cuda.stream(stream):
                sleep(SPIN_CYCLES)

    def _events(self) -> Any:
        return self._torch.cuda.Event(enable_timing=True)
