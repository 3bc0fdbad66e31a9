"""Dense matmul throughput (TFLOP/s) of one device in one dtype, measured the way mamf-finder does.

For each shape of a sweep: `torch.mm(A[MxK], B, out=C)` with B laid out as mamf-finder lays it out
(`randn(n, k).t()`: a KxN view of an NxK row-major tensor, so cuBLAS runs the same transposes) on
random operands (randn: zeros draw less power and score higher), warm-up iterations, then timed
iterations each bracketed by its own device events, with the last-level cache flushed and C
refilled with random data before each one, untimed. fp8 runs `torch._scaled_mm` into an fp8 C, as
mamf-finder does. FLOPs = 2*M*N*K; TFLOP/s are decimal (1e12). The headline is the best shape's
median: the "maximum achievable matmul FLOPS" for that dtype, a figure a well-tuned workload reaches.

On a GPU both sweeps include the shapes where mamf-finder's published long searches peaked on that
accelerator (gemm_shapes.py), so the figure and the published maximum it is judged against stand
on the same shape; the details say which search the sweep was and whether it had those shapes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from clusterbench.hardware import match_accelerator
from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes import timing
from clusterbench.probes.devices import LocalDevice, reason_unsupported
from clusterbench.probes.gemm_shapes import MAMF_DTYPES, PublishedBestShape, published_best_shapes
from clusterbench.probes.stats import summarize
from clusterbench.progress import StepCallback
from clusterbench.registry import declare_probe, metric

PROBE = declare_probe("gemm", per="device", module=__name__, metrics=[
    metric("gemm.tflops", "TFLOP/s", "higher", "compute",
           "dense matmul throughput: median per-iteration 2*M*N*K / time of the best shape of the sweep", ("dtype",)),
])

METRIC = "gemm.tflops"
UNIT = "TFLOP/s"

# tf32 is not a storage type: operands are fp32 and the matmul is told it may use TF32 tensor cores.
TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# torch 2.5 gave _scaled_mm its present contract (pytorch/pytorch#128683): scales required, one
# tensor returned. Before it, the op returned (out, amax), its out= form also needed out_amax, and
# every call computed amax of the output in the GEMM's epilogue.
SCALED_MM_MIN_TORCH = (2, 5)


@dataclass(frozen=True)
class GemmShape:
    """C[MxN] = A[MxK] @ B[KxN]."""

    m: int
    n: int
    k: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.n * self.k


@dataclass(frozen=True)
class GemmSweep:
    """The shapes a measurement tries and how hard it times each one."""

    name: str  # "quick" or "full"
    shapes: tuple[GemmShape, ...]
    warmup: int  # untimed iterations per shape
    iterations: int  # timed iterations per shape
    soak_seconds: float  # untimed load before the sweep, so a cold device's boost does not flatter it
    # The accelerator's published long-search best shapes, by the dtype they were published for;
    # every one of them is also in `shapes`.
    published: dict[str, PublishedBestShape] | None = None


def _squares(*sizes: int) -> tuple[GemmShape, ...]:
    return tuple(GemmShape(s, s, s) for s in sizes)


def _with_published(shapes: tuple[GemmShape, ...], published: dict[str, PublishedBestShape]) -> tuple[GemmShape, ...]:
    """`shapes` and then each published best shape not already among them.

    Every dtype's sweep gets all of the accelerator's published shapes, not only its own dtype's:
    fp16 has no published row but runs on the same tensor cores as bf16, and two more shapes cost a
    second at most.
    """
    extra = [GemmShape(p.m, p.n, p.k) for p in published.values()]
    return shapes + tuple(dict.fromkeys(s for s in extra if s not in shapes))


def accelerator_best_shapes(device: LocalDevice) -> dict[str, PublishedBestShape]:
    """The published long-search best shapes of `device`'s accelerator model; none for a CPU or an
    accelerator the hardware table does not know."""
    if device.kind != "cuda":
        return {}
    spec = match_accelerator(device.name)
    return published_best_shapes(spec.key if spec else None)


def gemm_sweep(device: LocalDevice, dtype: str, quick: bool) -> GemmSweep:
    """The sweep for `device` and `dtype`: GPU shapes big enough to fill the chip, CPU shapes that
    finish in seconds (bf16/fp16 run ~50x slower than fp32 on CPUs without AMX, hence smaller)."""
    if device.kind == "cuda":
        published = accelerator_best_shapes(device)
        if quick:
            # Fewer iterations and a shorter soak than the full sweep, but the same published
            # shapes: a quick run is still judged on the shape its target was measured at.
            shapes = _with_published(_squares(4096, 8192, 12288), published)
            return GemmSweep("quick", shapes, warmup=10, iterations=30, soak_seconds=2.0, published=published)
        # mamf-finder's quick range (m swept with n = k = 4096), plus large squares and the published
        # shapes, and its 50/100 iterations per shape. Its 30 s warm-up is cut to 10 s a dtype: the
        # suite measures five dtypes on every GPU one after another, so the device is hot after the first.
        shapes = tuple(GemmShape(m, 4096, 4096) for m in range(1024, 20480 + 1, 1024)) + _squares(8192, 12288, 16384)
        return GemmSweep("full", _with_published(shapes, published), warmup=50, iterations=100, soak_seconds=10.0,
                         published=published)
    half = dtype in ("bf16", "fp16")
    if quick:
        shapes = _squares(128, 256) if half else _squares(256, 512, 1024)
        return GemmSweep("quick", shapes, warmup=2, iterations=5, soak_seconds=0.0)
    sizes = (128, 256, 384, 512) if half else (256, 512, 768, 1024, 1536, 2048)
    return GemmSweep("full", _squares(*sizes), warmup=5, iterations=20, soak_seconds=2.0)


def sweep_shapes(device: LocalDevice, dtype: str, quick: bool) -> list[GemmShape]:
    return list(gemm_sweep(device, dtype, quick).shapes)


class GemmKernel:
    """The operands and output of one GEMM, allocated once on the device; calling it runs the GEMM.

    Laid out as mamf-finder lays them out, so a figure compares with its published ones: A is an
    MxK row-major tensor, B the transpose of an NxK row-major one (column-major KxN: the layout
    torch._scaled_mm requires and nn.Linear's weight has), C an MxN tensor of the operands' dtype.
    """

    def __init__(self, device: LocalDevice, dtype: str, shape: GemmShape):
        self.fp8 = dtype == "fp8"
        m, n, k = shape.m, shape.n, shape.k
        where = device.torch_device
        # fp8 tensors cannot be drawn from directly: draw in fp32 and convert, as mamf-finder does.
        stored = _fp8_dtype(device) if self.fp8 else TORCH_DTYPES[dtype]
        drawn = torch.float32 if self.fp8 else stored
        self.a = torch.randn(m, k, device=where, dtype=drawn).to(stored)
        self.b = torch.randn(n, k, device=where, dtype=drawn).to(stored).t()
        self.out = torch.empty(m, n, device=where, dtype=stored)
        # What C is refilled from before each iteration (untimed), so the GEMM's writes flip bits
        # and draw real power; a copy rather than a fresh draw, because fp8 has no random fill.
        self.fresh_output = torch.randn(m, n, device=where, dtype=drawn).to(stored)
        if self.fp8:
            self.scale = torch.ones((), device=where, dtype=torch.float32)
        self.reset_output()

    def __call__(self) -> None:
        if self.fp8:
            # The torch >= 2.5 signature (gemm_unsupported_reason refuses older torch).
            torch._scaled_mm(self.a, self.b, self.scale, self.scale, out_dtype=self.out.dtype, out=self.out)
        else:
            torch.mm(self.a, self.b, out=self.out)

    def reset_output(self) -> None:
        """Refill C with random values, so every iteration's writes flip bits and draw real power."""
        self.out.copy_(self.fresh_output)


def torch_release(version: str) -> tuple[int, int]:
    """(major, minor) of a torch version string: "2.10.1+cu128" -> (2, 10). Compared as numbers:
    as strings, "2.10" sorts before "2.5"."""
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None:
        raise ValueError(f"not a torch version: {version!r}")
    return int(found.group(1)), int(found.group(2))


def gemm_unsupported_reason(device: LocalDevice, dtype: str) -> str | None:
    """Why a GEMM in `dtype` cannot be measured on `device` with this torch (one line), or None.

    The device's own limits come first (devices.reason_unsupported). Then fp8 below torch 2.5 is
    refused rather than run through the old _scaled_mm signature: that op returned the output's
    amax too, so its GEMM did a reduction inside the timed kernel that mamf-finder's figures never
    include (mamf-finder refuses fp8 below 2.5 too; the published FP8 rows are from torch 2.7+), and
    its figure would be judged against a maximum measured another way. Handling both signatures
    would buy a figure nobody can compare.
    """
    reason = reason_unsupported(device, dtype)
    if reason is not None or dtype != "fp8":
        return reason
    if torch_release(torch.__version__) < SCALED_MM_MIN_TORCH:
        return (f"fp8 GEMM needs torch >= {'.'.join(map(str, SCALED_MM_MIN_TORCH))}: torch {torch.__version__}'s "
                "_scaled_mm returns (out, amax) and computes amax on every call, which mamf-finder's figures exclude")
    return None


def _fp8_dtype(device: LocalDevice) -> torch.dtype:
    # MI300-series GPUs (gfx94x) implement the FNUZ variant of e4m3; NVIDIA and later AMD parts, OCP e4m3.
    # (devices.reason_unsupported lets fp8 through on ROCm only for gfx942 and gfx950.)
    if device.runtime == "rocm" and (device.arch or "").startswith("gfx94"):
        return torch.float8_e4m3fnuz
    return torch.float8_e4m3fn


@contextlib.contextmanager
def matmul_precision(device: LocalDevice, dtype: str) -> Iterator[None]:
    """Make fp32 mean IEEE fp32 and tf32 mean TF32 while measuring, whatever the process set.

    torch.set_float32_matmul_precision("high"/"medium") would otherwise quietly turn an fp32 figure
    into a TF32 (GPU) or bf16 (CPU, oneDNN) one. The previous setting is restored on exit.
    """
    if dtype not in ("fp32", "tf32"):
        yield
        return
    backend = torch.backends.cuda.matmul if device.kind == "cuda" else getattr(torch.backends.mkldnn, "matmul", None)
    value: str | bool  # the new API takes a word, the legacy flag a bool
    if backend is not None and hasattr(backend, "fp32_precision"):  # torch >= 2.9
        attribute, value = "fp32_precision", "tf32" if dtype == "tf32" else "ieee"
    elif device.kind == "cuda":  # older torch: the legacy flag (mixing the two APIs is an error in new torch)
        attribute, value = "allow_tf32", dtype == "tf32"
    else:
        yield
        return
    previous = getattr(backend, attribute)
    setattr(backend, attribute, value)
    try:
        yield
    finally:
        setattr(backend, attribute, previous)


@dataclass
class ShapeResult:
    shape: GemmShape
    tflops: list[float]  # one figure per timed iteration

    @property
    def median(self) -> float:
        return summarize(self.tflops).median

    def to_json(self) -> dict[str, float | int]:
        summary = summarize(self.tflops)
        return {
            "m": self.shape.m,
            "n": self.shape.n,
            "k": self.shape.k,
            "median": summary.median,
            "mean": summary.mean,
            "max": summary.max,
            "iterations": summary.n,
        }


def measure_shape(
    device: LocalDevice,
    dtype: str,
    shape: GemmShape,
    *,
    warmup: int,
    iterations: int,
    flush: timing.CacheFlush | None,
) -> ShapeResult:
    """Time one GEMM shape; `flush=None` leaves the cache warm between iterations (not the default)."""
    kernel = GemmKernel(device, dtype, shape)

    def before_each() -> None:
        kernel.reset_output()
        if flush is not None:
            flush()  # after the reset, so C does not start in cache either

    with matmul_precision(device, dtype):
        seconds = timing.time_iterations(
            kernel, device=device, warmup=warmup, iterations=iterations, before_each=before_each
        )
    return ShapeResult(shape, [shape.flops / s / 1e12 for s in seconds])


def measure_gemm(
    device: LocalDevice, dtype: str, *, quick: bool, location: Location, flush_cache: bool = True,
    on_step: StepCallback | None = None,
) -> Measurement:
    """GEMM throughput of `device` in `dtype` over a shape sweep; NotMeasured where it cannot run.

    `on_step(done, total, detail)`, if given, is called after each shape (progress on a long sweep).

    The sweep's device memory is handed back to the driver when it ends (a node's GPUs are measured
    one after another, and the copy and collective tests that follow need it), and its peak is in
    details["peak_device_memory_bytes"].
    """
    reason = gemm_unsupported_reason(device, dtype)
    if reason is not None:
        raise NotMeasured(reason)
    with timing.device_memory_phase(device) as memory:
        measurement = _measure_sweep(device, dtype, gemm_sweep(device, dtype, quick), location, flush_cache, on_step)
    memory.record_in(measurement.details)
    return measurement


def _measure_sweep(
    device: LocalDevice, dtype: str, sweep: GemmSweep, location: Location, flush_cache: bool,
    on_step: StepCallback | None = None,
) -> Measurement:
    if sweep.soak_seconds > 0:
        biggest = max(sweep.shapes, key=lambda s: s.flops)
        with matmul_precision(device, dtype):
            timing.soak(GemmKernel(device, dtype, biggest), device=device, seconds=sweep.soak_seconds)
    flush = timing.CacheFlush.for_device(device) if flush_cache else None
    results = []
    for shape in sweep.shapes:
        results.append(measure_shape(device, dtype, shape, warmup=sweep.warmup, iterations=sweep.iterations,
                                     flush=flush))
        if on_step is not None:
            on_step(len(results), len(sweep.shapes), f"{shape.m}x{shape.n}x{shape.k}: {results[-1].median:.4g} {UNIT}")
    best = max(results, key=lambda r: r.median)
    details = {
        "best_shape": [best.shape.m, best.shape.n, best.shape.k],
        # mamf-finder's "best max": the fastest single iteration of any shape.
        "best_tflops_max": max(max(r.tflops) for r in results),
        "shapes": [r.to_json() for r in results],
        "sweep": sweep.name,
        "warmup": sweep.warmup,
        "iterations": sweep.iterations,
        "soak_seconds": sweep.soak_seconds,
        "l2_flush_bytes": flush.nbytes if flush is not None else 0,
        "cache_flush": "off" if flush is None else "read" if flush.by_reading else "write",
        "b_layout": "randn(n, k).t(), as mamf-finder",
    }
    if device.kind == "cpu":
        details["threads"] = torch.get_num_threads()
    else:
        details.update(_search_details(sweep, dtype, best.shape))
    return Measurement(
        metric=METRIC,
        value=best.median,
        unit=UNIT,
        params={"dtype": dtype},
        location=location,
        samples=list(best.tflops),
        details=details,
    )


def _search_details(sweep: GemmSweep, dtype: str, best: GemmShape) -> dict[str, object]:
    """Which search a GPU figure stands on: the published long-search shapes it included, whether
    its best was one of them, and a caveat where it had none for this dtype."""
    published = sweep.published or {}
    details: dict[str, object] = {
        "published_best_shapes": {d: p.to_json() for d, p in published.items()},
        "best_is_published_shape": any((p.m, p.n, p.k) == (best.m, best.n, best.k) for p in published.values()),
    }
    if dtype in MAMF_DTYPES and dtype not in published:
        details["caveat"] = (
            f"no published long-search best shape for {dtype} on this GPU: this is the {sweep.name} sweep's best, "
            "which can read 10-20% below a long search's maximum (mamf-finder's quick range gives ~80-90% of it)"
        )
    return details
