"""Fidelity of the all_reduce probe: its headline busbw side by side with an nccl-tests-style bare loop.

Both run in one job, on the same local ranks (spawned through clusterbench.runners.local_ranks), the
same backend, sizes and iteration counts, alternating round by round so that drift on a shared
machine hits both alike. The bare loop is what nccl-tests does and what a user would write: warm-up,
barrier, N back-to-back `dist.all_reduce`s between two timestamps, time / N, busbw = S / t * 2(n-1)/n;
its time is the slowest rank's, as the probe's is.

The probe's figure is its headline: the busbw Measurement value (the same number its nccl-tests table
prints and the judge takes), the median of `--repeats` repeats of N back-to-back ops. So that both
sides sample the machine for as long, a round's bare figure is the median of as many bare loops (each
a whole nccl-tests run at that size: warm-up, barrier, N ops); each round gives one paired ratio
probe / bare, and the table shows, per size, the median of those ratios and each side's median.
Target: every size's median ratio within 0.90..1.10 from 1 MiB up; exit status 1 when a size misses it.

    python tools/allreduce_fidelity.py --rounds 5            # gloo, 2 ranks, 1 MiB .. 64 MiB
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
from clusterbench.probes.collective_ops import busbw_factor
from clusterbench.probes.collectives import size_sweep, sweep_collective
from clusterbench.runners.devices import rank_device
from clusterbench.runners.local_ranks import run_local_ranks

BAND = (0.90, 1.10)
MiB = 1 << 20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop_seconds(size_bytes: int, device: torch.device, warmup: int, iterations: int) -> float:
    """Seconds per op of N back-to-back fp32 all_reduces, the slowest rank's (nccl-tests' time column)."""
    tensor = torch.rand(size_bytes // 4, device=device)
    for _ in range(max(1, warmup)):
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


def probe_headline(size: int, device: torch.device, location: Location, warmup: int, iterations: int,
                   repeats: int) -> float:
    """The probe's judged all_reduce busbw at one size; checked to be the figure its table prints."""
    sweep = sweep_collective("all_reduce", sizes=[size], dtype="fp32", device=device, location=location,
                             inplace=True, warmup=warmup, iterations=iterations, repeats=repeats)
    headline = next(m for m in sweep.measurements() if m.metric == "allreduce.busbw_gbps")
    assert headline.value == sweep.rows[0].busbw_gbps, "the judged figure must be the table's"
    return headline.value


def compare(rank: int, world_size: int, backend: str, sizes: list[int], warmup: int, iterations: int,
            repeats: int, rounds: int) -> list[dict[str, float]]:
    """Per size: the median of the rounds' paired ratios probe / bare, and each side's median busbw."""
    device = rank_device(backend)
    factor = busbw_factor("all_reduce", world_size)
    location = Location(socket.gethostname(), rank, str(device))
    rows = []
    for size in sizes:
        bare, probe = [], []
        for round_index in range(rounds):
            # Alternate which goes first, so that neither always inherits the other's warm caches.
            for method in ("bare", "probe") if round_index % 2 == 0 else ("probe", "bare"):
                if method == "bare":
                    loops = [bare_loop_seconds(size, device, warmup, iterations) for _ in range(repeats)]
                    bare.append(size / statistics.median(loops) / 1e9 * factor)
                else:
                    probe.append(probe_headline(size, device, location, warmup, iterations, repeats))
        ratios = [p / b for p, b in zip(probe, bare, strict=True)]  # round by round: paired
        rows.append({"size_bytes": size, "bare": statistics.median(bare), "probe": statistics.median(probe),
                     "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)})
    return rows


def render(rows: list[dict[str, float]], backend: str, ranks: int, rounds: int) -> str:
    lines = [
        f"# all_reduce fp32, {backend}, {ranks} ranks, {rounds} paired rounds: busbw in GB/s",
        f"# {'size':>10}  {'bare loop':>10}  {'probe':>10}  {'ratio':>6}  {'(min':>6}  {'max)':>6}",
    ]
    for row in rows:
        lines.append(
            f"{int(row['size_bytes']):12d}  {row['bare']:10.3f}  {row['probe']:10.3f}  {row['ratio']:6.3f}"
            f"  {row['ratio_min']:6.3f}  {row['ratio_max']:6.3f}"
        )
    lines.append("# bare loop, probe: median busbw of the rounds; ratio: median of the rounds' probe/bare")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="gloo", choices=("gloo", "nccl"))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--min-bytes", type=int, default=1 * MiB)
    parser.add_argument("--max-bytes", type=int, default=64 * MiB)
    parser.add_argument("--factor", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20, help="back-to-back ops a loop (nccl-tests -n)")
    parser.add_argument("--repeats", type=int, default=5, help="the probe's repeats of those ops per round")
    parser.add_argument("--rounds", type=int, default=4, help="alternating bare/probe rounds per size")
    parser.add_argument("--timeout", type=float, default=900.0, help="deadline for the whole run, seconds")
    args = parser.parse_args(argv)

    sizes = size_sweep(args.min_bytes, args.max_bytes, args.factor)
    results = run_local_ranks(compare, args.ranks, backend=args.backend, timeout=args.timeout,
                              args=(args.backend, sizes, args.warmup, args.iterations, args.repeats, args.rounds))
    rows = results[0]
    print(render(rows, args.backend, args.ranks, args.rounds))
    missed = [row for row in rows if not BAND[0] <= row["ratio"] <= BAND[1]]
    low, high = BAND
    verdict = "meets" if not missed else f"misses at {', '.join(str(int(r['size_bytes'])) for r in missed)} B"
    print(f"# median probe/bare ratio {min(r['ratio'] for r in rows):.3f}..{max(r['ratio'] for r in rows):.3f}: "
          f"{verdict} the {low:.2f}..{high:.2f} band")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
