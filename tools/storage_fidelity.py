#!/usr/bin/env python
"""How close are the storage probe's figures to fio run by hand on the same directory?

In one process, on one directory, in alternating order round after round (so a disk whose speed
drifts favours neither side), it measures 4 KiB random read IOPS:
  (a) probe-fio    the probe's fio engine running the quick randread workload (libaio, direct)
      fio-by-hand  the same job as a user would type it (the command is printed), its JSON read
                   directly: jobs[0].read.iops. Goal: the two agree within 10%.
  (b) python       the probe's Python engine: the synchronous form of the workload (one thread per
                   I/O in flight, at most two per core)
      fio-psync    fio by hand with the comparable job: ioengine=psync, the same number of jobs,
                   iodepth 1. Goal: the Python engine reaches at least 60% of fio.
Ratios are paired within a round. Then it times one quick storage run end to end (goal < 30 s).
Everything runs in a workspace of the probe's own inside DIR, removed at the end.

    python tools/storage_fidelity.py /tmp --rounds 3
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from clusterbench.model import Location
from clusterbench.probes.storage import FioEngine, StorageTargetError, Workspace, measure_storage, probe_target
from clusterbench.probes.storage.python_engine import run_python, thread_limit
from clusterbench.probes.storage.workloads import Workload, standard_workloads

SIDES = ("probe-fio", "fio-by-hand", "python", "fio-psync")


def by_hand_command(workload: Workload, directory: Path, ioengine: str) -> list[str]:
    """The fio job as a user would write it for `workload`: fio's own file naming, its own cleanup."""
    return [
        "fio", "--name=byhand", f"--directory={directory}", f"--rw={workload.rw}", f"--bs={workload.block_size}",
        f"--size={workload.size_per_job}", f"--numjobs={workload.numjobs}", f"--iodepth={workload.iodepth}",
        f"--ioengine={ioengine}", f"--direct={int(workload.direct)}", "--time_based",
        f"--runtime={workload.runtime_s:g}s", "--group_reporting", "--unlink=1", "--output-format=json",
    ]


def run_by_hand(command: list[str], workload: Workload, workspace: Workspace) -> float:
    for job in range(workload.numjobs):  # fio names its files byhand.<job>.0; claimed so cleanup knows them
        workspace.file(f"byhand.{job}.0")
    done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=workspace.path)
    return float(json.loads(done.stdout[done.stdout.index("{"):])["jobs"][0]["read"]["iops"])


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, nargs="?", default=Path.cwd(), help="where to measure (default: here)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the four measurements")
    parser.add_argument("--runtime", type=float, default=None,
                        help="seconds per measurement (default: the quick workload's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    fio = FioEngine.find()
    randread = next(w for w in standard_workloads(quick=True) if w.rw == "randread")
    if args.runtime:
        randread = replace(randread, runtime_s=args.runtime)
    figures: dict[str, list[float]] = {side: [] for side in SIDES}
    try:
        with Workspace.create(args.directory, randread.footprint) as workspace:
            facts = probe_target(workspace)
            workload = replace(randread, direct=facts.direct)
            sync = workload.synchronous(thread_limit())
            hand = by_hand_command(workload, workspace.path, "libaio" if facts.direct else "io_uring")
            psync = by_hand_command(sync, workspace.path, "psync")
            print(f"storage fidelity: {facts.target} ({facts.filesystem}, direct={facts.direct}), {fio.version}, "
                  f"{args.rounds} rounds of {workload.runtime_s:g} s")
            print(f"  (a) fio by hand:   {shlex.join(hand)}")
            print(f"  (b) fio psync:     {shlex.join(psync)}")
            print(f"      python engine: {sync.numjobs} threads x iodepth 1, os.preadv, "
                  f"{sync.size_per_job} B per thread file")
            measure = {
                "probe-fio": lambda: fio.run(workload, workspace).iops,
                "fio-by-hand": lambda: run_by_hand(hand, workload, workspace),
                "python": lambda: run_python(sync, workspace).iops,
                "fio-psync": lambda: run_by_hand(psync, sync, workspace),
            }
            print(f"{'round':>6}  " + "  ".join(f"{side:>12}" for side in SIDES) + f"  {'fio ratio':>10} "
                  f" {'py/psync':>9}")
            ratios: dict[str, list[float]] = {"fio": [], "python": []}
            for round_index in range(args.rounds):
                order = SIDES if round_index % 2 == 0 else tuple(reversed(SIDES))
                for side in order:
                    figures[side].append(measure[side]())
                ratios["fio"].append(figures["probe-fio"][-1] / figures["fio-by-hand"][-1])
                ratios["python"].append(figures["python"][-1] / figures["fio-psync"][-1])
                print(f"{round_index + 1:>6}  " + "  ".join(f"{figures[s][-1]:>12.0f}" for s in SIDES)
                      + f"  {ratios['fio'][-1]:>10.3f}  {ratios['python'][-1]:>9.3f}")
            medians = {side: statistics.median(values) for side, values in figures.items()}
            median_ratios = {name: statistics.median(values) for name, values in ratios.items()}
            print(f"{'median':>6}  " + "  ".join(f"{medians[s]:>12.0f}" for s in SIDES)
                  + f"  {median_ratios['fio']:>10.3f}  {median_ratios['python']:>9.3f}"
                  + "   [IOPS; goals: fio ratio 0.90-1.10, py/psync >= 0.60]")
        print(f"workspace: {workspace.cleanup().summary()}")  # cleanup() again only returns its report

        began = time.perf_counter()
        result = measure_storage(args.directory, quick=True, location=Location(socket.gethostname(), 0, "node"))
        quick_s = time.perf_counter() - began
    except StorageTargetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"quick storage run ({result.engine}): {quick_s:.1f} s end to end   [goal < 30 s]")
    for m in result.measurements:
        print(f"  {m.metric:<26} {m.value:>12.3f} {m.unit:<6} engine={m.params['engine']} "
              f"direct={m.params.get('direct', '-')}")
    print(f"  failures: {len(result.failures)}; cleanup: {result.cleanup.summary() if result.cleanup else 'none'}")
    if args.json:
        args.json.write_text(json.dumps({
            "directory": str(args.directory), "fio": fio.version, "rounds": args.rounds, "iops": figures,
            "ratios": ratios, "median_iops": medians, "median_ratios": median_ratios, "quick_run_s": quick_s,
            "quick_run": result.to_json(),
        }, indent=2) + "\n")
    ok = 0.9 <= median_ratios["fio"] <= 1.1 and median_ratios["python"] >= 0.6 and quick_s < 30
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
