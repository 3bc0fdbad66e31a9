"""The registry of metric names: a public interface, so names, units and directions stay stable.

A profile may only state expectations on metrics listed here, in the unit listed here; this is what
lets a typo in a profile fail loudly instead of silently never matching a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterbench.model import Better


@dataclass(frozen=True)
class MetricSpec:
    name: str
    unit: str
    better: Better
    family: str  # the pytest marker of the tests that measure it
    description: str
    params: tuple[str, ...] = ()  # the params a measurement of it carries
    # A sweep param: an expectation that leaves it open is judged at the sweep's largest value.
    judged_at_max: str | None = None
    # How figures of several ranks measured at once combine into the job's figure: "sum" (a
    # throughput), "max" (a latency: the worst rank), or "n_min" (N x the slowest rank: total bytes
    # over the longest time, as MLPerf Storage counts checkpoint throughput).
    aggregate: str | None = None


# What a training figure was measured with; `span` is single, intra-node or inter-node.
TRAIN_PARAMS = ("preset", "ranks", "span", "dtype", "batch", "seq_len", "parallel")
# What a storage figure is measured on and how; a profile narrows its expectations by them.
# `ranks` appears on the aggregate of several ranks only; an expectation naming it judges that.
STORAGE_PARAMS = ("target", "engine", "direct", "block_size", "iodepth", "numjobs", "bytes", "files", "threads", "ranks")

# The collectives swept as nccl-tests does (probes.collectives): each has "<name>.busbw_gbps" and "<name>.time_us".
COLLECTIVE_METRIC_NAMES = ("allreduce", "allgather", "reducescatter", "alltoall", "broadcast", "sendrecv")

COLLECTIVE_SWEEP_PARAMS = ("size_bytes", "ranks", "dtype", "inplace", "backend")
# (metric suffix, unit, direction, description) of the figures every collective sweep yields.
COLLECTIVE_FIGURES = (
    ("busbw_gbps", "GB/s", Better.HIGHER, "{name} bus bandwidth as nccl-tests defines it (algbw x its busbw factor)"),
    ("time_us", "us", Better.LOWER,
     "{name} time per op as nccl-tests' time column: n back-to-back ops / n, median of repeats"),
)

METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            "gemm.tflops", "TFLOP/s", Better.HIGHER, "compute",
            "dense matmul throughput: median per-iteration 2*M*N*K / time of the best shape of the sweep", ("dtype",),
        ),
        MetricSpec(
            "memory.copy_gbps", "GB/s", Better.HIGHER, "memory",
            "device-to-device (or host memory) copy bandwidth, bytes read + written / time",
        ),
        MetricSpec(
            "memory.h2d_gbps", "GB/s", Better.HIGHER, "memory",
            "host-to-device copy bandwidth from pinned memory",
        ),
        MetricSpec(
            "memory.d2h_gbps", "GB/s", Better.HIGHER, "memory",
            "device-to-host copy bandwidth into pinned memory",
        ),
        # Each collective's sweep yields busbw and nccl-tests' time column, both judged at the sweep's
        # largest size unless an expectation names `size_bytes` (a latency ceiling names a small one).
        *(
            MetricSpec(f"{name}.{suffix}", unit, better, "network", description.format(name=name),
                       COLLECTIVE_SWEEP_PARAMS, judged_at_max="size_bytes")
            for name in COLLECTIVE_METRIC_NAMES
            for suffix, unit, better, description in COLLECTIVE_FIGURES
        ),
        MetricSpec(
            "scaling.allreduce_busbw_gbps", "GB/s", Better.HIGHER, "network",
            "all_reduce bus bandwidth of a group of `ranks` ranks within one node or across nodes (`span`)",
            ("ranks", "span", "size_bytes", "dtype", "backend", "inplace"),
            judged_at_max="size_bytes",
        ),
        MetricSpec(
            "pairwise.busbw_gbps", "GB/s", Better.HIGHER, "network",
            "send/recv bus bandwidth between two nodes of a pair (pairwise node test; round 1 or 2)",
            ("round", "size_bytes", "dtype", "backend"),
        ),
        MetricSpec(
            "collective.wrong", "count", Better.LOWER, "network",
            "elements that differ from the exact expected result of a collective (#wrong)",
            ("op", "ranks", "dtype", "inplace", "backend"),
        ),
        MetricSpec(
            "mpi.allreduce_busbw_gbps", "GB/s", Better.HIGHER, "network",
            "MPI_Allreduce bus bandwidth through mpi4py buffer methods, OSU-style timing",
            ("size_bytes", "ranks", "dtype"),
            judged_at_max="size_bytes",
        ),
        MetricSpec("ib.active_ports", "count", Better.HIGHER, "network", "InfiniBand/RoCE ports ACTIVE"),
        MetricSpec(
            "ib.min_active_rate_gbps", "Gb/s", Better.HIGHER, "network",
            "rate of the slowest ACTIVE InfiniBand/RoCE port, in gigabits per second as the port reports it",
        ),
        MetricSpec("storage.randread_iops", "IOPS", Better.HIGHER, "storage", "4 KiB random read IOPS", STORAGE_PARAMS, aggregate="sum"),
        MetricSpec("storage.randwrite_iops", "IOPS", Better.HIGHER, "storage", "4 KiB random write IOPS", STORAGE_PARAMS, aggregate="sum"),
        MetricSpec("storage.seqread_gbps", "GB/s", Better.HIGHER, "storage", "1 MiB sequential read bandwidth", STORAGE_PARAMS, aggregate="sum"),
        MetricSpec("storage.seqwrite_gbps", "GB/s", Better.HIGHER, "storage", "1 MiB sequential write bandwidth", STORAGE_PARAMS, aggregate="sum"),
        MetricSpec("storage.randread_p99_us", "us", Better.LOWER, "storage", "4 KiB random read p99 latency", STORAGE_PARAMS, aggregate="max"),
        MetricSpec("storage.metadata_ops", "ops/s", Better.HIGHER, "storage", "small-file create+stat+delete rate", STORAGE_PARAMS, aggregate="sum"),
        MetricSpec("checkpoint.save_gbps", "GB/s", Better.HIGHER, "storage", "checkpoint save throughput incl. fsync", STORAGE_PARAMS, aggregate="n_min"),
        MetricSpec("checkpoint.load_gbps", "GB/s", Better.HIGHER, "storage", "checkpoint load throughput", STORAGE_PARAMS, aggregate="n_min"),
        MetricSpec("train.step_time_ms", "ms", Better.LOWER, "training",
                   "median training step time, each step the slowest rank's (data generation apart)",
                   TRAIN_PARAMS, judged_at_max="ranks"),
        MetricSpec("train.tokens_per_s", "tokens/s", Better.HIGHER, "training",
                   "global training throughput: ranks x batch x seq_len / median step time", TRAIN_PARAMS,
                   judged_at_max="ranks"),
        MetricSpec("train.mfu", "fraction", Better.HIGHER, "training",
                   "model FLOPs utilisation per device: (6N + 12LHQT) x tokens/s per device / dense peak",
                   TRAIN_PARAMS, judged_at_max="ranks"),
        MetricSpec(
            "train.scaling_efficiency", "fraction", Better.HIGHER, "training",
            "weak-scaling efficiency X_N / (N * X_1), the same per-rank batch at N ranks and at 1",
            TRAIN_PARAMS, judged_at_max="ranks",
        ),
        MetricSpec("train.loss_drop", "fraction", Better.HIGHER, "training",
                   "relative loss decrease over the measured steps (first fifth vs last fifth)", TRAIN_PARAMS,
                   judged_at_max="ranks"),
        MetricSpec("train.cost_per_mtokens", "cost/Mtokens", Better.LOWER, "training",
                   "cost of a million training tokens at the profile's price per accelerator-hour",
                   (*TRAIN_PARAMS, "currency"), judged_at_max="ranks"),
        MetricSpec("train.params_mismatched", "count", Better.LOWER, "training",
                   "ranks whose parameters differ from the first rank's after the measured steps (checksum)",
                   TRAIN_PARAMS),
        MetricSpec("gpu.count", "count", Better.HIGHER, "health", "GPUs visible on the node"),
        MetricSpec("gpu.ecc_uncorrected", "count", Better.LOWER, "health", "uncorrected ECC errors (volatile)"),
        MetricSpec("gpu.ecc_corrected", "count", Better.LOWER, "health", "corrected ECC errors (volatile)"),
        MetricSpec("gpu.retired_pages", "count", Better.LOWER, "health", "retired pages or remapped rows"),
        MetricSpec("gpu.pcie_gen", "gen", Better.HIGHER, "health", "current PCIe link generation"),
        MetricSpec("gpu.pcie_width", "lanes", Better.HIGHER, "health", "current PCIe link width"),
        MetricSpec("gpu.nvlink_up", "count", Better.HIGHER, "health", "NVLink links up"),
        MetricSpec("gpu.throttle_reasons", "count", Better.LOWER, "health", "active power/thermal clock-event reasons under load"),
        MetricSpec("gpu.temperature_c", "C", Better.LOWER, "health", "GPU temperature"),
        MetricSpec("gpu.power_w", "W", Better.LOWER, "health", "GPU power draw"),
    )
}

FAMILIES = ("compute", "memory", "network", "storage", "training", "health")
