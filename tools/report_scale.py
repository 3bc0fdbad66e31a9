"""How long rendering the reports of a 1,024-node x 8-GPU run takes, and how much memory it needs.

    python tools/report_scale.py [--nodes 1024] [--gpus 8] [--keep DIR]

The run is synthetic (tests/synthetic_run.py: plausible H200 figures, judged by the real judge, with
planted faults). Each scenario runs in a fresh child process, so its peak memory (the child's
maximum resident set, from wait4) includes the interpreter, matplotlib and the run's data:

- end of a run: what rank 0 does in AcceptanceRun.finish() with the run in memory: write
  results.json, then render report.html and summary.md (timed apart);
- re-render: `clusterbench report results.json` in a new process: start, read results.json,
  render, write.

Timings are wall-clock on this machine; other work on it makes them longer, so say what else ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the synthetic run is a test double and lives there

LIMIT_S = 10.0
LIMIT_BYTES = 1 << 30


def end_of_run(nodes: int, gpus: int, out: Path) -> None:
    """The child's work for the end-of-run scenario; prints its timings as JSON."""
    from clusterbench.reports.render import render_reports
    from clusterbench.reports.results_json import write_results_json
    from synthetic_run import synthetic_results

    results, _ = synthetic_results(nodes, gpus)
    started, started_cpu = time.perf_counter(), time.process_time()
    results_path = write_results_json(results, out)
    written, written_cpu = time.perf_counter(), time.process_time()
    render_reports(results, out, results_path)
    rendered, rendered_cpu = time.perf_counter(), time.process_time()
    print(json.dumps({
        "results_json_s": written - started,
        "reports_s": rendered - written,
        "results_json_cpu_s": written_cpu - started_cpu,
        "reports_cpu_s": rendered_cpu - written_cpu,
        "measurements": len(results.measurements),
        "checks": len(results.checks),
        "results_json_bytes": results_path.stat().st_size,
        "report_html_bytes": (out / "report.html").stat().st_size,
        "summary_md_bytes": (out / "summary.md").stat().st_size,
    }))


def _child(command: list[str]) -> tuple[float, float, int, str]:
    """Run `command`; (wall seconds, CPU seconds, peak resident bytes, stdout). CPU time is what the
    wall time would be on an idle machine (the work is single-threaded), whatever else runs."""
    started = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None  # stdout=PIPE
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited with {proc.returncode}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024, stdout  # ru_maxrss: KiB on Linux


def _verdict(seconds: float, peak: int) -> str:
    return "meets" if seconds < LIMIT_S and peak < LIMIT_BYTES else "MISSES"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1024)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="write the reports here and keep them")
    parser.add_argument("--child-end-of-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_end_of_run:
        end_of_run(args.nodes, args.gpus, args.child_end_of_run)
        return 0

    if args.keep is None:
        with tempfile.TemporaryDirectory(prefix="report-scale-") as scratch:
            return measure(args, Path(scratch))
    args.keep.mkdir(parents=True, exist_ok=True)
    measure(args, args.keep)
    print(f"reports in {args.keep}")
    return 0


def measure(args: argparse.Namespace, out: Path) -> int:
    print(f"synthetic run: {args.nodes} nodes x {args.gpus} GPUs = {args.nodes * args.gpus} devices; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    wall, cpu, peak, stdout = _child([sys.executable, __file__, "--nodes", str(args.nodes), "--gpus", str(args.gpus),
                                 "--child-end-of-run", str(out)])
    figures = json.loads(stdout.strip().splitlines()[-1])
    total = figures["results_json_s"] + figures["reports_s"]
    print(f"  {figures['measurements']} measurements, {figures['checks']} checks; results.json "
          f"{figures['results_json_bytes'] / 1e6:.1f} MB, report.html {figures['report_html_bytes'] / 1e6:.2f} MB, "
          f"summary.md {figures['summary_md_bytes'] / 1e3:.1f} kB")
    total_cpu = figures["results_json_cpu_s"] + figures["reports_cpu_s"]
    print(f"end of a run:  results.json {figures['results_json_s']:.2f} s + report.html and summary.md "
          f"{figures['reports_s']:.2f} s = {total:.2f} s wall ({figures['results_json_cpu_s']:.2f} + "
          f"{figures['reports_cpu_s']:.2f} = {total_cpu:.2f} s CPU); peak memory {peak / 2**20:.0f} MiB "
          f"(with the run's data) -> {_verdict(min(total, total_cpu), peak)} < {LIMIT_S:.0f} s, < 1 GiB")
    print("               (the whole child, generating the synthetic run included: "
          f"{wall:.2f} s wall, {cpu:.2f} s CPU)")

    wall, cpu, peak, _ = _child([sys.executable, "-m", "clusterbench.cli", "report", str(out / "results.json")])
    print(f"re-render:     clusterbench report results.json {wall:.2f} s wall, {cpu:.2f} s CPU (process start, read, "
          f"render, write); peak memory {peak / 2**20:.0f} MiB -> {_verdict(min(wall, cpu), peak)} "
          f"< {LIMIT_S:.0f} s, < 1 GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
