"""Burn-in: sustained GEMM for a set time with a silent-data-corruption check, as gpu-burn and DCGM's diagnostic do.

Every device multiplies the same few products, C_p = A_p @ B_p, over and over for `burnin_s` seconds.
The operands of product p come from a fixed seed (seed + p) and are drawn on the host as integers
(torch.randint: integer arithmetic, unlike randn's vectorised log/sin, gives the same bits on every
CPU) scaled to [-1, 1) in fp32, cast to the GEMM dtype on the host and then copied to the device: every
device gets bit-identical operands, and their SHA-256 is in the details to prove it.

Three checks, each catching what the others cannot:

- each repeat of a product against the device's own first result of it, bit for bit, on the device
  (gpu-burn's check): a GPU that computes wrong now and then, even the only GPU of a node;
- the first result against an fp64 column checksum (burnin_checksum): a wrong result beyond rounding,
  whatever its peers computed;
- the first result's SHA-256 against the other devices' of the same model and software
  (clusterbench.judge.burnin, on rank 0): a GPU that is consistently wrong in a low bit.

`burnin.mismatches` counts what this device shows on its own (repeats that differ, first results
beyond the checksum's bound); it must be zero. `burnin.tflops` is the sustained throughput: the
median of windows of at least `window_s` seconds of GEMM time (device events on a GPU, the host clock
on a CPU), the warm-up round excluded and the windows kept as samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import torch

from clusterbench.model import Location, Measurement, ParamValue
from clusterbench.probes import timing
from clusterbench.probes.burnin_checksum import column_checksum
from clusterbench.probes.devices import LocalDevice
from clusterbench.probes.gemm import TORCH_DTYPES, matmul_precision
from clusterbench.probes.health.throttle import LoadReport
from clusterbench.probes.stats import summarize
from clusterbench.progress import StepCallback
from clusterbench.registry import declare_probe, metric

PROBE = declare_probe("burnin", per="device", settings=("burnin_s",), module=__name__, metrics=[
    metric("burnin.mismatches", "count", "lower", "compute",
           "GEMM results of the soak whose bits differ from the device's first result of the same product, "
           "or beyond the fp64 checksum's rounding bound: silent data corruption", ("dtype",)),
    # Judged against zero whatever the profile says by clusterbench.judge.burnin, whose check names the
    # product and the round (a generic must_be_zero check would say it a second time).
    metric("burnin.tflops", "TFLOP/s", "higher", "compute",
           "sustained dense matmul throughput over the soak: the median of its windows", ("dtype",)),
])

MISMATCHES = "burnin.mismatches"
TFLOPS = "burnin.tflops"
SEED = 20240917
# --quick caps the soak: 5 s on a CPU keeps the CI suite short and still gives ~20 windows; 15 s on a
# GPU is long enough for boost clocks to fall to what the GPU sustains and for power to reach its cap
# (a few seconds under dense GEMM), which is what a quick check must see. Heat soak takes minutes:
# that is the full run's burnin_s.
QUICK_CAP_S = {"cpu": 5.0, "cuda": 15.0}
# Results the test double of tests/ corrupts; the probe's one seam for it: C = multiply(A, B, out=C).
multiply: Callable[..., torch.Tensor] = torch.mm


@dataclass(frozen=True)
class BurnInPlan:
    """What the soak multiplies, and for how long. The same plan on every device of a model."""

    dtype: str  # a GEMM dtype of probes.gemm: bf16 on GPUs (tensor cores, the most power), fp32 on CPUs
    size: int  # M = N = K
    products: int  # distinct products, each with its own seed
    repeats: int  # GEMMs of one product per timed round, each into its own output
    seconds: float  # how long to soak
    window_s: float  # a throughput sample spans at least this much GEMM time
    seed: int = SEED

    @property
    def flops_per_gemm(self) -> int:
        return 2 * self.size**3


def burnin_plan(device: LocalDevice, burnin_s: float, quick: bool) -> BurnInPlan:
    """GPU: 8192^3 bf16, ~1.5 ms a GEMM on an H200, 4 products of 384 MiB of operands and reference
    each, and 8 outputs of 128 MiB (3.5 GiB in all). CPU: 512^3 fp32, a few ms a GEMM."""
    seconds = min(burnin_s, QUICK_CAP_S[device.kind]) if quick else burnin_s
    if device.kind == "cuda":
        return BurnInPlan("bf16", 8192, products=4, repeats=8, seconds=seconds, window_s=0.5)
    return BurnInPlan("fp32", 512, products=3, repeats=4, seconds=seconds, window_s=0.25)


@dataclass
class ProductRecord:
    """One product on one device: its operands' and first result's digests, and what went wrong."""

    index: int
    seed: int
    inputs_sha256: str
    result_sha256: str = ""
    checksum_ratio: float = 0.0  # worst column's distance from the fp64 reference, in bounds (<= 1 is right)
    mismatched_results: int = 0  # repeats whose bits differ from the first result
    mismatched_elements: int = 0
    first_mismatch_round: int | None = None

    @property
    def beyond_checksum(self) -> bool:
        return not self.checksum_ratio <= 1.0  # NaN too

    def to_json(self) -> dict[str, object]:
        return {
            "index": self.index, "seed": self.seed, "inputs_sha256": self.inputs_sha256,
            "result_sha256": self.result_sha256, "checksum_ratio": self.checksum_ratio,
            "beyond_checksum": self.beyond_checksum, "mismatched_results": self.mismatched_results,
            "mismatched_elements": self.mismatched_elements, "first_mismatch_round": self.first_mismatch_round,
        }


@dataclass
class SoakResult:
    plan: BurnInPlan
    products: list[ProductRecord]
    window_tflops: list[float] = field(default_factory=list)
    rounds: int = 0
    gemm_seconds: float = 0.0  # device time in GEMMs
    wall_seconds: float = 0.0  # the whole soak, checks included

    @property
    def mismatches(self) -> int:
        return sum(p.mismatched_results + p.beyond_checksum for p in self.products)


def product_operands(plan: BurnInPlan, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Product `index`'s operands on the host, in the plan's dtype: the same bits on every machine."""
    generator = torch.Generator().manual_seed(plan.seed + index)
    scale = 2.0**-12
    a = torch.randint(-(2**12), 2**12, (plan.size, plan.size), generator=generator).to(torch.float32) * scale
    b = torch.randint(-(2**12), 2**12, (plan.size, plan.size), generator=generator).to(torch.float32) * scale
    stored = TORCH_DTYPES[plan.dtype]
    return a.to(stored), b.to(stored)


