"""DCGM's diagnostic (`dcgmi diag -r <level> -j`), once per node: every result DCGM gave, as it gave it.

DCGM 3.x writes {"DCGM GPU Diagnostic": {"test_categories": [{"category", "tests": [{"name",
"results": [{"status", "gpu_id"?, "warnings"?, "info"?}]}]}]}}; DCGM 4.x renames the top key to
"DCGM Diagnostic", names each result's entity (entity_group, entity_id) and adds a test_summary. A
warning carries DCGM's error_id, error_category and error_severity (dcgm_errors.h); the severity is
DCGM's own recovery class (monitor, isolate, triage, reconfigure, reset), kept as DCGM words it.
A "Skip" is kept as a skip: level 3 can "pass" with every stress test skipped (NVIDIA/DCGM#55, #139).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from clusterbench.model import Location, Measurement, NotMeasured, ProbeFailed
from clusterbench.probes.vendor import find_tool, run_tool
from clusterbench.registry import declare_probe, metric

METRIC = "dcgm.diag_failures"
PROBE = declare_probe("dcgm_diag", per="node", settings=("dcgm_diag_level",), module=__name__, metrics=[
    metric(METRIC, "count", "lower", "health", "results DCGM's diagnostic (dcgmi diag -r <dcgm_diag_level>) "
           "reported as Fail on this node", ("level",), must_be_zero=True),
])

INSTALL_HINT = "install NVIDIA DCGM (datacenter-gpu-manager) and start nv-hostengine"
# How long each level may take before dcgmi is called hung: DCGM's own estimates times ~4.
LEVEL_TIMEOUT_S = {1: 300, 2: 900, 3: 3600, 4: 4 * 3600}
# dcgmErrorSeverity_t of dcgm_errors.h, with DCGM's own comment on each.
SEVERITY_ACTIONS = {
    0: "none",
    1: "can perform workload, but needs to be monitored (DCGM_ERROR_MONITOR)",
    2: "cannot perform workload: isolate the GPU (DCGM_ERROR_ISOLATE)",
    3: "error code not recognized by DCGM (DCGM_ERROR_UNKNOWN)",
    4: "triage the error: run a field diagnostic on the GPU (DCGM_ERROR_TRIAGE)",
    5: "fix the configuration (DCGM_ERROR_CONFIG)",
    6: "drain and reset the GPU (DCGM_ERROR_RESET)",
}
# dcgmErrorCategory_t of dcgm_errors.h.
CATEGORIES = {
    0: "none", 1: "performance threshold", 2: "performance violation", 3: "software configuration",
    4: "software library", 5: "software XID", 6: "software CUDA", 7: "software EUD", 8: "software other",
    9: "hardware thermal", 10: "hardware memory", 11: "hardware NVLink", 12: "hardware NVSwitch",
    13: "hardware PCIe", 14: "hardware power", 15: "hardware other", 16: "internal other",
}
NO_HOSTENGINE = ("Unable to establish a connection", "host engine", "Connection refused")


@dataclass(frozen=True)
class DcgmMessage:
    """One warning (or info line) of a result, with DCGM's codes where it gave them."""

    text: str
    error_id: int | None = None
    category: int | None = None
    severity: int | None = None

    @property
    def action(self) -> str:
        if self.severity is None:
            return ("see DCGM error " + str(self.error_id) + " in DCGM's diagnostic errors reference"
                    if self.error_id is not None else "")
        return SEVERITY_ACTIONS.get(self.severity, f"DCGM severity {self.severity}")


@dataclass(frozen=True)
class DcgmResult:
    """One result of one test: for one GPU (entity) or, in DCGM 3.x software tests, the whole node."""

    category: str
    test: str
    entity: str  # "GPU 0", or "node" when DCGM names none
    status: str  # "Pass", "Fail", "Warn", "Skip" (as DCGM spells them)
    warnings: tuple[DcgmMessage, ...] = ()
    info: tuple[str, ...] = ()


@dataclass
class DcgmReport:
    level: int
    results: list[DcgmResult] = field(default_factory=list)
    version: str = ""
    runtime_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_diag_json(text: str, level: int) -> DcgmReport:
    """A `dcgmi diag -j` document, DCGM 3.x or 4.x; ProbeFailed when it is none."""
    start = text.find("{")
    try:
        document = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError as exc:
        raise ProbeFailed(f"dcgmi diag -j printed JSON that does not parse: {exc}") from None
    body = None
    if isinstance(document, dict):
        body = document.get("DCGM Diagnostic", document.get("DCGM GPU Diagnostic"))
    if not isinstance(body, dict):
        raise ProbeFailed("dcgmi diag -j printed no 'DCGM Diagnostic' document")
    assert isinstance(document, dict)  # the body came from it
    report = DcgmReport(level, version=str((document.get("metadata") or {}).get("version", "")),
                        runtime_error=str(body.get("runtime_error", "")))
    for category in body.get("test_categories", []):
        for test in category.get("tests", []):
            for result in test.get("results", []):
                report.results.append(DcgmResult(
                    category=str(category.get("category", "")),
                    test=str(test.get("name", "")),
                    entity=_entity(result),
                    status=str(result.get("status", "")),
                    warnings=tuple(_message(w) for w in result.get("warnings", []) or []),
                    info=tuple(str(i.get("info", i)) if isinstance(i, dict) else str(i)
                               for i in result.get("info", []) or []),
                ))
    return report


def _entity(result: dict[str, Any]) -> str:
    if "entity_id" in result:
        return f"{result.get('entity_group', 'GPU')} {result['entity_id']}"
    gpu = result.get("gpu_id", result.get("gpu_ids"))
    return f"GPU {gpu}" if gpu not in (None, "") else "node"


def _message(warning: Any) -> DcgmMessage:
    if not isinstance(warning, dict):
        return DcgmMessage(str(warning))

    def code(key: str) -> int | None:
        value = warning.get(key)
        return int(value) if isinstance(value, (int, str)) and str(value).lstrip("-").isdigit() else None

    return DcgmMessage(str(warning.get("warning", warning.get("message", ""))), code("error_id"),
                       code("error_category"), code("error_severity"))


def run_dcgm_diag(level: int, timeout_s: float | None = None) -> DcgmReport:
    """`dcgmi diag -r <level> -j` on this node. dcgmi exits non-zero when a test fails; its JSON still
    says which, so the JSON decides and the exit status only matters when there is none."""
    if level == 0:
        raise NotMeasured("[settings] dcgm_diag_level = 0: DCGM's diagnostic is skipped")
    binary = find_tool("dcgmi", install_hint=INSTALL_HINT)
    result = run_tool([binary, "diag", "-r", str(level), "-j"], timeout_s or LEVEL_TIMEOUT_S[level])
    if "{" not in result.stdout:
        said = result.last_line()
        if any(marker in result.stdout + result.stderr for marker in NO_HOSTENGINE):
            raise NotMeasured(f"dcgmi cannot reach nv-hostengine: {said}")
        raise ProbeFailed(f"dcgmi diag -r {level} -j failed with exit status {result.returncode}: {said}")
    report = parse_diag_json(result.stdout, level)
    if report.runtime_error:
        raise ProbeFailed(f"dcgmi diag -r {level}: {report.runtime_error}")
    return report


def failures(report: DcgmReport, location: Location) -> Measurement:
    """"dcgm.diag_failures": the count of Fail results, with every result in the details."""
    failed = [r for r in report.results if r.status.lower() == "fail"]
    return Measurement(METRIC, float(len(failed)), "count", {"level": report.level}, location,
                       details={"dcgm_version": report.version, "results": [asdict(r) for r in report.results]})
