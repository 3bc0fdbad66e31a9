"""A synthetic run of many nodes, for the report tests and tools/report_scale.py: a test double of a
cluster's results (no cluster measured it), built with the real judge so its checks are real.

The figures are plausible for HGX H200 nodes and seeded, so every call returns the same run. Known
faults are planted where a report must find them: a slow GPU, a slow node, a warm GPU, a slow link,
a scaling curve that drops below the efficiency floor, and (with `hostile`) names that try to inject
HTML, Markdown and matplotlib mathtext.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from clusterbench.judge import judge_exact, judge_measurement, judge_peers
from clusterbench.model import Better, Expectation, Location, Measurement, Provenance
from clusterbench.results import RunInfo, RunResults, TestOutcome, Trend, TrendPoint

HOSTILE_HOST = '<script>alert("host")</script>'
HOSTILE_DEVICE = '"><img src=x onerror=alert(1)>'
HOSTILE_CLUSTER = "prod</title><script>alert('cluster')</script>"
HOSTILE_MESSAGE = "probe crashed: <b>bold</b> | `rm -rf` $x^2$ [link](javascript:alert(1))"
SECRET_VALUE = "hunter2-do-not-print"
SIZES = [2 ** k for k in range(10, 34, 2)]  # 1 KiB to 8 GiB, every factor of four
GEMM_TARGET = 750.0
TEST_OF_METRIC = {
    "gemm.tflops": "benchmarks/test_compute.py::test_gemm_throughput[bf16]",
    "memory.copy_gbps": "benchmarks/test_memory.py::test_memory_bandwidth[memory.copy_gbps]",
}


@dataclass(frozen=True)
class PlantedFaults:
    """Where the synthetic run is bad, so that tests can check the report names exactly these."""

    slow_device: tuple[str, str]  # GEMM 25% low
    slow_node: str  # every GPU's copy bandwidth 20% low
    slow_link: str  # pairwise busbw
    floor_breaks_at: int  # first rank count whose training efficiency is below the floor
    slow_rank: int  # its own training step time 30% above the others'


def host_name(index: int, hostile: bool) -> str:
    if hostile and index == 1:
        return HOSTILE_HOST
    if hostile and index == 2:
        return "gpu$node|*_3_*"  # mathtext and Markdown in one name
    return f"node{index:04d}"


PROFILE_TEXT = """[cluster]
name = "{name}"
nodes = {nodes}
accelerators_per_node = 8
accelerator = "H200"