def sha256(tensor: torch.Tensor) -> str:
    """The digest of a tensor's bytes as laid out in memory (row-major, contiguous)."""
    host = tensor.detach().cpu().contiguous()
    return hashlib.sha256(host.view(torch.uint8).numpy().tobytes()).hexdigest()


@contextlib.contextmanager
def gemm_settings(device: LocalDevice, dtype: str) -> Iterator[None]:
    """IEEE fp32 for fp32 (probes.gemm), and on GPUs fp32 accumulation for bf16/fp16: cuBLAS may
    otherwise reduce split-K partial sums in bf16, beyond the checksum's bound. Restored on exit."""
    cuda_matmul = torch.backends.cuda.matmul
    flags = ("allow_bf16_reduced_precision_reduction", "allow_fp16_reduced_precision_reduction")
    previous = {flag: getattr(cuda_matmul, flag) for flag in flags} if device.kind == "cuda" else {}
    with matmul_precision(device, dtype):
        try:
            for flag in previous:
                setattr(cuda_matmul, flag, False)
            yield
        finally:
            for flag, value in previous.items():
                setattr(cuda_matmul, flag, value)


def comparable_as(device: LocalDevice) -> str:
    """What must be equal for two devices' results to be comparable bit for bit: the model and its
    size (cuBLAS is bitwise reproducible only on the same architecture with the same SM count), the
    libraries (another cuBLAS or MKL may pick another algorithm), and on a CPU the thread count
    (it splits the sums)."""
    if torch.version.cuda:
        library = f"CUDA {torch.version.cuda}"
    elif torch.version.hip:
        library = f"HIP {torch.version.hip}"
    else:
        library = f"{torch.get_num_threads()} threads"
    return f"{device.name}, {device.count_cores} cores/SMs, torch {torch.__version__}, {library}"


