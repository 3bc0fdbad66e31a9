#!/usr/bin/env python
"""Run every GPU path of clusterbench on this node once, and print one table of what it measured.

    python tools/gpu_check.py                 # quick sweeps (default): one H200 in < 8 min (an 8-GPU node:
                                              # + ~15 s of burn-in and the copy matrix per GPU)
    python tools/gpu_check.py --full          # the full sweeps, as `pytest --cluster=local` runs them
    python tools/gpu_check.py --report-dir out --timeout-s 420

It runs the real acceptance suite (`pytest --cluster=local -m "compute or memory or network or training
or health"`) in a subprocess, so every figure comes from the product's own code path: GEMM per dtype,
HBM copy, host-to-device and device-to-host copies, NCCL collectives across the local GPUs at every size
of the sweep (from 8 B), the training step and MFU, the burn-in with its bit-for-bit comparison, the
GPU-to-GPU copy matrix (two or more GPUs), the NVML (or amdsmi) health checks, Xid errors, and the
vendors' own tools where the node has them (nccl-tests binaries, dcgmi diag, perftest). Then it reads results.json and
prints one row per figure, with its verdict and, where the hardware table knows the device, the figure
as a percentage of the spec-sheet peak and of the published achievable figure (mamf-finder for GEMM).
It also writes that table as Markdown (`gpu_check.md` in the report directory), ready for
docs/measurements.md.

On a machine where torch sees no GPU it says so in one line and exits 0: there is nothing to check.
Its exit status is otherwise pytest's, so a verdict that failed the node shows in the status too; a
suite that ran past the time limit is stopped, and the table still shows what it had measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
GPU_FAMILIES = "compute or memory or network or training or health"
NO_GPU_EXIT = 0  # nothing to check is not a failure: CI machines have no GPU
SETUP_ERROR_EXIT = 2


@dataclass(frozen=True)
class Row:
    """One figure (or one test that measured nothing) as the table shows it."""

    metric: str
    params: str
    where: str
    value: str
    verdict: str
    of_spec: str  # the figure as a percentage of the spec-sheet peak, or ""
    of_published: str  # ... of the published achievable figure (mamf-finder, nvbandwidth), or ""
    note: str


# What a metric is compared with in the hardware table: (spec figure, published achievable figure),
# each a function of the accelerator entry and the measurement's params, returning None where unknown.
Reference = Callable[[Any, Mapping[str, Any]], "float | None"]


def _gemm_spec(spec: Any, params: Mapping[str, Any]) -> float | None:
    return spec.peak(str(params.get("dtype", "")))


def _gemm_published(spec: Any, params: Mapping[str, Any]) -> float | None:
    return spec.achievable_gemm_tflops(str(params.get("dtype", "")))


def _figure(name: str) -> Reference:
    return lambda spec, params: getattr(spec, name).value if getattr(spec, name) is not None else None


def _fraction_of(fraction: str, base: str) -> Reference:
    def published(spec: Any, params: Mapping[str, Any]) -> float | None:
        f, b = getattr(spec, fraction), getattr(spec, base)
        return f.value * b.value if f is not None and b is not None else None

    return published


def _scaleup(fraction: str | None) -> Reference:
    """The scale-up link's one-way rate (both ways at once: twice it), times `fraction` where given."""

    def reference(spec: Any, params: Mapping[str, Any]) -> float | None:
        link, share = spec.scaleup_link_gbps, getattr(spec, fraction) if fraction else None
        if link is None or (fraction and share is None):
            return None
        both_ways = 2 if params.get("direction") == "bidirectional" else 1
        return float(link.value * both_ways * (share.value if share else 1.0))

    return reference


REFERENCES: dict[str, tuple[Reference, Reference]] = {
    "gemm.tflops": (_gemm_spec, _gemm_published),
    "burnin.tflops": (_gemm_spec, _gemm_published),
    "p2p.copy_gbps": (_scaleup(None), _scaleup("achievable_scaleup_fraction")),
    "memory.copy_gbps": (_figure("memory_bandwidth_gbps"),
                         _fraction_of("achievable_copy_fraction", "memory_bandwidth_gbps")),
    "memory.h2d_gbps": (_figure("host_link_gbps"), _fraction_of("achievable_h2d_fraction", "host_link_gbps")),
    "memory.d2h_gbps": (_figure("host_link_gbps"), _fraction_of("achievable_h2d_fraction", "host_link_gbps")),
}


def _percent(value: float, reference: float | None) -> str:
    return f"{100 * value / reference:.1f}%" if reference else ""


def _format_value(value: float, unit: str) -> str:
    magnitude = abs(value)
    digits = 4 if magnitude < 1 else 3 if magnitude < 1000 else 0
    return f"{value:.{digits}g} {unit}" if magnitude < 1000 else f"{value:.0f} {unit}"