[[expect]]
metric = "gemm.tflops"
params = {{ dtype = "bf16" }}
target = 750
unit = "TFLOP/s"
tolerance = 0.1
warn = 0.05
provenance = "contract"
source = "purchase agreement, annex B, item 3 <b>signed</b>"
"""


def _expectations() -> dict[str, Expectation]:
    def expect(metric, target, unit, better=Better.HIGHER, tolerance=0.1, warn=0.05, provenance=Provenance.CONTRACT,
               **params):
        return Expectation(metric, target, unit, better, tolerance, warn, provenance, f"annex B: {metric}", params)

    return {
        "gemm": expect("gemm.tflops", GEMM_TARGET, "TFLOP/s", dtype="bf16"),
        "copy": expect("memory.copy_gbps", 3800.0, "GB/s", provenance=Provenance.ACHIEVABLE, tolerance=0.15),
        "allreduce": expect("allreduce.busbw_gbps", 360.0, "GB/s", provenance=Provenance.ACHIEVABLE),
        "temperature": expect("gpu.temperature_c", 80.0, "C", better=Better.LOWER, tolerance=0.05, warn=0.05,
                              provenance=Provenance.SPEC),
        "efficiency": expect("train.scaling_efficiency", 0.9, "fraction", tolerance=0.0, warn=0.0),
        "randread": expect("storage.randread_iops", 200_000.0, "IOPS", provenance=Provenance.BASELINE, ranks=1),
    }


def synthetic_results(nodes: int, gpus_per_node: int = 8, *, hostile: bool = False,
                      seed: int = 7) -> tuple[RunResults, PlantedFaults]:
    rng = random.Random(seed)
    hosts = [host_name(i, hostile) for i in range(nodes)]
    world = nodes * gpus_per_node
    expectations = _expectations()
    cluster = HOSTILE_CLUSTER if hostile else "synthetic-prod"
    faults = PlantedFaults(
        slow_device=(hosts[min(1, nodes - 1)], "cuda:3"),
        slow_node=hosts[nodes - 1],
        slow_link=f"{hosts[0]}<->{hosts[1]}",
        floor_breaks_at=min(world, 64),
        slow_rank=world - 3,
    )
    measurements: list[Measurement] = []
    checks = []

    def location(host_index: int, gpu: int) -> Location:
        return Location(hosts[host_index], host_index * gpus_per_node + gpu, f"cuda:{gpu}")

    def samples(value: float, spread: float = 0.01) -> list[float]:
        return [value * (1 + rng.gauss(0, spread)) for _ in range(10)]

    gemm, copy, temperature = [], [], []
    for h in range(nodes):
        for g in range(gpus_per_node):
            where = location(h, g)
            tflops = rng.gauss(790, 6)
            if (where.host, where.device) == faults.slow_device:
                tflops *= 0.75
            gbps = rng.gauss(4100, 25) * (0.8 if where.host == faults.slow_node else 1.0)
            celsius = rng.gauss(62, 2) + (25 if (h, g) == (0, 5) else 0)
            gemm.append(Measurement("gemm.tflops", tflops, "TFLOP/s", {"dtype": "bf16"}, where, samples(tflops)))
            copy.append(Measurement("memory.copy_gbps", gbps, "GB/s", {}, where, samples(gbps)))
            temperature.append(Measurement("gpu.temperature_c", celsius, "C", {}, where))
    measurements += gemm + copy + temperature
    checks += [judge_measurement(expectations["gemm"], m) for m in gemm]
    checks += [judge_measurement(expectations["copy"], m) for m in copy]
    checks += [judge_measurement(expectations["temperature"], m) for m in temperature]
    if nodes <= 16:  # the judge's peers check is quadratic: what a real run of this size does
        checks += judge_peers(gemm, 0.05, Better.HIGHER)

    rank0 = Location(hosts[0], 0, f"{world} ranks")
    for op, factor in (("allreduce", 1.0), ("allgather", 0.93), ("reducescatter", 0.95), ("alltoall", 0.6)):
        for inplace in (False, True):
            for size in SIZES:
                busbw = 370 * factor * size / (size + 2 ** 22) * (0.98 if inplace else 1.0)
                params = {"size_bytes": size, "ranks": world, "dtype": "bf16", "inplace": inplace, "backend": "nccl"}
                m = Measurement(f"{op}.busbw_gbps", busbw, "GB/s", params, rank0, samples(busbw))
                measurements.append(m)
                if op == "allreduce" and size == SIZES[-1] and not inplace:
                    checks.append(judge_measurement(expectations["allreduce"], m))
        wrong = Measurement("collective.wrong", 0.0, "count",
                            {"op": op, "ranks": world, "dtype": "bf16", "inplace": False, "backend": "nccl"}, rank0)
        measurements.append(wrong)
        checks.append(judge_exact(wrong))

    ladder = [2 ** k for k in range(1, world.bit_length()) if 2 ** k < world] + [world]
    for ranks in ladder:
        span = "intra-node" if ranks <= gpus_per_node else "inter-node"
        busbw = 480.0 if span == "intra-node" else 370.0 * (1 - 0.01 * ranks.bit_length())
        params = {"ranks": ranks, "span": span, "size_bytes": SIZES[-1], "dtype": "bf16", "backend": "nccl",
                  "inplace": True}
        measurements.append(Measurement("scaling.allreduce_busbw_gbps", busbw, "GB/s", params,
                                        Location(hosts[0], 0, f"{ranks} ranks {span}")))

    base_tokens = 9000.0
    for ranks in [1] + ladder:
        span = "single" if ranks == 1 else "intra-node" if ranks <= gpus_per_node else "inter-node"
        efficiency = 1.0 if ranks == 1 else (0.97 if ranks < faults.floor_breaks_at else 0.82)
        tokens = base_tokens * ranks * efficiency
        params = {"preset": "1b", "ranks": ranks, "span": span, "dtype": "bf16", "batch": 4, "seq_len": 2048,
                  "parallel": "fsdp"}
        where = Location(hosts[0], 0, f"{ranks} ranks {span}")
        measurements.append(Measurement("train.tokens_per_s", tokens, "tokens/s", dict(params), where, samples(tokens)))
        step_ms = 4 * 2048 * ranks / tokens * 1e3
        # Each rank's own median step (as the training probe keeps them); one rank lags at full scale.
        by_rank = {str(r): step_ms * (0.97 + 0.01 * rng.random()) for r in range(ranks)}
        if ranks == world:
            by_rank[str(faults.slow_rank)] = step_ms * 1.3
        measurements.append(Measurement("train.step_time_ms", step_ms, "ms", dict(params), where, samples(step_ms),
                                        {"rank_step_median_ms": by_rank}))
        cost = 3.5 * ranks / 3600 / tokens * 1e6
        measurements.append(Measurement("train.cost_per_mtokens", cost, "cost/Mtokens", {**params, "currency": "USD"},
                                        where))
        if ranks > 1:
            m = Measurement("train.scaling_efficiency", efficiency, "fraction", dict(params), where,
                            details={"efficiency_floor": 0.9, "floor_source": "target 0.9 - tolerance 0%, contract",
                                     "largest_efficient_ranks": max(r for r in [1] + ladder
                                                                    if r < faults.floor_breaks_at)})
            measurements.append(m)
            checks.append(judge_measurement(expectations["efficiency"], m))

    for t_index, target in enumerate(("/scratch", "/lustre/<project>" if hostile else "/lustre/project")):
        per_node = []
        for h in range(nodes):
            iops = rng.gauss(260_000 if t_index == 0 else 90_000, 4000)
            latency = {"mean": 120.0, "p50": 100.0 + rng.random() * 5, "p99": 480.0 + 40 * t_index,
                       "p99.9": 900.0 + 100 * t_index}
            params = {"target": target, "engine": "fio", "direct": True, "block_size": 4096, "iodepth": 32,
                      "numjobs": 1}
            where = Location(hosts[h], h * gpus_per_node, f"storage {target}")
            read = Measurement("storage.randread_iops", iops, "IOPS", dict(params), where, samples(iops, 0.05),
                               {"latency_us": latency})
            write = Measurement("storage.randwrite_iops", iops * 0.4, "IOPS", dict(params), where, [],
                                {"latency_us": {k: v * 1.6 for k, v in latency.items()}})
            seq = Measurement("storage.seqread_gbps", 6.0 - t_index, "GB/s", {**params, "block_size": 1 << 20}, where)
            per_node.append(read)
            measurements += [read, write, seq]
        total = sum(m.value for m in per_node)
        aggregate = Measurement("storage.randread_iops", total, "IOPS", {**per_node[0].params, "ranks": nodes},
                                Location("*", -1, f"aggregate of {nodes} ranks"), [m.value for m in per_node],
                                {"rule": "sum"})
        measurements.append(aggregate)
        for m in per_node[:1]:
            checks.append(judge_measurement(expectations["randread"],
                                            Measurement(m.metric, m.value, m.unit, {**m.params, "ranks": 1},
                                                        m.location)))

    for index in range(0, nodes - 1, 2):
        a, b = hosts[index], hosts[index + 1]
        pair = f"{a}<->{b}"
        busbw = 45.0 * (0.6 if pair == faults.slow_link else 1.0) + rng.random()
        measurements.append(Measurement("pairwise.busbw_gbps", busbw, "GB/s",
                                        {"round": 1, "size_bytes": 1 << 28, "dtype": "bf16", "backend": "nccl"},
                                        Location(a, index * gpus_per_node, f"link {pair}")))

    profile_text = PROFILE_TEXT.format(name=cluster, nodes=nodes)
    info = RunInfo(
        cluster=cluster,
        profile={
            "name": cluster,
            "cluster": {"name": cluster, "nodes": nodes, "accelerators_per_node": gpus_per_node, "accelerator": "H200"},
            "settings": {"outlier_tolerance": 0.05},
            "files": [{"path": f"clusters/{cluster}.toml", "sha256": hashlib.sha256(profile_text.encode()).hexdigest(),
                       "text": profile_text}],
            "notes": [],
            "expectations": [e.to_json() for e in expectations.values()],
        },
        hosts=sorted(hosts),
        world_size=world,
        launcher="slurm",
        backend="nccl",
        started_at="2026-11-28T22:00:00+00:00",
        command_line=["--cluster", cluster, "--report-dir", "out"],
        versions={"clusterbench": "0.1.0", "python": "3.11.7", "torch": "2.5.1+cu124", "cuda_runtime": "12.4",
                  "hip_runtime": None, "nvidia_driver": "550.90.07", "kernel": "5.15.0"},
        devices=[{"torch_device": f"cuda:{g}", "kind": "cuda",
                  "index": g, "name": "NVIDIA H200"} for g in range(gpus_per_node)],
        quick=False,
        finished_at="2026-11-28T23:41:07+00:00",
        inventory={h: {"hostname": h, "gpu": {"gpus": [
            {"name": HOSTILE_DEVICE if hostile and h == hosts[1] and g == 0 else "NVIDIA H200"}
            for g in range(gpus_per_node)]}} for h in hosts},
        environment={"NCCL_IB_HCA": "mlx5_0,mlx5_1", "NCCL_DEBUG": "WARN", "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
                     "SLURM_JOB_ID": "4242",
                     "CLUSTERBENCH_API_TOKEN": SECRET_VALUE},  # as an older, unredacted file may hold
    )
    tests = [
        TestOutcome("benchmarks/test_compute.py::test_gemm_throughput[bf16]", "FAIL", "failed",
                    "FAIL gemm.tflops[dtype=bf16] ..."),
        TestOutcome("benchmarks/test_memory.py::test_memory_bandwidth[memory.copy_gbps]", "WARN", "passed", ""),
        TestOutcome("benchmarks/test_network.py::test_mpi_allreduce", "NOT MEASURED", "skipped",
                    "NOT MEASURED mpi.allreduce_busbw_gbps: started by slurm"),
        TestOutcome("benchmarks/test_storage.py::test_storage[storage.metadata_ops]", "ERROR", "failed",
                    HOSTILE_MESSAGE if hostile else "probe crashed: OSError: [Errno 28] No space left on device"),
    ]
    for check in checks:  # as the harness records which test made each check
        check.test = TEST_OF_METRIC.get(check.metric, "benchmarks/test_other.py::test_other")
    trends = [
        Trend("gemm.tflops", {"dtype": "bf16"}, "TFLOP/s", "higher",
              [TrendPoint(f"run-{i}", f"2026-11-{i + 1:02d}T22:00:00+00:00", 792 + rng.gauss(0, 3)) for i in range(20)],
              789.0),
        Trend("allreduce.busbw_gbps", {"size_bytes": SIZES[-1]}, "GB/s", "higher",
              [TrendPoint(f"run-{i}", f"2026-11-{i + 1:02d}T22:00:00+00:00", 368 + rng.gauss(0, 2)) for i in range(20)],
              351.0),
    ]
    return RunResults(info, measurements, checks, tests, trends), faults
