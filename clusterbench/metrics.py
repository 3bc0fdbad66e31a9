"""Every metric clusterbench knows, by name: a public interface, so names, units and directions stay stable.

The metrics are declared by the probes that measure them (clusterbench.registry); this mapping is
derived from those declarations. A profile may only state expectations on metrics listed here, in
the unit listed here; this is what lets a typo in a profile fail loudly instead of silently never
matching a measurement.
"""

from __future__ import annotations

from clusterbench.registry import FAMILIES, DeclaredMetrics, MetricSpec

METRICS = DeclaredMetrics()

__all__ = ["FAMILIES", "METRICS", "MetricSpec"]
