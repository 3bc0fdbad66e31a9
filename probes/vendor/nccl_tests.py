"""nccl-tests' own binaries (all_reduce_perf, ...) as a second opinion on our collective figures.

Run on a single node only, as `<op>_perf -b 8 -e <max> -f 2 -g <GPUs> -d <dtype>`: one process drives
every GPU of the node. Across nodes nccl-tests needs its binary started by mpirun, one MPI rank per
GPU; a pytest rank cannot start that (a child process is not a rank of the job's MPI world), and
clusterbench does not start launchers, so a run that spans nodes is NOT MEASURED with that reason.

The table is parsed by its header, column by column, so both layouts parse: the current one
(`redop root ... #wrong`) and the older one (`root ... error`, no #wrong count), with or without
Open MPI's `[1,0]<stdout>:` line prefix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from clusterbench.model import Location, Measurement, ParamValue, ProbeFailed
from clusterbench.probes.vendor import find_tool, run_tool
from clusterbench.registry import declare_probe, metric

BUSBW_METRIC = "nccltests.busbw_gbps"
TIME_METRIC = "nccltests.time_us"
WRONG_METRIC = "nccltests.wrong"
PARAMS = ("op", "size_bytes", "inplace", "dtype", "ngpus")
PROBE = declare_probe("nccl_tests", per="node", settings=("nccl_tests_dir", "second_opinion_tolerance"),
                      module=__name__, metrics=[
    metric(BUSBW_METRIC, "GB/s", "higher", "network",
           "bus bandwidth as nccl-tests' own binary reports it (busbw column), single node", PARAMS,
           judged_at_max="size_bytes"),
    metric(TIME_METRIC, "us", "lower", "network", "time per op as nccl-tests' own binary reports it (time column)",
           PARAMS, judged_at_max="size_bytes"),
    metric(WRONG_METRIC, "count", "lower", "network", "wrong elements nccl-tests' own binary counted (#wrong), "
           "summed over sizes and modes", ("op", "dtype", "ngpus"), must_be_zero=True),
])

# Our op names (clusterbench.probes.collective_ops) -> nccl-tests' binary.
BINARIES = {
    "all_reduce": "all_reduce_perf", "all_gather": "all_gather_perf", "reduce_scatter": "reduce_scatter_perf",
    "all_to_all": "alltoall_perf", "broadcast": "broadcast_perf", "sendrecv": "sendrecv_perf",
}
DTYPES = {"bf16": "bfloat16", "fp16": "half", "fp32": "float", "fp64": "double"}
INSTALL_HINT = "build https://github.com/NVIDIA/nccl-tests and set [settings] nccl_tests_dir to its build folder"
_MPI_PREFIX = re.compile(r"^\[\d+,\d+\]<std(?:out|err)>:")


@dataclass(frozen=True)
class ModeFigures:
    """One mode's columns of a row: out-of-place or in-place."""

    time_us: float
    algbw_gbps: float
    busbw_gbps: float
    wrong: int | None  # None where nccl-tests printed N/A, or an old build's `error` column (not a count)


@dataclass(frozen=True)
class NcclTestsRow:
    size_bytes: int
    count: int
    dtype: str
    out_of_place: ModeFigures
    in_place: ModeFigures


def parse_table(text: str) -> list[NcclTestsRow]:
    """The rows of an nccl-tests table, located by its header line (`size count type ... busbw`)."""
    lines = [_MPI_PREFIX.sub("", line) for line in text.splitlines()]
    header = next((line.lstrip("#").split() for line in lines
                   if line.startswith("#") and "size" in line.split() and "busbw" in line.split()), None)
    if header is None:
        raise ProbeFailed("nccl-tests printed no result table (no '# size count type ... busbw' header)")
    modes = [i for i, name in enumerate(header) if name == "time"]
    if len(modes) != 2:
        raise ProbeFailed(f"nccl-tests header has {len(modes)} time columns, expected 2: {' '.join(header)}")
    rows = []
    for line in lines:
        tokens = line.split()
        if len(tokens) != len(header) or not tokens[0].isdigit():
            continue
        rows.append(NcclTestsRow(int(tokens[0]), int(tokens[1]), tokens[2],
                                 *(_mode(header, tokens, start) for start in modes)))
    if not rows:
        raise ProbeFailed("nccl-tests' result table has no rows")
    return rows


