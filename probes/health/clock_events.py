"""Decode NVML clock-event (formerly "throttle") reason bitmasks into names, and classify them.

The bit values are NVML's ABI (nvml.h `nvmlClocksEventReason*`, identical to the older
`nvmlClocksThrottleReason*`), written out here so decoding does not depend on which binding
version is installed.
"""

from __future__ import annotations

CLOCK_EVENT_BITS: dict[int, str] = {
    0x001: "GpuIdle",
    0x002: "ApplicationsClocksSetting",
    0x004: "SwPowerCap",
    0x008: "HwSlowdown",
    0x010: "SyncBoost",
    0x020: "SwThermalSlowdown",
    0x040: "HwThermalSlowdown",
    0x080: "HwPowerBrakeSlowdown",
    0x100: "DisplayClockSetting",
}

# Reasons that say nothing about the GPU's health: idle, clocks an operator chose, clocks held
# together with other GPUs in a sync-boost group, or a display-clock setting.
BENIGN = frozenset({"GpuIdle", "ApplicationsClocksSetting", "SyncBoost", "DisplayClockSetting"})

# Reasons that mean the GPU could not run at the clocks it was asked for because of power or heat.
THROTTLING = frozenset(
    {"SwPowerCap", "HwSlowdown", "HwThermalSlowdown", "HwPowerBrakeSlowdown", "SwThermalSlowdown"}
)

# SwPowerCap alone is the GPU running at its power limit, which dense GEMM on a healthy H100/H200
# does by design; the others point at cooling, power delivery or a hardware protection tripping.
POWER_CAP = "SwPowerCap"
THERMAL = frozenset({"HwThermalSlowdown", "SwThermalSlowdown"})


def decode(mask: int) -> list[str]:
    """Names of the reasons set in `mask`; bits this table does not know appear as hex."""
    names = [name for bit, name in CLOCK_EVENT_BITS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_BITS)
    if unknown:
        names.append(f"Unknown(0x{unknown:x})")
    return names


def throttling(names: list[str] | set[str] | frozenset[str]) -> list[str]:
    """The power/thermal reasons among `names`, sorted."""
    return sorted(set(names) & THROTTLING)
