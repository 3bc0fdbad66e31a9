"""Fidelity of the MPI_Allreduce probe: its busbw side by side with IMB-MPI1 Allreduce and OSU osu_allreduce.

The peers are the user's own builds, given by path (build them with the mpicc of the MPI that mpi4py uses;
IMB caps `-msgsize` at 4 MiB without a word, so it gets `-msglog`). Each round runs, size by size, the probe, IMB
and OSU under `mpiexec -n RANKS`, one after the other, in an order that rotates so that drift on a shared
machine hits all three alike; all three run the same sizes (powers of two), the same fp32 SUM
and OSU's iteration counts for large messages (100 timed after 10 warm-up, quick: 20 after 2).
Each peer's time is its mean across ranks (OSU "Avg Latency", IMB t_avg), the probe's likewise, and every
busbw is bytes / t x 2(n-1)/n in GB/s (1e9). Per size, the table gives each tool's median busbw over
rounds and the median of the per-round (paired) ratios probe/IMB and probe/OSU, and IMB/OSU: the two
peers against each other, the noise floor of the machine. Target: every paired
ratio median within 0.90-1.10; exit status 1 when one is not, 2 with one line when a peer is missing.

    python tools/mpi_fidelity.py --imb /tmp/imb/IMB-MPI1 --osu /tmp/osu/mpi/collective/osu_allreduce
    python tools/mpi_fidelity.py --imb ... --osu ... --probe-thread-level multiple   # mpi4py's default level
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass

from clusterbench.probes.mpi_allreduce import OSU_LARGE_MESSAGE, osu_iterations, osu_sizes

MiB = 1 << 20
BAND = (0.90, 1.10)
TOOLS = ("probe", "imb", "osu")
THREAD_LEVELS = ("single", "funneled", "serialized", "multiple")


@dataclass(frozen=True)
class Setup:
    mpiexec: str
    ranks: int
    imb: str
    osu: str
    sizes: list[int]
    iterations: int
    skip: int
    quick: bool
    probe_thread_level: str | None  # None: as the probe starts MPI itself


def busbw_gbps(size_bytes: int, seconds: float, ranks: int) -> float:
    return size_bytes / seconds / 1e9 * 2 * (ranks - 1) / ranks


def _run(command: list[str]) -> str:
    run = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {run.returncode}: {run.stderr.strip()[-500:]}")
    return run.stdout


def _probe_command(setup: Setup, size: int) -> list[str]:
    args = ["--min-bytes", str(size), "--max-bytes", str(size)] + (["--quick"] if setup.quick else [])
    if setup.probe_thread_level is None:
        return [sys.executable, "-m", "clusterbench.probes.mpi_allreduce", *args]
    # Import MPI at the asked level before the probe does, as the launcher detection would.
    script = (f"import sys, mpi4py; mpi4py.rc.thread_level = {setup.probe_thread_level!r}; from mpi4py import MPI; "
              f"from clusterbench.probes.mpi_allreduce import main; sys.exit(main({args!r}))")
    return [sys.executable, "-c", script]


def run_probe(setup: Setup, size: int) -> tuple[float, str]:
    """(busbw at `size`, the MPI thread level the probe ran at)."""
    stdout = _run([setup.mpiexec, "-n", str(setup.ranks), *_probe_command(setup, size)])
    out = json.loads(stdout.strip().splitlines()[-1])
    if "not_measured" in out:
        raise RuntimeError(f"probe: NOT MEASURED: {out['not_measured']}")
    [figure] = [m for m in out["measurements"] if m["metric"] == "mpi.allreduce_busbw_gbps"]
    # busbw of the probe's mean latency (its Measurement value), as the peers' figures are of theirs.
    return busbw_gbps(size, figure["details"]["latency_us"] * 1e-6, setup.ranks), figure["details"]["mpi_thread_level"]


def _table_rows(text: str, columns: int) -> list[list[float]]:
    """Lines of `columns` numbers: the result rows of IMB's and OSU's tables."""
    rows = []
    for line in text.splitlines():
        try:
            numbers = [float(field) for field in line.split()]
        except ValueError:
            continue
        if len(numbers) == columns:
            rows.append(numbers)
    return rows


def _row_for(rows: list[list[float]], size: int, peer: str) -> list[float]:
    for row in rows:
        if int(row[0]) == size:
            return row
    raise RuntimeError(f"{peer} printed no row for {size} bytes")


def run_imb(setup: Setup, size: int) -> float:
    log2 = size.bit_length() - 1
    text = _run([setup.mpiexec, "-n", str(setup.ranks), setup.imb, "-msglog", f"{log2}:{log2}", "-iter",
                 str(setup.iterations), "-iter_policy", "off", "-time", "100000", "-zero_size", "off",
                 "-npmin", str(setup.ranks), "Allreduce"])
    row = _row_for(_table_rows(text, 5), size, "IMB-MPI1")  # #bytes #repetitions t_min t_max t_avg [usec]
    return busbw_gbps(size, row[4] * 1e-6, setup.ranks)


def run_osu(setup: Setup, size: int) -> float:
    text = _run([setup.mpiexec, "-n", str(setup.ranks), setup.osu, "-m", f"{size}:{size}",
                 "-i", str(setup.iterations), "-x", str(setup.skip)])
    row = _row_for(_table_rows(text, 2), size, "osu_allreduce")  # Size, Avg Latency(us)
    return busbw_gbps(size, row[1] * 1e-6, setup.ranks)


def rounds(setup: Setup, count: int) -> tuple[list[dict[str, dict[int, float]]], set[str]]:
    """Per round, each tool's busbw by size; and the thread levels the probe ran at.

    Each size is its own three runs, back to back, so a pair is minutes closer in time than whole sweeps
    would be; who goes first rotates with the round and the size.
    """
    levels: set[str] = set()
    results = []
    for index in range(count):
        result: dict[str, dict[int, float]] = {tool: {} for tool in TOOLS}
        for position, size in enumerate(setup.sizes):
            shift = (index + position) % len(TOOLS)
            for tool in TOOLS[shift:] + TOOLS[:shift]:
                if tool == "probe":
                    result[tool][size], level = run_probe(setup, size)
                    levels.add(level)
                else:
                    result[tool][size] = (run_imb if tool == "imb" else run_osu)(setup, size)
        results.append(result)
        print(f"# round {index + 1}/{count} done", file=sys.stderr, flush=True)
    return results, levels


def summarise(results: list[dict[str, dict[int, float]]], sizes: list[int]) -> list[dict[str, float]]:
    """Per size: each tool's median busbw, and the medians of the paired ratios probe/IMB and probe/OSU."""
    rows = []
    for size in sizes:
        row: dict[str, float] = {"size_bytes": size}
        for tool in TOOLS:
            row[tool] = statistics.median(r[tool][size] for r in results)
        for peer in ("imb", "osu"):
            row[f"probe/{peer}"] = statistics.median(r["probe"][size] / r[peer][size] for r in results)
        # The peers against each other: the noise floor of this machine, which the band cannot be tighter than.
        row["imb/osu"] = statistics.median(r["imb"][size] / r["osu"][size] for r in results)
        rows.append(row)
    return rows