def _mode(header: list[str], tokens: list[str], start: int) -> ModeFigures:
    wrong = tokens[start + 3] if header[start + 3] == "#wrong" else None
    return ModeFigures(float(tokens[start]), float(tokens[start + 1]), float(tokens[start + 2]),
                       int(wrong) if wrong is not None and wrong.isdigit() else None)


def find_binary(op: str, nccl_tests_dir: str) -> str:
    """nccl-tests' binary of `op`: in [settings] nccl_tests_dir (or its build/ folder), else on PATH."""
    directories = [Path(nccl_tests_dir), Path(nccl_tests_dir) / "build"] if nccl_tests_dir else []
    return find_tool(BINARIES[op], directories=directories, install_hint=INSTALL_HINT)


def single_node_reason(hosts: set[str], ngpus: int) -> str:
    """Why nccl-tests cannot run in this run's layout, or "" when it can."""
    if len(hosts) > 1:
        return (f"nccl-tests across {len(hosts)} nodes needs its binary started by mpirun, one rank per GPU; "
                "clusterbench runs it on a single node only (-g <GPUs>)")
    if ngpus < 1:
        return "nccl-tests needs a GPU; this node has none visible"
    return ""


def command(binary: str, *, max_bytes: int, ngpus: int, dtype: str) -> list[str]:
    return [binary, "-b", "8", "-e", str(max_bytes), "-f", "2", "-g", str(ngpus), "-d", DTYPES.get(dtype, dtype)]


def run_nccl_tests(op: str, binary: str, *, max_bytes: int, ngpus: int, dtype: str, location: Location,
                   timeout_s: float) -> list[Measurement]:
    """Run `op`'s binary over `ngpus` GPUs of this node; per size and mode its busbw and time, then #wrong."""
    cmd = command(binary, max_bytes=max_bytes, ngpus=ngpus, dtype=dtype)
    result = run_tool(cmd, timeout_s)
    if result.returncode != 0:
        raise ProbeFailed(f"{' '.join(cmd)} failed with exit status {result.returncode}: {result.last_line()}")
    return measurements(op, parse_table(result.stdout), ngpus=ngpus, location=location, command=" ".join(cmd))


def measurements(op: str, rows: list[NcclTestsRow], *, ngpus: int, location: Location,
                 command: str = "") -> list[Measurement]:
    out: list[Measurement] = []
    wrong = 0
    counted = False
    for row in rows:
        for inplace, mode in ((False, row.out_of_place), (True, row.in_place)):
            params: dict[str, ParamValue] = {"op": op, "size_bytes": row.size_bytes, "inplace": inplace,
                                             "dtype": row.dtype, "ngpus": ngpus}
            details = {"tool": "nccl-tests", "command": command, "count": row.count, "algbw_gbps": mode.algbw_gbps}
            out.append(Measurement(BUSBW_METRIC, mode.busbw_gbps, "GB/s", params, location, [mode.busbw_gbps],
                                   {**details, "time_us": mode.time_us}))
            out.append(Measurement(TIME_METRIC, mode.time_us, "us", params, location, [mode.time_us],
                                   {**details, "busbw_gbps": mode.busbw_gbps}))
            if mode.wrong is not None:
                wrong, counted = wrong + mode.wrong, True
    if counted:
        out.append(Measurement(WRONG_METRIC, float(wrong), "count", {"op": op, "dtype": rows[0].dtype, "ngpus": ngpus},
                               location, details={"tool": "nccl-tests", "command": command}))
    return out

