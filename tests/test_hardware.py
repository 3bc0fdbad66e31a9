"""The accelerator hardware table: the packaged data, device-name matching, and validation."""

from __future__ import annotations

import re

import pytest

from clusterbench.errors import ClusterbenchError
from clusterbench.hardware import (
    KNOWN_DTYPES,
    AcceleratorSpec,
    HardwareTableError,
    SourcedFigure,
    load_hardware_table,
    match_accelerator,
    mig_profile,
    parse_hardware_table,
)

EXPECTED_KEYS = {"a100_sxm", "h100_sxm", "h100_pcie", "h200_sxm", "b200", "mi300x", "mi325x"}
# Entries whose per-link scale-up rate no source we could read states (AMD's MI325X page gives the
# platform's aggregate Infinity Fabric figure only): left out rather than guessed.
NO_SOURCED_SCALEUP_LINK = {"mi325x"}


@pytest.fixture(scope="module")
def table() -> dict[str, AcceleratorSpec]:
    return load_hardware_table()


# --- the packaged table --------------------------------------------------------------------------


def test_packaged_table_loads_every_accelerator(table):
    assert set(table) == EXPECTED_KEYS
    assert all(isinstance(spec, AcceleratorSpec) for spec in table.values())
    assert table["h200_sxm"].name == "H200 SXM"


def test_every_figure_has_a_source(table):
    for spec in table.values():
        figures = spec.figures()
        assert figures, spec.key
        for name, figure in figures.items():
            assert isinstance(figure, SourcedFigure)
            assert figure.value > 0, (spec.key, name)
            assert figure.source.strip(), (spec.key, name)
            assert not figure.source.startswith("@"), f"{spec.key}.{name}: alias not expanded"


def test_core_spec_figures_present(table):
    """Every entry states bf16 peak, HBM size and bandwidth, and its scale-up link where sourced."""
    for spec in table.values():
        assert spec.peak("bf16") is not None, spec.key
        assert spec.memory_gb is not None and spec.memory_bandwidth_gbps is not None, spec.key
        assert (spec.scaleup_link_gbps is None) == (spec.key in NO_SOURCED_SCALEUP_LINK), spec.key
        assert set(spec.peak_tflops) <= set(KNOWN_DTYPES)


def test_published_spec_values(table):
    h100 = table["h100_sxm"]
    # Dense, not the sparse headline (1,979 for bf16).
    assert h100.peak("bf16") == 989.0 and h100.peak("fp8") == 1979.0 and h100.peak("tf32") == 494.5
    assert h100.memory_bandwidth_gbps.value == 3350 and h100.scaleup_link_gbps.value == 450
    assert table["h200_sxm"].memory_gb.value == 141 and table["h200_sxm"].memory_bandwidth_gbps.value == 4800
    pcie = table["h100_pcie"]
    assert (pcie.peak("fp32"), pcie.peak("tf32"), pcie.peak("bf16"), pcie.peak("fp8")) == (51.0, 378.0, 756.0, 1513.0)
    assert pcie.memory_bandwidth_gbps.value == 2000 and pcie.host_pcie_gen.value == 5
    assert table["a100_sxm"].peak("fp8") is None  # no fp8 on Ampere: absent, not invented
    assert table["a100_sxm"].host_link_gbps.value == 31.5 and h100.host_link_gbps.value == 63.0
    assert table["mi300x"].scaleup_link_gbps.value == 448


def test_b200_keeps_the_lower_of_the_published_figures(table):
    b200 = table["b200"]
    assert b200.peak("fp32") == 75.0 and b200.peak("tf32") == 1100.0
    assert b200.memory_bandwidth_gbps.value == 7700
    assert "80" in b200.peak_tflops["fp32"].note and "8 TB/s" in b200.memory_bandwidth_gbps.note
    assert b200.host_link_gbps is None  # sources disagree: left out
    assert "lower" in b200.notes


def test_h100_peak_matches_clock_times_units(table):
    # measurement.md section 3: 1830 MHz x 512 FLOP/clk per tensor core x 2 x 528 tensor cores.
    derived = 1830e6 * 512 * 2 * 528 / 1e12
    assert derived == pytest.approx(989.4, abs=0.05)
    assert table["h100_sxm"].peak("bf16") == pytest.approx(derived, rel=1e-3)


def test_achievable_fractions(table):
    assert table["h100_sxm"].achievable_gemm_fraction["bf16"].value == pytest.approx(794.5 / 989, abs=1e-4)
    assert table["h200_sxm"].achievable_gemm_fraction["fp8"].value == pytest.approx(1453.4 / 1979, abs=1e-4)
    assert table["b200"].achievable_gemm_fraction["fp8"].value == pytest.approx(3432.5 / 4500, abs=1e-4)
    assert table["h200_sxm"].achievable_h2d_fraction.value == pytest.approx(55.4 / 63, abs=1e-4)
    assert table["h100_sxm"].achievable_gemm_tflops("bf16") == pytest.approx(794.5, rel=1e-3)
    assert table["h100_pcie"].achievable_gemm_fraction == {}
    assert table["h100_pcie"].achievable_gemm_tflops("bf16") is None
    assert table["b200"].achievable_copy_fraction is None


