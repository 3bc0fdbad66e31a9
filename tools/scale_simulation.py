"""Scale on paper, measured: what rank 0 of a world of thousands of ranks gathers, judges and renders.

No cluster runs here. Every rank's payload is synthesized in the shape the real tests send (the
`TestRecord.payload` of clusterbench.acceptance: attempts with Measurements and their raw samples),
and rank 0's real code path is timed on it:

1. gather: `StoreExchange._decide` reading every rank's payload from a real torch TCPStore, the
   store the process group uses. The other ranks' writes are made beforehand and not timed: in a
   real run they happen in parallel, on their own hosts, while rank 0 runs its test.
2. judge: `Settler._decide` (clusterbench.session.settle) on the gathered payloads: expectations, the peers check,
   records.
3. write: results.json after every test (as `settle` does), and once more at the end.
4. render: report.html and summary.md (`ResultsRecorder.render_reports`).

Two kinds of test make up the synthetic suite, as in benchmarks/: per-rank tests, where every rank
sends its own figure (GEMM, memory bandwidth: one Measurement with its samples each), and
world-wide tests, where only rank 0 has figures (a collective sweep: one Measurement a size and
mode) and every other rank sends an empty attempt list.

    python tools/scale_simulation.py                       # 1,024 and 8,192 ranks, 8 per node
    python tools/scale_simulation.py --ranks 8192 --json /tmp/scale.json

Figures are wall-clock on whatever machine runs this: state its load when quoting them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clusterbench.catalog import resolve_cluster
from clusterbench.distributed import StoreExchange
from clusterbench.judge import Scope
from clusterbench.model import Location, Measurement
from clusterbench.results import RunInfo, RunResults, utc_now
from clusterbench.session import AcceptanceRun
from clusterbench.session.context import RunContext
from clusterbench.session.records import Attempt
from clusterbench.world import World

PROFILE = """
[cluster]
name = "scale-simulation"
nodes = {nodes}
accelerators_per_node = {per_node}

[settings]
collective_timeout_s = 300

[[expect]]
metric = "gemm.tflops"
params = {{ dtype = "bf16" }}
target = 750
unit = "TFLOP/s"
provenance = "contract"
source = "synthetic"

