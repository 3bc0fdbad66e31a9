"""The burn-in probe on this machine's CPU, its fp64 checksum, and the judge's cross-device rules."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from clusterbench.judge import burnin_checks
from clusterbench.model import Location, Verdict
from clusterbench.probes import burnin
from clusterbench.probes.burnin_checksum import column_checksum
from clusterbench.probes.devices import LocalDevice, local_devices
from clusterbench.probes.health import GpuLoad, LoadReport, LoadSample
from clusterbench.registry import metric_spec
from fake_sdc import flip_sign_of_largest, flipping_multiply

CPU = LocalDevice("cpu", "cpu", 0, "Test CPU", 1 << 30, None, 2)
GPU = LocalDevice("cuda:0", "cuda", 0, "NVIDIA H200", 141 << 30, (9, 0), 132, "uuid-0")
TINY = burnin.BurnInPlan("fp32", 64, products=2, repeats=3, seconds=0.2, window_s=0.02)


def test_metrics_are_declared_mismatches_judged_by_the_burnin_rules():
    mismatches, tflops = metric_spec("burnin.mismatches"), metric_spec("burnin.tflops")
    # Zero whatever the profile says, by clusterbench.judge.burnin (one check a device, with the product).
    assert not mismatches.must_be_zero and mismatches.unit == "count" and mismatches.per == "device"
    assert tflops.unit == "TFLOP/s" and tflops.better.value == "higher" and tflops.family == "compute"
    assert burnin.PROBE.settings == ("burnin_s",)


def test_quick_caps_the_soak_per_device_kind_and_full_runs_burnin_s():
    assert burnin.burnin_plan(CPU, 60, quick=True).seconds == 5
    assert burnin.burnin_plan(GPU, 60, quick=True).seconds == 15
    assert burnin.burnin_plan(CPU, 2, quick=True).seconds == 2
    assert burnin.burnin_plan(GPU, 600, quick=False).seconds == 600
    assert burnin.burnin_plan(GPU, 60, quick=False).dtype == "bf16"
    assert burnin.burnin_plan(CPU, 60, quick=False).dtype == "fp32"


def test_operands_are_the_same_bits_from_the_same_seed_and_differ_between_products():
    a0, b0 = burnin.product_operands(TINY, 0)
    again, _ = burnin.product_operands(TINY, 0)
    a1, _ = burnin.product_operands(TINY, 1)
    assert burnin.sha256(a0) == burnin.sha256(again) and burnin.sha256(a0) != burnin.sha256(a1)
    assert a0.dtype == torch.float32 and float(a0.min()) >= -1 and float(a0.max()) < 1
    assert float(a0.std()) > 0.5 and not torch.equal(a0, b0)  # random, not zeros
    bf16_a, _ = burnin.product_operands(replace(TINY, dtype="bf16"), 0)
    assert bf16_a.dtype == torch.bfloat16 and torch.equal(bf16_a, a0.to(torch.bfloat16))


def test_an_honest_soak_finds_no_mismatch_and_gives_the_same_digests_every_time():
    first, second = burnin.soak(CPU, TINY), burnin.soak(CPU, TINY)
    assert first.mismatches == 0 and first.rounds >= 2 and first.window_tflops
    assert all(0 <= p.checksum_ratio <= 1 for p in first.products)
    assert [p.result_sha256 for p in first.products] == [p.result_sha256 for p in second.products]
    assert [p.inputs_sha256 for p in first.products] == [p.inputs_sha256 for p in second.products]


def test_a_repeat_that_differs_by_one_bit_is_a_mismatch_with_its_round(monkeypatch):
    # Calls 0-1 are the first results of the two products; call 5 is round 1's last repeat (product 1).
    monkeypatch.setattr(burnin, "multiply", flipping_multiply(calls={5}))
    result = burnin.soak(CPU, TINY)
    assert result.mismatches == 1
    wrong = result.products[1]
    assert wrong.mismatched_results == 1 and wrong.mismatched_elements == 1 and wrong.first_mismatch_round == 1
    assert result.products[0].mismatched_results == 0 and not wrong.beyond_checksum


def test_a_consistently_wrong_device_fails_the_fp64_checksum(monkeypatch):
    monkeypatch.setattr(burnin, "multiply", flipping_multiply())
    result = burnin.soak(CPU, TINY)
    assert all(p.beyond_checksum and p.mismatched_results == 0 for p in result.products)
    assert result.mismatches == TINY.products


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_checksum_bound_holds_for_a_right_result_and_a_sign_flip_exceeds_it(dtype):
    a, b = burnin.product_operands(replace(TINY, size=256), 0)
    a, b = a.to(dtype), b.to(dtype)
    reference = column_checksum(a, b, dtype)
    result = torch.mm(a, b)
    assert reference.worst_ratio(result) <= 1
    flip_sign_of_largest(result)
    assert reference.worst_ratio(result) > 1
    result.view(-1)[0] = float("nan")
    assert reference.worst_ratio(result) == float("inf")


def test_measure_burnin_gives_both_figures_with_the_soak_in_their_details():
    device = local_devices()[0]
    mismatches, tflops = burnin.measure_burnin(device, burnin_s=0.3, quick=True, location=Location("h"))
    assert (mismatches.metric, mismatches.value, mismatches.params) == ("burnin.mismatches", 0.0, {"dtype": "fp32"})
    assert tflops.metric == "burnin.tflops" and tflops.value > 0 and tflops.samples
    assert tflops.value == sorted(tflops.samples)[len(tflops.samples) // 2] or len(tflops.samples) % 2 == 0
    details = mismatches.details
    assert details["comparable_as"].startswith(device.name) and details["rounds"] >= 1
    assert len(details["products"]) == 3 and details["products"][0]["result_sha256"]


def test_load_summary_puts_clocks_power_temperature_and_throttling_in_the_details():
    samples = [LoadSample(0.1 * i, 0x0 if i < 3 else 0x40, 1980 - 100 * i, 690.0 + i, 70 + i, 5) for i in range(5)]
    report = LoadReport(gpus={0: GpuLoad(0, samples, cuda_device="cuda:0")}, interval_s=0.1)
    (m,) = burnin.with_load([_figure("h", "cuda:0", 0)], report)
    load = m.details["load"]
    assert load["samples"] == 5 and load["sm_clock_mhz"] == {"median": 1780, "min": 1580}
    assert load["power_w"]["max"] == 694.0 and load["temperature_c"]["max"] == 74
    assert load["throttling_seen"] and load["throttled_samples"] == 2
    assert burnin.load_summary(LoadReport(gpus={}, interval_s=0.1, not_measured="NVML unavailable")) == {
        "not_measured": "NVML unavailable"}


# -- the judge -----------------------------------------------------------------------------------

def _figure(host, device, rank, *, result="r", inputs="i", trusted=True, model="NVIDIA H200", value=0.0):
    products = [{"index": i, "seed": i, "inputs_sha256": inputs, "result_sha256": f"{result}{i}",
                 "checksum_ratio": 0.01 if trusted else 40.0, "beyond_checksum": not trusted,
                 "mismatched_results": 0, "mismatched_elements": 0, "first_mismatch_round": None}
                for i in range(2)]
    details = {"device_name": model, "comparable_as": f"{model}, 132 cores/SMs", "dtype": "bf16",
               "shape": [8192] * 3, "products": products, "soak_seconds": 60.0}
    return burnin.Measurement("burnin.mismatches", value, "count", {"dtype": "bf16"}, Location(host, rank, device),
                              details=details)


def _verdicts(checks):
    """The peers' verdicts (each device's own check, PASS at zero mismatches, is tested apart)."""
    return {(c.location.host, c.location.device, c.verdict) for c in checks if c.provenance == "peers"}


def test_the_device_unlike_the_majority_fails_named_with_what_to_do():
    figures = [_figure("a", "cuda:0", 0), _figure("a", "cuda:1", 1), _figure("b", "cuda:0", 2, result="x")]
    checks = burnin_checks(figures)
    assert _verdicts(checks) == {("a", "cuda:0", Verdict.PASS), ("a", "cuda:1", Verdict.PASS),
                                 ("b", "cuda:0", Verdict.FAIL)}
    assert [c.verdict for c in checks if c.provenance == "rule"] == [Verdict.PASS] * 3  # each device's own
    (bad,) = [c for c in checks if c.verdict is Verdict.FAIL]
    assert "host b device cuda:0 (rank 2)" in bad.message and "dcgmi diag -r 3" in bad.message
    assert "differs bit for bit from the 2 of 3 devices that agree" in bad.message and bad.observed == 2
    assert bad.provenance == "peers" and bad.blocking


def test_operands_that_differ_are_named_as_such():
    checks = burnin_checks([_figure("a", "cuda:0", 0), _figure("a", "cuda:1", 1), _figure("b", "cuda:0", 2,
                                                                                          inputs="j")])
    (bad,) = [c for c in checks if c.verdict is Verdict.FAIL]
    assert "operands differ" in bad.message


def test_an_even_split_is_settled_by_the_checksum_else_every_device_fails():
    settled = burnin_checks([_figure("a", "cpu", 0), _figure("b", "cpu", 1, result="x", trusted=False, value=2)])
    assert ("a", "cpu", Verdict.PASS) in _verdicts(settled)
    named = [c for c in settled if c.verdict is Verdict.FAIL]
    assert {c.location.host for c in named} == {"b"} and len(named) == 2  # its own check and the peers'
    assert any("beyond the fp64 checksum" in c.message and "stress-ng" in c.message for c in named)
    unsettled = burnin_checks([_figure("a", "cpu", 0), _figure("b", "cpu", 1, result="x")])
    assert _verdicts(unsettled) == {("a", "cpu", Verdict.FAIL), ("b", "cpu", Verdict.FAIL)}
    assert all("split 1/1" in c.message for c in unsettled if c.provenance == "peers")


def test_devices_of_another_model_are_not_compared_and_a_lone_device_has_only_its_own_checks():
    checks = burnin_checks([_figure("a", "cuda:0", 0), _figure("b", "cuda:0", 1, result="x", model="NVIDIA A100")])
    # No comparison across models: each device has only its own check, a PASS at zero mismatches.
    assert [(c.provenance, c.verdict) for c in checks] == [("rule", Verdict.PASS)] * 2
    own = copy.deepcopy(_figure("a", "cuda:0", 0, value=1))
    own.details["products"][0].update(mismatched_results=1, mismatched_elements=3, first_mismatch_round=7)
    (check,) = burnin_checks([own])
    assert check.verdict is Verdict.FAIL and "1 of its repeats differ" in check.message and "round 7" in check.message
