"""GEMM probe: flop counting, the headline and its samples, dtype support, inputs and sweeps."""

import importlib.util
import json
import statistics

import pytest
import torch

from clusterbench.model import Location, NotMeasured
from clusterbench.probes import gemm, timing
from clusterbench.probes.devices import LocalDevice, local_devices, reason_unsupported, supported_dtypes
from clusterbench.probes.gemm import GemmKernel, GemmShape, GemmSweep

CPU = LocalDevice("cpu", "cpu", 0, "test CPU", 8 << 30, None, 2)
HERE = Location("node01", 0, "cpu")


def gpu(capability):
    return LocalDevice("cuda:0", "cuda", 0, "test GPU", 80 << 30, capability, 132)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a GPU")
def test_local_devices_without_a_gpu_is_the_cpu():
    devices = local_devices()
    assert len(devices) == 1
    cpu = devices[0]
    assert (cpu.torch_device, cpu.kind, cpu.index, cpu.compute_capability) == ("cpu", "cpu", 0, None)
    assert cpu.name and cpu.memory_bytes > 0 and cpu.count_cores >= 1


def test_gemm_flops_are_two_m_n_k():
    assert GemmShape(8, 16, 32).flops == 2 * 8 * 16 * 32


def _fake_timer(rates):
    """A time_iterations stand-in: per-iteration seconds from `rates` (FLOP/s per iteration) by M."""

    def time_iterations(fn, *, device, warmup, iterations, before_each=None):
        m, k = fn.a.shape
        n = fn.b.shape[1]
        return [2 * m * n * k / rate for rate in rates.get((m, n, k), rates.get(m))][:iterations]

    return time_iterations


def test_value_is_the_median_of_the_best_shape_and_its_samples_are_kept(monkeypatch):
    shapes = (GemmShape(8, 16, 32), GemmShape(16, 16, 16))
    monkeypatch.setattr(gemm, "gemm_sweep", lambda device, dtype, quick: GemmSweep("quick", shapes, 0, 3, 0.0))
    rates = {8: [1e12, 3e12, 2e12], 16: [4e12, 1e12, 5e12]}  # medians 2 and 4 TFLOP/s
    monkeypatch.setattr(timing, "time_iterations", _fake_timer(rates))

    result = gemm.measure_gemm(CPU, "fp32", quick=True, location=HERE)

    assert (result.metric, result.unit, result.params) == ("gemm.tflops", "TFLOP/s", {"dtype": "fp32"})
    assert result.value == pytest.approx(4.0)
    assert result.samples == pytest.approx([4.0, 1.0, 5.0])
    details = result.details
    assert details["best_shape"] == [16, 16, 16]
    assert details["best_tflops_max"] == pytest.approx(5.0)
    assert details["shapes"][0] == pytest.approx(
        {"m": 8, "n": 16, "k": 32, "median": 2.0, "mean": 2.0, "max": 3.0, "iterations": 3}
    )
    assert (details["sweep"], details["warmup"], details["iterations"]) == ("quick", 0, 3)
    assert details["threads"] == torch.get_num_threads()
    assert details["l2_flush_bytes"] >= timing.CPU_FLUSH_FLOOR_BYTES
    assert details["cache_flush"] == "read"


def test_the_flush_can_be_turned_off(monkeypatch):
    shapes = (GemmShape(16, 16, 16),)
    monkeypatch.setattr(gemm, "gemm_sweep", lambda device, dtype, quick: GemmSweep("quick", shapes, 0, 3, 0.0))
    monkeypatch.setattr(timing, "time_iterations", _fake_timer({16: [1e12, 1e12, 1e12]}))
    details = gemm.measure_gemm(CPU, "fp32", quick=True, location=HERE, flush_cache=False).details
    assert (details["l2_flush_bytes"], details["cache_flush"]) == (0, "off")