def _params_text(params: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


def _key(record: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (record["metric"], json.dumps(record.get("params", {}), sort_keys=True),
            str(record.get("host", "")), str(record.get("device", "")))


def build_rows(results: Mapping[str, Any], device_names: Mapping[str, str],
               table: Mapping[str, Any] | None) -> list[Row]:
    """The table's rows: every measurement with its check's verdict, then every test that measured nothing.

    `device_names` maps a measurement's device ("cuda:0") to the name torch reports, which picks the
    hardware table entry (`table`, as clusterbench.hardware.load_hardware_table returns it; None skips
    the percentages).
    """
    from clusterbench.hardware import match_accelerator

    verdicts: dict[tuple[str, str, str, str], str] = {}
    # A node's figure judged per GPU or per code (gpu.xid_errors, p2p pairs): its row shows the worst.
    by_host: dict[tuple[str, str], str] = {}
    for check in results.get("checks", []):
        key = _key(check)
        verdicts[key] = max(verdicts.get(key, ""), check["verdict"], key=_severity)
        host_key = (check["metric"], str(check.get("host", "")))
        by_host[host_key] = max(by_host.get(host_key, ""), check["verdict"], key=_severity)
    rows = []
    for m in results.get("measurements", []):
        device = str(m.get("device", ""))
        details = m.get("details") or {}
        name = device_names.get(device) or details.get("src_name")  # a node's figure names its GPU
        spec = match_accelerator(name, table) if table is not None and name else None
        spec_ref, published_ref = REFERENCES.get(m["metric"], (None, None))
        of_spec = _percent(m["value"], spec_ref(spec, m["params"])) if spec and spec_ref else ""
        of_published = _percent(m["value"], published_ref(spec, m["params"])) if spec and published_ref else ""
        verdict = verdicts.get(_key(m)) or by_host.get((m["metric"], str(m.get("host", "")))) or "no expectation"
        rows.append(Row(m["metric"], _params_text(m.get("params", {})), f"{m.get('host', '')}/{device}",
                        _format_value(m["value"], m["unit"]), verdict,
                        of_spec, of_published, str(details.get("caveat") or "")))
    for test in results.get("tests", []):
        if test.get("outcome") in ("skipped", "failed") and test.get("message"):
            rows.append(Row(test["nodeid"].split("::")[-1], "", "", "", test.get("verdict") or test["outcome"],
                            "", "", test["message"]))
    return rows


_ORDER = ("", "no expectation", "PASS", "WARN", "NOT MEASURED", "FAIL")


def _severity(verdict: str) -> int:
    return _ORDER.index(verdict) if verdict in _ORDER else len(_ORDER)


COLUMNS = ("metric", "params", "where", "value", "verdict", "% spec", "% published", "note")


def _cells(row: Row) -> tuple[str, ...]:
    return (row.metric, row.params, row.where, row.value, row.verdict, row.of_spec, row.of_published, row.note)


def render_text(rows: Sequence[Row]) -> str:
    """A plain fixed-width table: it reads the same in a terminal and in a captured log."""
    cells = [COLUMNS, *(_cells(r) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(widths))) + "  " + c[-1] for c in cells]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(line.rstrip() for line in lines)


def render_markdown(rows: Sequence[Row]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(COLUMNS), line(["---"] * len(COLUMNS)), *(line(_cells(r)) for r in rows)])


def environment_line(torch: Any) -> str:
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    runtime = f"CUDA {torch.version.cuda}" if torch.version.cuda else f"HIP {torch.version.hip}"
    nccl = ""
    with contextlib.suppress(Exception):  # a build without NCCL: the network probes say so themselves
        nccl = " · NCCL " + ".".join(str(p) for p in torch.cuda.nccl.version())
    return f"{len(names)} GPU(s): {', '.join(dict.fromkeys(names))} · torch {torch.__version__} · {runtime}{nccl}"


def run_suite(report_dir: Path, quick: bool, timeout_s: float) -> tuple[int | None, float]:
    """The acceptance suite's GPU families in a subprocess; (pytest's exit status or None on time-out, seconds)."""
    command = [sys.executable, "-m", "pytest", "--cluster=local", "-m", GPU_FAMILIES, f"--report-dir={report_dir}",
               "-p", "no:cacheprovider", *(["--quick"] if quick else [])]
    log = report_dir / "pytest.log"
    print("gpu_check: " + " ".join(command[1:]) + f"  (log: {log})", flush=True)
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            return process.wait(timeout=timeout_s), time.monotonic() - started
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            return None, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="full sweeps instead of --quick")
    parser.add_argument("--report-dir", type=Path, default=Path("gpu-check-report"))
    parser.add_argument("--timeout-s", type=float, default=450.0, help="stop the suite after this many seconds")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed; install clusterbench first (python -m pip install -e .)")
        return SETUP_ERROR_EXIT
    if not torch.cuda.is_available():
        build = (f"CUDA {torch.version.cuda}" if torch.version.cuda
             else f"HIP {torch.version.hip}" if torch.version.hip else "CPU-only build")
        print(f"gpu_check: no GPU visible to torch {torch.__version__} ({build}): nothing to check")
        return NO_GPU_EXIT
    try:
        from clusterbench.hardware import load_hardware_table
    except ImportError:
        print("gpu_check: clusterbench is not installed; run python -m pip install -e . in the repository first")
        return SETUP_ERROR_EXIT
    print("gpu_check: " + environment_line(torch), flush=True)
    device_names = {f"cuda:{i}": torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
    args.report_dir.mkdir(parents=True, exist_ok=True)
    status, seconds = run_suite(args.report_dir.resolve(), quick=not args.full, timeout_s=args.timeout_s)
    results_path = args.report_dir / "results.json"
    if not results_path.exists():
        print(f"gpu_check: the suite wrote no results.json (exit {status}); see {args.report_dir / 'pytest.log'}")
        return status or 1
    rows = build_rows(json.loads(results_path.read_text()), device_names, load_hardware_table())
    print(render_text(rows))
    (args.report_dir / "gpu_check.md").write_text(render_markdown(rows) + "\n")
    ended = f"stopped at the {args.timeout_s:.0f} s limit" if status is None else f"pytest exit {status}"
    print(f"gpu_check: {ended} after {seconds:.0f} s; table also in {args.report_dir / 'gpu_check.md'}")
    return 1 if status is None else status


if __name__ == "__main__":
    sys.exit(main())
