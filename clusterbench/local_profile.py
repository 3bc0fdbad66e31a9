"""The built-in `local` profile: derived from the machine the run is on and the hardware table.

For a known accelerator it expects at least LOCAL_TOLERANCE short of each published achievable
figure (mamf-finder GEMM, HBM copy, host-to-device). Where the table publishes nothing, or the
device is unknown or a CPU, it states no expectation: the probes still measure, and the reports say
"no expectation" for those figures instead of judging them against an invented number.

A GEMM maximum comes from a long search; it is expected only where its best shape is published,
because the GPU sweeps (quick and full) then measure that very shape (probes/gemm_shapes.py). A
maximum whose shape is unknown is not expected of a sweep that cannot be shown to contain it.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from clusterbench.hardware import AcceleratorSpec, SourcedFigure, match_accelerator, mig_profile
from clusterbench.model import Better, Expectation, Provenance
from clusterbench.probes.gemm_shapes import published_best_shapes
from clusterbench.profile import ClusterInfo, Profile, Settings

if TYPE_CHECKING:
    from clusterbench.probes.devices import LocalDevice

# Pass at 90% of a published achievable figure, warn below 95%: well-cooled production parts reach
# the published means, and a 5% run-to-run spread between GPUs is common (mamf-finder notes).
LOCAL_TOLERANCE = 0.10
LOCAL_WARN = 0.05
ORIGIN = "built-in local profile"


def _expectation(metric: str, unit: str, target: float, source: str, params: dict | None = None) -> Expectation:
    return Expectation(
        metric=metric,
        target=round(target, 1),
        unit=unit,
        better=Better.HIGHER,
        tolerance=LOCAL_TOLERANCE,
        warn=LOCAL_WARN,
        provenance=Provenance.ACHIEVABLE,
        source=source,
        params=params or {},
        origin=ORIGIN,
    )


def _derived(fraction: SourcedFigure, base: SourcedFigure, base_label: str) -> str:
    return f"{fraction.value:.1%} of {base_label} {base.value:g}: {fraction.citation}; {base_label}: {base.source}"


SWEEP_NOTE = "a shape clusterbench's quick and full GPU sweeps both measure"


def _gemm_source(dtype: str, fraction: SourcedFigure, peak: SourcedFigure, spec: AcceleratorSpec) -> str | None:
    """Which search a GEMM target stands on (the long search, at its published best shape), or None
    where that shape is not published."""
    shape = published_best_shapes(spec.key).get(dtype)
    if shape is None:
        return None
    return f"{shape.citation(dtype)}, {SWEEP_NOTE}; target {_derived(fraction, peak, f'{dtype} dense peak')}"


def gemm_dtypes_not_expected(spec: AcceleratorSpec) -> list[str]:
    """Dtypes with a published GEMM fraction but no published best shape: not expected (see above)."""
    return [d for d in spec.achievable_gemm_fraction if d not in published_best_shapes(spec.key)]


def expectations_from_table(spec: AcceleratorSpec) -> list[Expectation]:
    """Achievable-figure expectations for one accelerator model; only what the table publishes."""
    expectations = []
    for dtype, fraction in spec.achievable_gemm_fraction.items():
        peak = spec.peak_tflops.get(dtype)
        if peak is None:
            continue
        source = _gemm_source(dtype, fraction, peak, spec)
        if source is not None:
            expectations.append(
                _expectation("gemm.tflops", "TFLOP/s", fraction.value * peak.value, source, {"dtype": dtype})
            )
    if spec.achievable_copy_fraction and spec.memory_bandwidth_gbps:
        expectations.append(
            _expectation(
                "memory.copy_gbps", "GB/s", spec.achievable_copy_fraction.value * spec.memory_bandwidth_gbps.value,
                _derived(spec.achievable_copy_fraction, spec.memory_bandwidth_gbps, "HBM bandwidth"),
            )
        )
    if spec.achievable_h2d_fraction and spec.host_link_gbps:
        expectations.append(
            _expectation(
                "memory.h2d_gbps", "GB/s", spec.achievable_h2d_fraction.value * spec.host_link_gbps.value,
                _derived(spec.achievable_h2d_fraction, spec.host_link_gbps, "host link"),
            )
        )
    return expectations


def build_local_profile(devices: list[LocalDevice] | None = None) -> Profile:
    """The profile of this machine; `devices` defaults to what torch sees here."""
    if devices is None:
        from clusterbench.probes.devices import local_devices  # imports torch: only when asked for

        devices = local_devices()
    accelerators = [d for d in devices if d.kind != "cpu"]
    names = sorted({d.name for d in accelerators})
    notes: list[str] = []
    expectations: list[Expectation] = []
    if not accelerators:
        model = devices[0].name if devices else "cpu"
        notes.append(f"no accelerator: measuring the CPU ({model}); no expectation is stated for a CPU")
    elif len(names) > 1:
        model = " + ".join(names)
        notes.append(f"mixed accelerators ({model}): no common expectation; peers are compared per figure")
    else:
        model = names[0]
        spec = match_accelerator(model)
        slice_profile = mig_profile(model)
        if slice_profile is not None:
            # A slice has a fraction of the GPU's SMs and memory bandwidth: no whole-GPU figure applies.
            notes.append(f"'{model}' is a MIG slice ({slice_profile}): no spec-derived "
                         "expectation; measuring with none")
        elif spec is None:
            notes.append(f"'{model}' is not in the hardware table: measuring with no expectation")
        else:
            expectations = expectations_from_table(spec)
            notes.append(
                f"'{model}' is {spec.name} in the hardware table: expecting at least "
                f"{1 - LOCAL_TOLERANCE:.0%} of each published achievable figure"
            )
            for dtype in gemm_dtypes_not_expected(spec):
                notes.append(f"{dtype} GEMM not expected: the long search's best shape on {spec.name} is not "
                             "published, so no sweep can be shown to contain it")
    cluster = ClusterInfo(
        name="local",
        nodes=1,
        accelerators_per_node=len(accelerators),
        accelerator=model,
        description=f"this machine ({socket.gethostname()}), detected",
    )
    return Profile(cluster=cluster, settings=Settings(), expectations=tuple(expectations), notes=tuple(notes))
