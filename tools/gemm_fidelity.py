#!/usr/bin/env python
"""How close is the GEMM probe's figure to a bare torch loop on the same shape and dtype?

Measures, in one process and in alternating order round after round (so drift and a warming device
favour neither side):
  probe           clusterbench's per-iteration measurement (cache flushed and C refilled between
                  iterations, the probe's default, as mamf-finder does); median TFLOP/s
  probe-no-flush  the same without the flush and refill (flush_cache=False)
  bare            warm-up, then N back-to-back calls of the same GEMM (torch.mm into a preallocated
                  output, the probe's operands and layout) and one synchronize:
                  TFLOP/s = 2*M*N*K*N / elapsed (out= spares the loop an allocation, and a CPU
                  fresh pages, per call: the strongest fair baseline)
and prints each, per round and as the median over rounds, with the paired ratios probe / bare.

    python tools/gemm_fidelity.py --device cpu --dtype fp32 --shape 1024 1024 1024
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from clusterbench.probes import timing
from clusterbench.probes.devices import GEMM_DTYPES, LocalDevice, local_devices
from clusterbench.probes.gemm import (
    GemmKernel,
    GemmShape,
    gemm_sweep,
    gemm_unsupported_reason,
    matmul_precision,
    measure_shape,
)

MODES = ("probe", "probe-no-flush", "bare")


def bare_loop_tflops(device: LocalDevice, dtype: str, shape: GemmShape, *, warmup: int, iterations: int) -> float:
    """The figure a user's own timing loop would report: no flush, no per-iteration events.

    The same operands as the probe's (GemmKernel: mamf-finder's layout, _scaled_mm for fp8), so the
    two differ in how they time and nothing else.
    """
    run = GemmKernel(device, dtype, shape)
    with matmul_precision(device, dtype):
        for _ in range(warmup):
            run()
        timing.synchronize(device)
        start = time.perf_counter()
        for _ in range(iterations):
            run()
        timing.synchronize(device)
        elapsed = time.perf_counter() - start
    return shape.flops * iterations / elapsed / 1e12


def measure(mode: str, device: LocalDevice, dtype: str, shape: GemmShape, *, warmup: int, iterations: int,
            flush: timing.CacheFlush) -> float:
    if mode == "bare":
        return bare_loop_tflops(device, dtype, shape, warmup=warmup, iterations=iterations)
    result = measure_shape(device, dtype, shape, warmup=warmup, iterations=iterations,
                           flush=flush if mode == "probe" else None)
    return result.median


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default=None, help="cpu, cuda:0, ... (default: the first local device)")
    parser.add_argument("--dtype", default="fp32", choices=GEMM_DTYPES)
    parser.add_argument("--shape", nargs=3, type=int, metavar=("M", "N", "K"), default=None,
                        help="default: 1024^3 on a CPU, 8192^3 on a GPU")
    parser.add_argument("--iterations", type=int, default=None,
                        help="timed iterations per measurement (default: the probe's full sweep's)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of all three measurements")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    devices = {d.torch_device: d for d in local_devices()}
    device = devices.get(args.device) if args.device else next(iter(devices.values()))
    if device is None:
        choices = ", ".join(devices)
        print(f"error: --device {args.device} is not a local device; choose one of {choices}", file=sys.stderr)
        return 2
    reason = gemm_unsupported_reason(device, args.dtype)
    if reason is not None:
        print(f"error: {args.dtype} on {device.torch_device}: {reason}", file=sys.stderr)
        return 2
    shape = GemmShape(*args.shape) if args.shape else _squares_default(device)
    sweep = gemm_sweep(device, args.dtype, quick=False)
    iterations = args.iterations or sweep.iterations
    flush = timing.CacheFlush.for_device(device)

    print(f"gemm fidelity: {device.torch_device} ({device.name}), {args.dtype}, M={shape.m} N={shape.n} K={shape.k}, "
          f"warmup {sweep.warmup}, {iterations} iterations per measurement, {args.rounds} rounds, "
          f"flush {flush.nbytes / 2**20:.0f} MiB ({'read' if flush.by_reading else 'write'})"
          + (f", {torch.get_num_threads()} threads" if device.kind == "cpu" else ""))
    ratio_names = {"probe": "probe/bare", "probe-no-flush": "no-flush/bare"}
    print(f"{'round':>6}  " + "  ".join(f"{m:>14}" for m in MODES) + "  "
          + "  ".join(f"{r:>13}" for r in ratio_names.values()))
    figures: dict[str, list[float]] = {m: [] for m in MODES}
    ratios: dict[str, list[float]] = {m: [] for m in ratio_names}
    for round_index in range(args.rounds):
        order = MODES if round_index % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            figures[mode].append(measure(mode, device, args.dtype, shape, warmup=sweep.warmup,
                                         iterations=iterations, flush=flush))
        # Ratios are paired within a round: a machine whose speed drifts (a shared VM) moves both sides.
        for mode in ratio_names:
            ratios[mode].append(figures[mode][-1] / figures["bare"][-1])
        print(f"{round_index + 1:>6}  " + "  ".join(f"{figures[m][-1]:>14.4f}" for m in MODES) + "  "
              + "  ".join(f"{ratios[m][-1]:>13.3f}" for m in ratio_names))
    medians = {m: statistics.median(v) for m, v in figures.items()}
    median_ratios = {m: statistics.median(v) for m, v in ratios.items()}
    print(f"{'median':>6}  " + "  ".join(f"{medians[m]:>14.4f}" for m in MODES) + "  "
          + "  ".join(f"{median_ratios[m]:>13.3f}" for m in ratio_names) + "   [TFLOP/s; ratio goal >= 0.97]")

    if args.json:
        args.json.write_text(json.dumps({
            "device": device.torch_device, "device_name": device.name, "dtype": args.dtype,
            "shape": [shape.m, shape.n, shape.k], "warmup": sweep.warmup, "iterations": iterations,
            "rounds": args.rounds, "flush_bytes": flush.nbytes, "tflops": figures, "median_tflops": medians,
            "ratios": ratios, "median_ratios": median_ratios,
        }, indent=2) + "\n")
    return 0


def _squares_default(device: LocalDevice) -> GemmShape:
    size = 8192 if device.kind == "cuda" else 1024
    return GemmShape(size, size, size)


if __name__ == "__main__":
    sys.exit(main())
