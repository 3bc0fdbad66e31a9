"""clusterbench's figures in pytest-benchmark's JSON (--benchmark-json, --benchmark-save).

Our probes time their own loops (warm-up, device sync, medians of raw samples) and report rates and
latencies in their units: TFLOP/s, GB/s, IOPS, us. pytest-benchmark's `benchmarks[]` entries hold
seconds-per-call statistics of its own fixture's rounds, and its comparison assumes that bigger is
worse; an entry made from a GB/s figure would be a fake of those statistics and would be compared in
the wrong direction. So our figures go beside its entries, under a top-level "clusterbench" key, each
with its unit and direction; benchmarks that do use its fixture keep their JSON and their
--benchmark-compare untouched. The regression gate is clusterbench's own --compare, which knows
units and directions.

pytest-benchmark writes a JSON file only when at least one test used its fixture; a run of the
acceptance suite alone gives it nothing to write.
"""

from __future__ import annotations

from typing import Any

from clusterbench.judge import Scope
from clusterbench.metrics import METRICS
from clusterbench.model import Provenance
from clusterbench.results import RunResults


def clusterbench_section(results: RunResults) -> dict[str, Any]:
    info = results.run
    return {
        "about": "clusterbench figures in their own units and directions; the regression gate is "
        "clusterbench --compare (pytest-benchmark's stats are seconds per call and cannot hold them)",
        "run_id": info.run_id,
        "cluster": info.cluster,
        "verdict": results.verdict,
        "measurements": [
            {
                "name": f"{Scope(m.metric, dict(m.params)).label()}@{m.location.host}/{m.location.device}",
                **m.to_json(),
                "better": METRICS[m.metric].better.value if m.metric in METRICS else None,
            }
            for m in results.measurements
        ],
        "regressions": [c.to_json() for c in results.checks if c.provenance == Provenance.HISTORY.value],
    }
