"""Fidelity of the all_reduce probe: its busbw side by side with a bare `dist.all_reduce` timing loop.

Both run in one job, on the same local ranks (spawned through clusterbench.probes.local_ranks), the
same backend, sizes and iteration counts, alternating round by round so that drift on a shared
machine hits both alike. The bare loop is what a user would write: warm-up, barrier, N back-to-back
ops, time / N, busbw = S / t * 2(n-1)/n; its time is the slowest rank's, as the probe's is.

The probe is reported two ways: its Measurement value (busbw of the median per-iteration time) and
its nccl-tests row figure (mean over the n ops). Target: the probe at >= 90% of the bare loop at
1 MiB and above. Exit status 1 when the Measurement value misses it at some size.

    python tools/allreduce_fidelity.py                       # gloo, 2 ranks, 1 MiB .. 64 MiB
    python tools/allreduce_fidelity.py --backend nccl --ranks 8 --max-bytes 1G
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist

from clusterbench.model import Location
from clusterbench.probes.collectives import busbw_factor, size_sweep, sweep_collective
from clusterbench.probes.local_ranks import run_local_ranks

TARGET = 0.90
MiB = 1 << 20


def _device(backend: str) -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop_seconds(size_bytes: int, device: torch.device, warmup: int, iterations: int) -> float:
    """Seconds per op of N back-to-back fp32 all_reduces, the slowest rank's."""
    tensor = torch.rand(size_bytes // 4, device=device)
    for _ in range(warmup):
        dist.all_reduce(tensor)
    dist.barrier()
    _sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        dist.all_reduce(tensor)
    _sync(device)
    elapsed = torch.tensor([(time.perf_counter() - start) / iterations], dtype=torch.float64, device=device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return elapsed.item()


def compare(rank: int, world_size: int, backend: str, sizes: list[int], warmup: int, iterations: int,
            rounds: int) -> list[dict[str, float]]:
    """Per size: median over rounds of the bare loop's busbw and the probe's two busbw figures."""
    device = _device(backend)
    factor = busbw_factor("all_reduce", world_size)
    location = Location(socket.gethostname(), rank, str(device))
    rows = []
    for size in sizes:
        bare, probe_median, probe_nccl = [], [], []
        for round_index in range(rounds):
            # Alternate which goes first, so that neither always inherits the other's warm caches.
            for method in ("bare", "probe") if round_index % 2 == 0 else ("probe", "bare"):
                if method == "bare":
                    bare.append(size / bare_loop_seconds(size, device, warmup, iterations) / 1e9 * factor)
                    continue
                sweep = sweep_collective("all_reduce", sizes=[size], dtype="fp32", device=device,
                                         location=location, inplace=True, warmup=warmup, iterations=iterations)
                probe_median.append(sweep.measurements()[0].value)
                probe_nccl.append(sweep.rows[0].busbw_gbps)
        rows.append({"size_bytes": size, "bare": statistics.median(bare),
                     "probe": statistics.median(probe_median), "probe_nccl": statistics.median(probe_nccl)})
    return rows


def render(rows: list[dict[str, float]], backend: str, ranks: int) -> str:
    lines = [
        f"# all_reduce fp32, {backend}, {ranks} ranks: busbw in GB/s (median of rounds)",
        f"# {'size':>10}  {'bare loop':>10}  {'probe':>10}  {'ratio':>6}  {'probe(nccl-tests)':>18}  {'ratio':>6}",
    ]
    for row in rows:
        lines.append(
            f"{int(row['size_bytes']):12d}  {row['bare']:10.3f}"
            f"  {row['probe']:10.3f}  {row['probe'] / row['bare']:6.3f}"
            f"  {row['probe_nccl']:18.3f}  {row['probe_nccl'] / row['bare']:6.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--min-bytes", type=int, default=1 * MiB)
    parser.add_argument("--max-bytes", type=int, default=64 * MiB)
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=4, help="alternating bare/probe rounds per size")
    parser.add_argument("--timeout", type=float, default=900.0, help="deadline for the whole run, seconds")
    args = parser.parse_args(argv)

    sizes = size_sweep(args.min_bytes, args.max_bytes, args.factor)
    results = run_local_ranks(compare, args.ranks, backend=args.backend, timeout=args.timeout,
                              args=(args.backend, sizes, args.warmup, args.iterations, args.rounds))
    rows = results[0]
    print(render(rows, args.backend, args.ranks))
    worst = min(row["probe"] / row["bare"] for row in rows)
    verdict = "meets" if worst >= TARGET else "misses"
    print(f"# worst probe/bare ratio {worst:.3f}: {verdict} the {TARGET:.0%} target")
    return 0 if worst >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