_RATIO = re.compile(r"([\d.]+)\s*(?:TB/s|GB/s|TFLOPS)?\s*/\s*([\d.]+)")


def test_achievable_fractions_agree_with_the_numbers_in_their_notes(table):
    """Each fraction's note carries the published 'achieved / spec' pair; the two must agree."""
    checked = 0
    for spec in table.values():
        fractions = {f"gemm_{d}": f for d, f in spec.achievable_gemm_fraction.items()}
        fractions.update(copy=spec.achievable_copy_fraction, scaleup=spec.achievable_scaleup_fraction,
                         h2d=spec.achievable_h2d_fraction)
        for name, figure in fractions.items():
            if figure is None:
                continue
            found = _RATIO.search(figure.note)
            assert found, f"{spec.key}.{name}: note should state 'achieved / spec': {figure.note!r}"
            achieved, of = float(found.group(1)), float(found.group(2))
            assert figure.value == pytest.approx(achieved / of, abs=1e-3), (spec.key, name)
            checked += 1
    assert checked >= 15


# --- matching device names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device_name, key",
    [
        ("NVIDIA H100 80GB HBM3", "h100_sxm"),
        ("NVIDIA H100 PCIe", "h100_pcie"),
        ("nvidia h100 pcie", "h100_pcie"),
        ("NVIDIA H200", "h200_sxm"),
        ("NVIDIA A100-SXM4-80GB", "a100_sxm"),
        ("NVIDIA A100-SXM-80GB", "a100_sxm"),
        ("NVIDIA A100 80GB", "a100_sxm"),
        ("NVIDIA B200", "b200"),
        ("AMD Instinct MI300X", "mi300x"),
        ("AMD Instinct MI300X VF", "mi300x"),
        # Other SKUs with other figures: unknown rather than wrong.
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA GH200 480GB", None),
        ("NVIDIA H20", None),
        ("NVIDIA GB200", None),
        ("NVIDIA A100-SXM4-40GB", None),
        ("NVIDIA A100 80GB PCIe", None),
        ("NVIDIA A100-PCIE-40GB", None),
        ("AMD Instinct MI300A", None),
        ("NVIDIA GeForce RTX 4090", None),
        ("Intel(R) Xeon(R) Platinum 8480C", None),
        ("AMD EPYC 9654 96-Core Processor", None),
        ("cpu", None),
        ("", None),
    ],
)
def test_match_accelerator(table, device_name, key):
    spec = match_accelerator(device_name, table)
    assert (spec.key if spec else None) == key


def test_h100_pcie_is_not_claimed_by_the_sxm_entry(table):
    assert not table["h100_sxm"].matches("NVIDIA H100 PCIe")
    assert table["h100_pcie"].matches("NVIDIA H100 PCIe")
    assert not table["h100_pcie"].matches("NVIDIA H100 80GB HBM3")


@pytest.mark.parametrize("device_name", [
    "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
    "NVIDIA H100 80GB HBM3 MIG 1g.10gb+me",
    "NVIDIA H200 MIG 7g.141gb",
    "NVIDIA B200 MIG 1g.23gb",
    "NVIDIA A100-SXM4-80GB MIG 2g.20gb",
])
def test_a_mig_slice_is_not_claimed_by_its_whole_gpu_entry(table, device_name):
    assert match_accelerator(device_name, table) is None
    assert mig_profile(device_name).startswith("MIG ")


def test_an_entry_that_names_mig_may_claim_a_slice():
    specs = parse_hardware_table(
        "[h100_3g]\nname = \"H100 MIG 3g.40gb\"\nmatch = ['\\bH100\\b.*\\bMIG 3g\\.40gb']\n"
    )
    assert match_accelerator("NVIDIA H100 80GB HBM3 MIG 3g.40gb", specs).key == "h100_3g"
    assert match_accelerator("NVIDIA H100 80GB HBM3", specs) is None
    assert mig_profile("NVIDIA H100 80GB HBM3") is None


def test_match_uses_the_packaged_table_by_default():
    assert match_accelerator("NVIDIA H100 80GB HBM3").key == "h100_sxm"


def test_two_entries_claiming_one_name_is_an_error():
    specs = parse_hardware_table(_entry("a") + _entry("b"))
    with pytest.raises(HardwareTableError, match=r"claimed by several entries \(a, b\)"):
        match_accelerator("NVIDIA H100 80GB HBM3", specs)


def test_to_json_round_trips_figures(table):
    data = table["h200_sxm"].to_json()
    assert data["key"] == "h200_sxm"
    assert data["figures"]["peak_tflops.bf16"]["value"] == 989.0
    assert data["figures"]["achievable_h2d_fraction"]["source"]