[[expect]]
metric = "allreduce.busbw_gbps"
params = {{ size_bytes = 4294967296 }}
target = 360
unit = "GB/s"
provenance = "achievable"
source = "synthetic"
"""
SWEEP_SIZES = [2 ** k for k in range(20, 33)]  # 1 MiB .. 4 GiB: the GPU sweep's sizes, factor 2
GEMM_SAMPLES = 100  # the full GPU GEMM sweep's timed iterations
SWEEP_SAMPLES = 50  # the full GPU collective sweep's timed iterations


@dataclass
class StepTimes:
    gather_s: list[float]
    judge_s: list[float]
    write_s: list[float]


@dataclass
class ScaleFigures:
    ranks: int
    ranks_per_node: int
    tests: int
    per_rank_payload_bytes: int  # what one rank sends in a per-rank test
    idle_rank_payload_bytes: int  # what a rank without figures sends in a world-wide test
    rank0_sweep_payload_bytes: int  # rank 0's payload in a world-wide test (the sweep)
    store_bytes_per_per_rank_test: int  # everything rank 0 reads from the store for one such test
    decision_bytes: int
    gather_s_per_rank_test: float  # medians over the tests of that kind
    judge_s_per_rank_test: float
    gather_s_world_test: float
    judge_s_world_test: float
    write_s_last: float  # the last per-test results.json write (the largest)
    write_s_total: float  # every per-test write of the run together
    results_json_bytes: int
    finish_write_s: float
    render_s: float | None
    render_error: str | None
    report_bytes: dict[str, int]
    store_keys_at_end: int  # keys the store still holds after the last test (it does not grow with tests)


def host_of(rank: int, per_node: int) -> str:
    return f"node{rank // per_node:05d}"


def gemm_payload(rank: int, per_node: int, rng: random.Random) -> dict[str, Any]:
    location = Location(host_of(rank, per_node), rank, f"cuda:{rank % per_node}")
    samples = [round(rng.gauss(760, 8), 3) for _ in range(GEMM_SAMPLES)]
    measurement = Measurement(
        "gemm.tflops", statistics.median(samples), "TFLOP/s", {"dtype": "bf16"}, location, samples,
        {"shape": [16384, 16384, 16384], "warmup": 50, "iterations": GEMM_SAMPLES, "device_name": "NVIDIA H200"},
    )
    return {"outcome": "passed", "message": "", "attempts": [Attempt(location, [measurement]).to_json()],
            "shared": None}


def sweep_payload(world: int, rng: random.Random) -> dict[str, Any]:
    location = Location("node00000", 0, f"{world} ranks")
    measurements = []
    for inplace in (False, True):
        for size in SWEEP_SIZES:
            samples = [round(rng.gauss(350, 5), 3) for _ in range(SWEEP_SAMPLES)]
            params = {"size_bytes": size, "dtype": "bf16", "inplace": inplace, "ranks": world, "backend": "nccl"}
            measurements.append(Measurement("allreduce.busbw_gbps", statistics.median(samples), "GB/s", params,
                                            location,
                                            samples, {"algbw_gbps": 180.0, "time_us": 1000.0, "count": size // 2}))
    return {"outcome": "passed", "message": "", "attempts": [Attempt(location, measurements).to_json()], "shared": None}


IDLE_PAYLOAD: dict[str, Any] = {"outcome": "passed", "message": "", "attempts": [], "shared": None}


def _timed(fn: Callable, sink: list[float]) -> Callable:
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - started)

    return wrapper


def _tcp_store():
    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, 1, True, timeout=dt.timedelta(seconds=300), wait_for_workers=False)
    return dist.PrefixStore("clusterbench", store)


def simulate(ranks: int, per_node: int, per_rank_tests: int, world_tests: int,
             out_dir: Path, seed: int = 1) -> ScaleFigures:
    rng = random.Random(seed)
    nodes = -(-ranks // per_node)
    profile_path = out_dir / "profile" / "scale-simulation.toml"
    profile_path.parent.mkdir()
    profile_path.write_text(PROFILE.format(nodes=nodes, per_node=per_node))
    profile = resolve_cluster(str(profile_path), profile_path.parent)
    world = World("torchrun", 0, ranks, 0, per_node, "127.0.0.1", 29500, host_of(0, per_node))
    store = _tcp_store()
    exchange = StoreExchange(world, store, "nccl", deadline_s=300)
    exchange.hosts = {r: host_of(r, per_node) for r in range(ranks)}
    info = RunInfo(cluster="scale-simulation", profile={}, hosts=sorted(set(exchange.hosts.values())), world_size=ranks,
                   launcher="torchrun", backend="nccl", started_at=utc_now(), command_line=[], versions={}, devices=[],
                   quick=False)
    run = AcceptanceRun.of(RunContext(profile, exchange, out_dir, quick=False, narrowed=True), RunResults(run=info))
    times = {kind: StepTimes([], [], []) for kind in ("per_rank", "world")}
    payload_sizes: dict[str, int] = {}
    store_bytes = 0

    tests = [("per_rank", i) for i in range(per_rank_tests)] + [("world", i) for i in range(world_tests)]
    for sequence, (kind, index) in enumerate(tests, start=1):
        nodeid = f"benchmarks/test_{kind}.py::test_{index}"
        tag_bytes = len(json.dumps({"tag": nodeid}))
        # The other ranks' sends, made before rank 0 settles (untimed: in parallel in a real run).
        prefix = f"settle/{sequence}"
        read_bytes = 0
        for rank in range(1, ranks):
            if sequence > 1:  # as each rank's settle does: its previous payload has been read
                store.delete_key(f"settle/{sequence - 1}/{rank}")
            payload = gemm_payload(rank, per_node, rng) if kind == "per_rank" else IDLE_PAYLOAD
            text = json.dumps({**payload, "tag": nodeid})
            read_bytes += len(text)
            store.set(f"{prefix}/{rank}", text)
        store.add(f"{prefix}/arrived", ranks - 1)
        if kind == "per_rank":
            payload_sizes.setdefault("per_rank", len(json.dumps(gemm_payload(1, per_node, rng))) + tag_bytes)
            store_bytes = read_bytes
        else:
            payload_sizes.setdefault("idle", len(json.dumps(IDLE_PAYLOAD)) + tag_bytes)
        # Rank 0's own test, then its settle: the real code path, with its steps timed.
        record = run.test_record(nodeid)
        own = gemm_payload(0, per_node, rng) if kind == "per_rank" else sweep_payload(ranks, rng)
        if kind == "world":
            payload_sizes.setdefault("rank0_sweep", len(json.dumps(own)) + tag_bytes)
        record.attempts = [Attempt.from_json(a) for a in own["attempts"]]
        record.scope = Scope("gemm.tflops" if kind == "per_rank" else "allreduce.busbw_gbps")
        record.compare_peers = kind == "per_rank"
        step = times[kind]
        judge_times: list[float] = []
        settler, recorder = run.settler, run.recorder
        settler._decide = _timed(settler._decide, judge_times)  # type: ignore[method-assign]
        recorder.write = _timed(type(recorder).write.__get__(recorder), step.write_s)  # type: ignore[method-assign]
        started = time.perf_counter()
        decision = run.settle(nodeid, "passed", "")
        total = time.perf_counter() - started
        del settler._decide, recorder.write
        step.judge_s.append(judge_times[0])
        step.gather_s.append(total - judge_times[0] - step.write_s[-1])
        assert not decision.missing_ranks, decision.message
    decision_bytes = len(store.get(f"settle/{len(tests)}/decision"))

    # The end of the run: the final results.json, then the reports derived from it.
    results_path = out_dir / "results.json"
    started = time.perf_counter()
    run.recorder.write()
    finish_write_s = time.perf_counter() - started
    render_s, render_error = None, None
    try:
        started = time.perf_counter()
        run.recorder.render_reports()
        render_s = time.perf_counter() - started
        render_error = run.recorder.write_error
    except Exception as exc:  # the renderer is young: report what broke rather than stop the figures
        render_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    reports = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file()}
    all_writes = times["per_rank"].write_s + times["world"].write_s
    return ScaleFigures(
        ranks=ranks, ranks_per_node=per_node, tests=len(tests),
        per_rank_payload_bytes=payload_sizes["per_rank"], idle_rank_payload_bytes=payload_sizes["idle"],
        rank0_sweep_payload_bytes=payload_sizes["rank0_sweep"], store_bytes_per_per_rank_test=store_bytes,
        decision_bytes=decision_bytes,
        gather_s_per_rank_test=statistics.median(times["per_rank"].gather_s),
        judge_s_per_rank_test=statistics.median(times["per_rank"].judge_s),
        gather_s_world_test=statistics.median(times["world"].gather_s),
        judge_s_world_test=statistics.median(times["world"].judge_s),
        write_s_last=all_writes[-1], write_s_total=sum(all_writes),
        results_json_bytes=results_path.stat().st_size, finish_write_s=finish_write_s,
        render_s=render_s, render_error=render_error, report_bytes=reports, store_keys_at_end=store.num_keys(),
    )


def describe(f: ScaleFigures) -> str:
    mb = 1e6
    render = f"{f.render_s:.2f} s" if f.render_s is not None else "not rendered"
    lines = [
        f"{f.ranks} ranks ({f.ranks // f.ranks_per_node} nodes x {f.ranks_per_node}), {f.tests} tests",
        (f"  payload per rank: {f.per_rank_payload_bytes} B in a per-rank test (GEMM, {GEMM_SAMPLES} samples), "
         f"{f.idle_rank_payload_bytes} B without figures; rank 0's sweep {f.rank0_sweep_payload_bytes} B"),
        (f"  rank 0 reads per per-rank test: {f.store_bytes_per_per_rank_test / mb:.1f} MB through the store; "
         f"decision {f.decision_bytes} B read by each of {f.ranks - 1} ranks; "
         f"{f.store_keys_at_end} keys left in the store"),
        f"  per-rank test: gather {f.gather_s_per_rank_test:.2f} s, judge {f.judge_s_per_rank_test:.2f} s",
        f"  world-wide test: gather {f.gather_s_world_test:.2f} s, judge {f.judge_s_world_test:.3f} s",
        (f"  results.json: {f.results_json_bytes / mb:.1f} MB; last per-test write {f.write_s_last:.2f} s, "
         f"all per-test writes {f.write_s_total:.1f} s; final write {f.finish_write_s:.2f} s"),
        f"  reports: {render}" + (f" ({f.render_error})" if f.render_error else "")
        + "".join(f"; {name} {size / mb:.2f} MB" for name, size in f.report_bytes.items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1024, 8192])
    parser.add_argument("--ranks-per-node", type=int, default=8)
    parser.add_argument("--per-rank-tests", type=int, default=6, help="tests where every rank sends a figure")
    parser.add_argument("--world-tests", type=int, default=12, help="tests where rank 0 alone has figures")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = []
    for ranks in args.ranks:
        with tempfile.TemporaryDirectory(prefix="clusterbench-scale-") as out:
            f = simulate(ranks, args.ranks_per_node, args.per_rank_tests, args.world_tests, Path(out))
        print(describe(f), flush=True)
        figures.append(asdict(f))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