def soak(device: LocalDevice, plan: BurnInPlan, on_step: StepCallback | None = None) -> SoakResult:
    """Run the plan on `device`: the warm-up round makes each product's first result, then timed
    rounds (each `repeats` GEMMs of one product, products in turn) until `plan.seconds` have passed.
    `on_step(seconds done, seconds planned, detail)`, if given, is called after each window."""
    with gemm_settings(device, plan.dtype):
        operands, records, firsts = [], [], []
        for index in range(plan.products):
            a, b = product_operands(plan, index)
            records.append(ProductRecord(index, plan.seed + index, _digest_pair(a, b)))
            operands.append((a.to(device.torch_device), b.to(device.torch_device)))
            firsts.append(_first_result(device, a, b, operands[-1], records[-1]))
        outputs = [torch.empty_like(firsts[0]) for _ in range(plan.repeats)]
        result = SoakResult(plan, records)
        window_flops, window_seconds = 0, 0.0
        started = time.perf_counter()
        while result.rounds == 0 or time.perf_counter() - started < plan.seconds:
            index = result.rounds % plan.products
            gemms = partial(_gemm_round, *operands[index], outputs)
            seconds = timing.time_iterations(gemms, device=device, warmup=0, iterations=1)[0]
            _compare(outputs, firsts[index], records[index], result.rounds)
            result.rounds += 1
            result.gemm_seconds += seconds
            window_flops += plan.flops_per_gemm * plan.repeats
            window_seconds += seconds
            if window_seconds >= plan.window_s:
                result.window_tflops.append(window_flops / window_seconds / 1e12)
                window_flops, window_seconds = 0, 0.0
                if on_step is not None:
                    on_step(min(int(time.perf_counter() - started), int(plan.seconds)), int(plan.seconds),
                            f"{result.window_tflops[-1]:.4g} TFLOP/s, {result.mismatches} mismatches")
    result.wall_seconds = time.perf_counter() - started
    if not result.window_tflops:  # a soak shorter than one window still has a figure
        result.window_tflops.append(window_flops / window_seconds / 1e12)
    return result


def _gemm_round(a: torch.Tensor, b: torch.Tensor, outputs: list[torch.Tensor]) -> None:
    for out in outputs:
        multiply(a, b, out=out)


def _digest_pair(a: torch.Tensor, b: torch.Tensor) -> str:
    return hashlib.sha256((sha256(a) + sha256(b)).encode()).hexdigest()


def _first_result(device: LocalDevice, a_host: torch.Tensor, b_host: torch.Tensor,
                  on_device: tuple[torch.Tensor, torch.Tensor], record: ProductRecord) -> torch.Tensor:
    """The device's first result of a product (the warm-up), its digest and its checksum ratio."""
    a, b = on_device
    first = torch.empty(a.shape[0], b.shape[1], dtype=a.dtype, device=a.device)
    multiply(a, b, out=first)
    timing.synchronize(device)
    host = first.cpu()
    record.result_sha256 = sha256(host)
    record.checksum_ratio = column_checksum(a_host, b_host, a.dtype).worst_ratio(host)
    return first