# --- malformed tables -----------------------------------------------------------------------------


def _entry(key: str = "gpu", extra: str = "", bf16: str = 'value = 989.0, source = "datasheet"') -> str:
    return f"""
[{key}]
name = "Test GPU"
match = ['H100']
{extra}
[{key}.peak_tflops]
bf16 = {{ {bf16} }}
"""


def test_minimal_table_and_aliases_load(tmp_path):
    path = tmp_path / "hw.toml"
    path.write_text('[sources]\nds = "Vendor datasheet, table 1"\n' + _entry(bf16='value = 10, source = "@ds"'))
    spec = load_hardware_table(path)["gpu"]
    assert spec.peak_tflops["bf16"] == SourcedFigure(10.0, "Vendor datasheet, table 1")
    assert spec.memory_gb is None and spec.achievable_copy_fraction is None and spec.host_pcie_gen is None


@pytest.mark.parametrize(
    "text, message",
    [
        (_entry(bf16="value = 989.0"), r"\[gpu\.peak_tflops\.bf16\] has no source"),
        (_entry(bf16='value = 989.0, source = "  "'), r"\[gpu\.peak_tflops\.bf16\] has no source"),
        (_entry(bf16='value = -1.0, source = "x"'), r"\[gpu\.peak_tflops\.bf16\] value must be positive, got -1.0"),
        (_entry(bf16='value = 0, source = "x"'), r"value must be positive"),
        (_entry(bf16='value = "989", source = "x"'), r"value must be a number, got str"),
        (_entry(bf16='value = nan, source = "x"'), r"value must be positive"),
        (_entry(bf16='value = 1, source = "@nowhere"'), r"source '@nowhere' is not in \[sources\]"),
        (_entry(bf16='value = 1, source = "x", sauce = "y"'), r"unknown field 'sauce'; did you mean 'source'\?"),
        (
            _entry() + '[gpu.achievable]\ngemm_bf16 = { value = 1.2, source = "x" }\n',
            r"\[gpu\.achievable\.gemm_bf16\] value is a fraction of spec and must be in \(0, 1\], got 1.2",
        ),
        (
            _entry() + '[gpu.achievable]\ngemm_fp8 = { value = 0.7, source = "x" }\n',
            r"\[gpu\.achievable\.gemm_fp8\] a GEMM fraction needs a peak",
        ),
        (
            _entry() + '[gpu.peak_tflops.bfloat16]\nvalue = 1.0\nsource = "x"\n',
            r"\[gpu\.peak_tflops\.bfloat16\] unknown dtype 'bfloat16'; did you mean 'bf16'\?",
        ),
        (
            _entry() + '[gpu.peak_tflops.int4]\nvalue = 1.0\nsource = "x"\n',
            r"unknown dtype 'int4' \(known: fp32, tf32, bf16, fp16, fp8\)",
        ),
        (
            _entry() + '[gpu.links]\nhost_pcie_gen = { value = 7, source = "x" }\n',
            r"\[gpu\.links\.host_pcie_gen\] must be a PCIe generation",
        ),
        (_entry(extra="speed = 3"), r"\[gpu\.speed\] unknown field 'speed'"),
        (_entry().replace('name = "Test GPU"', ""), r"\[gpu\.name\] is required"),
        (_entry().replace("match = ['H100']", "match = []"), r"\[gpu\.match\] must name at least one"),
        (
            _entry().replace("match = ['H100']", "match = ['H100(']"),
            r"\[gpu\.match\] pattern 'H100\(' is not a valid regex",
        ),
        ("version = 1\n" + _entry(), r"\[version\] top-level key must be an accelerator table"),
        ("", r"names no accelerator"),
        (_entry() + "[gpu.memory\nsize_gb = 1\n", r"not valid TOML: .*line"),
    ],
    ids=[
        "missing-source", "blank-source", "negative-value", "zero-value", "string-value", "nan-value",
        "unknown-alias", "misspelt-field", "fraction-above-one", "fraction-without-peak", "misspelt-dtype",
        "unknown-dtype", "bad-pcie-gen", "unknown-entry-field", "missing-name", "empty-match", "bad-regex",
        "top-level-scalar", "empty-table", "bad-toml",
    ],
)
def test_malformed_table_is_one_clear_error(tmp_path, text, message):
    path = tmp_path / "hw.toml"
    path.write_text(text)
    with pytest.raises(HardwareTableError, match=message) as info:
        load_hardware_table(path)
    error = str(info.value)
    assert error.startswith(f"{path}: ")  # names the file
    assert "\n" not in error  # one line
    # One clear line for the user: a ClusterbenchError, and still a ValueError for library callers.
    assert isinstance(info.value, ClusterbenchError) and isinstance(info.value, ValueError)


def test_missing_file_is_a_table_error(tmp_path):
    with pytest.raises(HardwareTableError, match=r"nope\.toml: cannot read hardware table"):
        load_hardware_table(tmp_path / "nope.toml")
