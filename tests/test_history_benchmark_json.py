"""Our figures in pytest-benchmark's JSON: beside its entries, with units and directions."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from clusterbench.history.benchmark_json import clusterbench_section
from clusterbench.model import Better, Check, Verdict

sys.path.insert(0, str(Path(__file__).parent))
from history_results import measurement, results


def test_section_carries_units_directions_and_regressions():
    run = results([measurement("memory.copy_gbps", 17.5), measurement("storage.randread_p99_us", 250.0, unit="us")])
    run.run.run_id = "20260102T000000Z-abcdef"
    run.checks.append(Check("memory.copy_gbps", {}, Verdict.FAIL, 17.5, 25.0, "GB/s", "history", "window",
                            "regression"))
    run.checks.append(Check("memory.copy_gbps", {}, Verdict.PASS, 17.5, 10.0, "GB/s", "spec", "sheet", "ok"))
    section = json.loads(json.dumps(clusterbench_section(run)))
    assert section["run_id"] == "20260102T000000Z-abcdef" and "--compare" in section["about"]
    figures = {m["metric"]: m for m in section["measurements"]}
    assert (figures["memory.copy_gbps"]["unit"], figures["memory.copy_gbps"]["better"]) == ("GB/s", Better.HIGHER.value)
    assert (figures["storage.randread_p99_us"]["unit"], figures["storage.randread_p99_us"]["better"]) == ("us", "lower")
    assert figures["memory.copy_gbps"]["name"] == "memory.copy_gbps@node1/cpu"
    assert [c["provenance"] for c in section["regressions"]] == ["history"]
