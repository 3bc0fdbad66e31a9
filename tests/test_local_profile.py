"""The built-in `local` profile: expectations from the hardware table, or none, said explicitly."""

import pytest

from clusterbench.hardware import load_hardware_table
from clusterbench.local_profile import (
    LOCAL_TOLERANCE,
    build_local_profile,
    expectations_from_table,
    gemm_dtypes_not_expected,
)
from clusterbench.model import Provenance
from clusterbench.probes.devices import LocalDevice
from clusterbench.probes.gemm_shapes import PUBLISHED_BEST_SHAPES, published_best_shapes


def gpu(name: str, index: int = 0) -> LocalDevice:
    return LocalDevice(f"cuda:{index}", "cuda", index, name, 141 * 10**9, (9, 0), 132)


def by_key(profile):
    return {(e.metric, e.params.get("dtype")): e for e in profile.expectations}


def test_h200_expectations_are_the_published_achievable_figures():
    profile = build_local_profile([gpu("NVIDIA H200", i) for i in range(8)])
    expectations = by_key(profile)
    assert expectations[("gemm.tflops", "bf16")].target == pytest.approx(794.5, abs=0.5)
    assert expectations[("gemm.tflops", "fp8")].target == pytest.approx(1453.4, abs=0.5)
    assert expectations[("memory.h2d_gbps", None)].target == pytest.approx(55.4, abs=0.1)
    assert 3900 < expectations[("memory.copy_gbps", None)].target < 4400
    for e in profile.expectations:
        assert e.provenance is Provenance.ACHIEVABLE and e.tolerance == LOCAL_TOLERANCE
        assert "ml-engineering" in e.source or "azure" in e.source.lower(), e.source
    # No published fp32/tf32/fp16 achievable figure: no invented expectation for them.
    assert ("gemm.tflops", "fp32") not in expectations and ("gemm.tflops", "fp16") not in expectations
    assert profile.cluster.accelerators_per_node == 8 and profile.cluster.accelerator == "NVIDIA H200"


def test_every_table_entry_yields_sourced_expectations():
    for spec in load_hardware_table().values():
        for e in expectations_from_table(spec):
            assert e.target > 0 and e.source


def test_unknown_accelerator_and_cpu_state_no_expectation():
    unknown = build_local_profile([gpu("NVIDIA GeForce RTX 4090")])
    assert unknown.expectations == () and "not in the hardware table" in unknown.notes[0]
    cpu = build_local_profile()  # this machine: no GPU
    assert cpu.expectations == () and cpu.cluster.accelerators_per_node == 0
    assert "no accelerator" in cpu.notes[0]


def test_mixed_accelerators_state_no_common_expectation():
    profile = build_local_profile([gpu("NVIDIA H200", 0), gpu("NVIDIA H100 80GB HBM3", 1)])
    assert profile.expectations == () and "mixed accelerators" in profile.notes[0]


def test_every_local_gemm_target_stands_on_a_shape_the_sweeps_measure():
    table = load_hardware_table()
    for spec in table.values():
        for expectation in expectations_from_table(spec):
            if expectation.metric != "gemm.tflops":
                continue
            dtype = expectation.params["dtype"]
            shape = published_best_shapes(spec.key)[dtype]
            assert expectation.source.startswith("long search:") and shape.label in expectation.source
        assert gemm_dtypes_not_expected(spec) == []  # today every published fraction has its shape


def test_a_gemm_fraction_without_a_published_shape_is_not_expected(monkeypatch):
    spec = load_hardware_table()["h200_sxm"]
    monkeypatch.setitem(PUBLISHED_BEST_SHAPES, "h200_sxm", {"bf16": PUBLISHED_BEST_SHAPES["h200_sxm"]["bf16"]})
    dtypes = [e.params.get("dtype") for e in expectations_from_table(spec) if e.metric == "gemm.tflops"]
    assert dtypes == ["bf16"] and gemm_dtypes_not_expected(spec) == ["fp8"]
    notes = build_local_profile([gpu("NVIDIA H200")]).notes
    assert any(n.startswith("fp8 GEMM not expected") for n in notes), notes


@pytest.mark.parametrize("name", ["NVIDIA H100 80GB HBM3 MIG 3g.40gb", "NVIDIA H200 MIG 1g.18gb"])
def test_a_mig_slice_gets_no_spec_derived_expectation(name):
    whole_gpu = build_local_profile([gpu(name.split(" MIG ")[0])])
    assert whole_gpu.expectations, "the whole GPU is in the table: the slice must be refused for being a slice"
    profile = build_local_profile([gpu(name)])
    assert profile.expectations == ()
    assert "is a MIG slice" in profile.notes[0] and name.split(" MIG ")[1] in profile.notes[0]


def test_a_mig_slice_reports_no_mfu_from_the_whole_gpus_peak():
    from clusterbench.runners.training import device_peak

    assert device_peak([gpu("NVIDIA H100 80GB HBM3")], "bf16")[0] is not None
    peak, why = device_peak([gpu("NVIDIA H100 80GB HBM3 MIG 3g.40gb")], "bf16")
    assert peak is None and "MIG slice (MIG 3g.40gb)" in why