def render(rows: list[dict[str, float]], setup: Setup, count: int, levels: set[str]) -> str:
    lines = [
        f"# MPI_Allreduce fp32 SUM, {setup.ranks} ranks, {count} rotating rounds, {setup.iterations} timed after "
        f"{setup.skip} warm-up; probe at MPI_THREAD_{'/'.join(sorted(levels)).upper()}",
        "# busbw GB/s (median of rounds); ratios: median of the per-round probe/peer ratios",
        f"# {'size':>10}  {'probe':>8}  {'IMB-MPI1':>8}  {'OSU':>8}  {'probe/IMB':>9}  {'probe/OSU':>9}"
        f"  {'IMB/OSU':>7}",
    ]
    for row in rows:
        lines.append(f"{int(row['size_bytes']):12d}  {row['probe']:8.3f}  {row['imb']:8.3f}  {row['osu']:8.3f}"
                     f"  {row['probe/imb']:9.3f}  {row['probe/osu']:9.3f}  {row['imb/osu']:7.3f}")
    return "\n".join(lines)


def _executable(path: str, name: str) -> str | None:
    """None when `path` is an executable file, else the one-line reason."""
    if not os.path.isfile(path) or not os.access(path, os.X_OK):
        return f"mpi_fidelity: {name} binary not found or not executable: {path}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imb", required=True, help="path to IMB-MPI1 (intel/mpi-benchmarks)")
    parser.add_argument("--osu", required=True, help="path to osu_allreduce (OSU micro-benchmarks)")
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--min-bytes", type=int, default=1 * MiB)
    parser.add_argument("--max-bytes", type=int, default=16 * MiB)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="20 timed after 2 warm-up, not 100 after 10")
    parser.add_argument("--probe-thread-level", choices=THREAD_LEVELS, default=None,
                        help="import MPI at this level before the probe runs (default: as the probe starts it)")
    args = parser.parse_args(argv)
    if args.min_bytes <= OSU_LARGE_MESSAGE:
        parser.error(f"--min-bytes must exceed {OSU_LARGE_MESSAGE}: the peers get one iteration count, "
                     "OSU's for large messages")
    if args.ranks < 2 or args.rounds < 1:
        parser.error("--ranks must be >= 2 and --rounds >= 1")
    for path, name in ((args.imb, "IMB-MPI1"), (args.osu, "osu_allreduce")):
        if reason := _executable(path, name):
            print(reason, file=sys.stderr)
            return 2
    mpiexec = shutil.which(args.mpiexec)
    if mpiexec is None:
        print(f"mpi_fidelity: no {args.mpiexec} on PATH", file=sys.stderr)
        return 2
    try:
        sizes = osu_sizes(args.min_bytes, args.max_bytes)
    except ValueError as exc:
        parser.error(str(exc))
    iterations, skip = osu_iterations(sizes[0], args.quick)
    setup = Setup(mpiexec, args.ranks, args.imb, args.osu, sizes, iterations, skip, args.quick,
                  args.probe_thread_level)
    try:
        results, levels = rounds(setup, args.rounds)
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, ValueError) as exc:  # ValueError: unparsable output
        print(f"mpi_fidelity: a run failed: {exc}", file=sys.stderr)
        return 2
    rows = summarise(results, sizes)
    print(render(rows, setup, args.rounds, levels))
    misses = [f"{int(r['size_bytes'])} B vs {peer.upper()} {r[f'probe/{peer}']:.3f}"
              for r in rows for peer in ("imb", "osu") if not BAND[0] <= r[f"probe/{peer}"] <= BAND[1]]
    print(f"# {'misses' if misses else 'meets'} the {BAND[0]:.2f}-{BAND[1]:.2f} band"
          + (f": {'; '.join(misses)}" if misses else ""))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
