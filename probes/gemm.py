"""Dense matmul throughput (TFLOP/s) of one device in one dtype, measured the way mamf-finder does.

For each shape of a sweep: `torch.mm(A[MxK], B[KxN], out=C)` on random operands (randn: zeros draw
less power and score higher), warm-up iterations, then timed iterations each bracketed by its own
device events, with the last-level cache flushed and C refilled with random data before each one,
untimed. FLOPs = 2*M*N*K; TFLOP/s are decimal (1e12). The headline is the best shape's median: the
"maximum achievable matmul FLOPS" for that dtype, a figure a well-tuned workload can reach.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from clusterbench.model import Location, Measurement, NotMeasured
from clusterbench.probes import timing
from clusterbench.probes.devices import LocalDevice, reason_unsupported
from clusterbench.probes.stats import summarize

METRIC = "gemm.tflops"
UNIT = "TFLOP/s"

# tf32 is not a storage type: operands are fp32 and the matmul is told it may use TF32 tensor cores.
TORCH_DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def _squares(*sizes: int) -> tuple[GemmShape, ...]:
    return tuple(GemmShape(s, s, s) for s in sizes)


def gemm_sweep(device: LocalDevice, dtype: str, quick: bool) -> GemmSweep:
    """The sweep for `device` and `dtype`: GPU shapes big enough to fill the chip, CPU shapes that
    finish in seconds (bf16/fp16 run ~50x slower than fp32 on CPUs without AMX, hence smaller)."""
    if device.kind == "cuda":
        if quick:
            return GemmSweep("quick", _squares(4096, 8192, 12288), warmup=10, iterations=30, soak_seconds=2.0)
        # mamf-finder's quick range (m swept with n = k = 4096), plus large squares, and its 50/100
        # iterations per shape. Its 30 s warm-up is cut to 10 s a dtype: the suite measures five
        # dtypes on every GPU of the node one after another, so the device is hot after the first.
        shapes = tuple(GemmShape(m, 4096, 4096) for m in range(1024, 20480 + 1, 1024))
        return GemmSweep("full", shapes + _squares(8192, 12288, 16384), warmup=50, iterations=100, soak_seconds=10.0)
    half = dtype in ("bf16", "fp16")
    if quick:
        shapes = _squares(128, 256) if half else _squares(256, 512, 1024)
        return GemmSweep("quick", shapes, warmup=2, iterations=5, soak_seconds=0.0)
    sizes = (128, 256, 384, 512) if half else (256, 512, 768, 1024, 1536, 2048)
    return GemmSweep("full", _squares(*sizes), warmup=5, iterations=20, soak_seconds=2.0)


def sweep_shapes(device: LocalDevice, dtype: str, quick: bool) -> list[GemmShape]:
    return list(gemm_sweep(device, dtype, quick).shapes)


class GemmKernel:
    """The operands and output of one GEMM, allocated once on the device; calling it runs the GEMM."""

    def __init__(self, device: LocalDevice, dtype: str, shape: GemmShape):
        self.fp8 = dtype == "fp8"
        m, n, k = shape.m, shape.n, shape.k
        where = device.torch_device
        if self.fp8:
            fp8 = _fp8_dtype(device)
            self.a = torch.randn(m, k, device=where).to(fp8)
            # torch._scaled_mm wants its second operand column-major: an (n, k) row-major tensor, transposed.
            self.b = torch.randn(n, k, device=where).to(fp8).t()
            self.scale = torch.ones((), device=where, dtype=torch.float32)
            self.out = torch.empty(m, n, device=where, dtype=torch.bfloat16)
        else:
            self.a = torch.randn(m, k, device=where, dtype=TORCH_DTYPES[dtype])
            self.b = torch.randn(k, n, device=where, dtype=TORCH_DTYPES[dtype])
            self.out = torch.empty(m, n, device=where, dtype=TORCH_DTYPES[dtype])
        self.reset_output()

    def __call__(self) -> None:
        if self.fp8:
            torch._scaled_mm(
                self.a, self.b, scale_a=self.scale, scale_b=self.scale, out_dtype=torch.bfloat16, out=self.out
            )
        else:
            torch.mm(self.a, self.b, out=self.out)

    def reset_output(self) -> None:
        """Refill C with random values, so every iteration's writes flip bits and draw real power."""
        self.out.normal_()


def _fp8_dtype(device: LocalDevice) -> torch.dtype:
    # MI300-series GPUs (gfx94x) implement the FNUZ variant of e4m3; NVIDIA and later AMD parts, OCP e4m3.
    if torch.version.hip and "gfx94" in getattr(torch.cuda.get_device_properties(device.index), "gcnArchName", ""):
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
    device: LocalDevice, dtype: str, *, quick: bool, location: Location, flush_cache: bool = True
) -> Measurement:
    """GEMM throughput of `device` in `dtype` over a shape sweep; NotMeasured where it cannot run."""
    reason = reason_unsupported(device, dtype)
    if reason is not None:
        raise NotMeasured(reason)
    sweep = gemm_sweep(device, dtype, quick)
    if sweep.soak_seconds > 0:
        biggest = max(sweep.shapes, key=lambda s: s.flops)
        with matmul_precision(device, dtype):
            timing.soak(GemmKernel(device, dtype, biggest), device=device, seconds=sweep.soak_seconds)
    flush = timing.CacheFlush.for_device(device) if flush_cache else None
    results = [
        measure_shape(device, dtype, shape, warmup=sweep.warmup, iterations=sweep.iterations, flush=flush)
        for shape in sweep.shapes
    ]
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
    }
    if device.kind == "cpu":
        details["threads"] = torch.get_num_threads()
    return Measurement(
        metric=METRIC,
        value=best.median,
        unit=UNIT,
        params={"dtype": dtype},
        location=location,
        samples=list(best.tflops),
        details=details,
    )