def _compare(outputs: list[torch.Tensor], first: torch.Tensor, record: ProductRecord, round_index: int) -> None:
    """Each output against the first result, bit for bit (as integers: NaN != NaN, -0 == 0 as floats)."""
    bits = _bits_dtype(first)
    reference = first.view(bits)
    wrong = torch.stack([(out.view(bits) != reference).sum() for out in outputs]).tolist()
    mismatched = [count for count in wrong if count]
    if mismatched:
        record.mismatched_results += len(mismatched)
        record.mismatched_elements += sum(mismatched)
        if record.first_mismatch_round is None:
            record.first_mismatch_round = round_index


def _bits_dtype(tensor: torch.Tensor) -> torch.dtype:
    return {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()]


def measure_burnin(device: LocalDevice, *, burnin_s: float, quick: bool, location: Location,
                   on_step: StepCallback | None = None) -> list[Measurement]:
    """The burn-in of `device`: burnin.mismatches and burnin.tflops, with the soak's details on both.
    Device memory is handed back when it ends (probes.timing.device_memory_phase)."""
    plan = burnin_plan(device, burnin_s, quick)
    with timing.device_memory_phase(device) as memory:
        result = soak(device, plan, on_step)
    details = soak_details(device, result)
    memory.record_in(details)
    params: dict[str, ParamValue] = {"dtype": plan.dtype}
    summary = summarize(result.window_tflops)
    return [
        Measurement(MISMATCHES, float(result.mismatches), "count", params, location, details=details),
        Measurement(TFLOPS, summary.median, "TFLOP/s", params, location, samples=list(result.window_tflops),
                    details={**details, "tflops_summary": summary.to_json()}),
    ]


def soak_details(device: LocalDevice, result: SoakResult) -> dict[str, object]:
    plan = result.plan
    return {
        "device_name": device.name,
        "comparable_as": comparable_as(device),
        "dtype": plan.dtype,
        "shape": [plan.size, plan.size, plan.size],
        "seed": plan.seed,
        "products": [p.to_json() for p in result.products],
        "repeats_per_round": plan.repeats,
        "rounds": result.rounds,
        "gemms": result.rounds * plan.repeats,
        "planned_seconds": plan.seconds,
        "soak_seconds": result.wall_seconds,
        "gemm_seconds": result.gemm_seconds,
        "window_s": plan.window_s,
        "warmup": "each product's first result (untimed) is the reference of its repeats",
        "checksum": "fp64 column sums (1^T A) B within gamma_K (1^T|A|)|B| + u_out sum|C| (probes/burnin_checksum.py)",
    }


def with_load(measurements: list[Measurement], load: LoadReport) -> list[Measurement]:
    """The soak's clocks, power, temperature and throttle events, as NVML sampled them, in the details."""
    summary = load_summary(load)
    for m in measurements:
        m.details["load"] = summary
    return measurements


def load_summary(load: LoadReport) -> dict[str, object]:
    """What the throttle sampler saw over one device's soak (its one GPU), without the raw samples:
    the health tests keep those (acceptance.health.load_reports)."""
    if not load.gpus:
        return {"not_measured": load.not_measured or "no GPU was sampled"}
    gpu = next(iter(load.gpus.values()))
    power, temperature = gpu.power_samples_w, gpu.temperature_samples_c
    clocks = [s.sm_clock_mhz for s in gpu.busy_samples if s.sm_clock_mhz is not None]
    return {
        "nvml_index": gpu.index,
        "samples": len(gpu.samples),
        "busy_samples": len(gpu.busy_samples),
        "interval_s": load.interval_s,
        "sm_clock_mhz": {"median": gpu.sm_clock_median_mhz, "min": min(clocks, default=None)},
        "power_w": {"median": statistics.median(power) if power else None, "max": max(power, default=None)},
        "temperature_c": {"max": max(temperature, default=None)},
        "clock_events_seen": gpu.clock_events_seen,
        "throttling_seen": gpu.throttling_seen,
        "throttled_samples": gpu.throttled_samples,
        "lost": gpu.lost,
        "not_measured": gpu.not_measured or load.not_measured,
    }