def test_each_timed_iteration_is_preceded_by_an_output_refill_and_a_cache_flush(monkeypatch):
    calls = []

    class CountingFlush(timing.CacheFlush):
        def __call__(self):
            calls.append("flush")

    flush = CountingFlush(torch.empty(16, dtype=torch.int8), by_reading=True)
    kernel_outputs = []

    def fake(fn, *, device, warmup, iterations, before_each=None):
        for _ in range(iterations):
            fn.out.zero_()
            before_each()
            kernel_outputs.append(fn.out.clone())
        return [1.0] * iterations

    monkeypatch.setattr(timing, "time_iterations", fake)
    gemm.measure_shape(CPU, "fp32", GemmShape(4, 4, 4), warmup=0, iterations=3, flush=flush)
    assert calls == ["flush"] * 3
    assert all(out.any() for out in kernel_outputs)  # refilled with random values, not left as it was


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "fp8"])
def test_gemm_kernel_multiplies_random_operands_into_its_output(dtype):
    kernel = GemmKernel(CPU, dtype, GemmShape(32, 16, 64))
    a, b = kernel.a.float(), kernel.b.float()
    assert a.std() > 0.5 and b.std() > 0.5  # randn, never zeros or constants
    kernel()
    assert kernel.out.shape == (32, 16)
    expected, rtol = a @ b, 0.05
    if dtype == "fp8":  # an fp8 C saturates at 448 and rounds to 3 mantissa bits: within half a step, 6.25%
        expected, rtol = expected.clamp(-448, 448), 0.07
    torch.testing.assert_close(kernel.out.float(), expected, rtol=rtol, atol=0.5)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16", "fp8"])
def test_second_operand_is_laid_out_as_mamf_finder_lays_it_out(dtype):
    # mamf-finder: B = torch.randn(n, k).t(), a column-major KxN view, for every dtype (and
    # torch._scaled_mm requires it for fp8); a row-major B runs other cuBLAS kernels.
    kernel = GemmKernel(CPU, dtype, GemmShape(32, 16, 64))
    assert kernel.b.shape == (64, 16) and kernel.b.stride() == (1, 64)


def test_fp8_output_is_fp8_as_in_mamf_finder():
    # mamf-finder's FP8 rows write C in the operands' fp8 dtype (torch._scaled_mm(A, B, s, s, out=C)).
    kernel = GemmKernel(CPU, "fp8", GemmShape(32, 16, 64))
    assert kernel.a.dtype == kernel.b.dtype == kernel.out.dtype == torch.float8_e4m3fn


def test_cpu_quick_gemm_measures_every_supported_dtype():
    for dtype in supported_dtypes(CPU):
        result = gemm.measure_gemm(CPU, dtype, quick=True, location=HERE)
        sweep = gemm.gemm_sweep(CPU, dtype, quick=True)
        assert result.value > 0
        assert len(result.samples) == sweep.iterations
        assert result.value == pytest.approx(statistics.median(result.samples))
        assert [s["iterations"] for s in result.details["shapes"]] == [sweep.iterations] * len(sweep.shapes)


@pytest.mark.parametrize("dtype", ["tf32", "fp8"])
def test_gpu_only_dtypes_on_a_cpu_are_not_measured_with_a_reason(dtype):
    with pytest.raises(NotMeasured, match="CPU"):
        gemm.measure_gemm(CPU, dtype, quick=True, location=HERE)


@pytest.mark.parametrize(
    "capability, dtype, supported",
    [
        ((7, 0), "tf32", False),
        ((8, 0), "tf32", True),
        ((8, 6), "fp8", False),
        ((8, 9), "fp8", True),
        ((9, 0), "fp8", True),
    ],
)
def test_dtype_support_follows_compute_capability(capability, dtype, supported):
    reason = reason_unsupported(gpu(capability), dtype)
    assert (reason is None) == supported
    if not supported:
        assert f"{capability[0]}.{capability[1]}" in reason


def test_supported_dtypes_of_a_cpu_and_a_hopper_gpu():
    assert supported_dtypes(CPU) == ["fp32", "bf16", "fp16"]
    assert supported_dtypes(gpu((9, 0))) == ["fp32", "tf32", "bf16", "fp16", "fp8"]


def test_unknown_dtype_is_a_caller_error():
    with pytest.raises(ValueError, match="fp64"):
        gemm.measure_gemm(CPU, "fp64", quick=True, location=HERE)


@pytest.mark.parametrize("device", [CPU, gpu((9, 0))], ids=["cpu", "gpu"])
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_quick_sweep_is_smaller_than_full(device, dtype):
    quick, full = gemm.gemm_sweep(device, dtype, quick=True), gemm.gemm_sweep(device, dtype, quick=False)
    assert gemm.sweep_shapes(device, dtype, True) == list(quick.shapes)
    assert len(quick.shapes) < len(full.shapes)
    work = lambda sweep: sum(s.flops for s in sweep.shapes) * (sweep.warmup + sweep.iterations)  # noqa: E731
    assert work(quick) < work(full)


def test_gpu_sweeps_fill_the_chip():
    shapes = gemm.sweep_shapes(gpu((9, 0)), "bf16", quick=True)
    assert min(s.flops for s in shapes) >= 2 * 4096**3


def test_matmul_precision_pins_fp32_and_tf32_and_restores_the_process_setting():
    cuda_matmul = torch.backends.cuda.matmul
    before = cuda_matmul.fp32_precision
    with gemm.matmul_precision(gpu((9, 0)), "tf32"):
        assert cuda_matmul.fp32_precision == "tf32"
    with gemm.matmul_precision(gpu((9, 0)), "fp32"):
        assert cuda_matmul.fp32_precision == "ieee"
    assert cuda_matmul.fp32_precision == before


def test_fp32_on_cpu_is_ieee_even_when_the_process_allows_bf16():
    mkldnn = torch.backends.mkldnn.matmul
    before = mkldnn.fp32_precision
    mkldnn.fp32_precision = "bf16"  # what torch.set_float32_matmul_precision("medium") does on a CPU
    try:
        with gemm.matmul_precision(CPU, "fp32"):
            assert mkldnn.fp32_precision == "ieee"
        assert mkldnn.fp32_precision == "bf16"
    finally:
        mkldnn.fp32_precision = before


def test_a_sweep_with_a_soak_loads_the_biggest_shape_first(monkeypatch):
    shapes = (GemmShape(16, 16, 16), GemmShape(32, 16, 16), GemmShape(8, 8, 8))
    monkeypatch.setattr(gemm, "gemm_sweep", lambda device, dtype, quick: GemmSweep("full", shapes, 0, 3, 1.5))
    monkeypatch.setattr(timing, "time_iterations", _fake_timer({m: [1e12] * 3 for m in (8, 16, 32)}))
    soaked = []
    monkeypatch.setattr(timing, "soak", lambda fn, *, device, seconds: soaked.append((fn.a.shape[0], seconds)))
    result = gemm.measure_gemm(CPU, "fp32", quick=False, location=HERE)
    assert soaked == [(32, 1.5)]
    assert result.details["soak_seconds"] == 1.5


@pytest.fixture
def fidelity_tool(repo_root):
    """tools/gemm_fidelity.py, a script outside the package, loaded as a module."""
    spec = importlib.util.spec_from_file_location("gemm_fidelity", repo_root / "tools" / "gemm_fidelity.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_fidelity_tool_runs_and_writes_its_figures(fidelity_tool, tmp_path, capsys):
    out = tmp_path / "fidelity.json"
    argv = ["--device", "cpu", "--shape", "64", "32", "48", "--iterations", "2", "--rounds", "2", "--json", str(out)]
    assert fidelity_tool.main(argv) == 0
    figures = json.loads(out.read_text())
    assert figures["shape"] == [64, 32, 48]
    assert set(figures["tflops"]) == {"probe", "probe-no-flush", "bare"}
    assert all(len(v) == 2 and min(v) > 0 for v in figures["tflops"].values())
    assert "probe/bare" in capsys.readouterr().out


def test_fidelity_tool_refuses_an_unknown_device(fidelity_tool, capsys):
    assert fidelity_tool.main(["--device", "cuda:7"]) == 2
    assert "not a local device" in capsys.readouterr().err
