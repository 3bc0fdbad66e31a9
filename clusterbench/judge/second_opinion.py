"""Second opinions: nccl-tests' figures beside ours, and DCGM's diagnostic results, as checks.

nccl-tests and our sweep measure the same quantity (busbw as nccl-tests defines it) at the same
sizes; where both have a size and mode, a gap beyond `[settings] second_opinion_tolerance` is a WARN
naming both figures: one of the two measurements is not what it claims, and nobody should trust
either until the gap is explained. It warns rather than fails: neither figure is an expectation.

DCGM's results become checks one by one where they are not a pass (a Skip is NOT MEASURED, never a
pass), each with DCGM's error code, category and its own recovery action; the passes of a node are
one PASS.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from clusterbench.model import Better, Check, Location, Measurement, Provenance, Verdict
from clusterbench.probes.vendor.dcgm_diag import CATEGORIES, DcgmMessage

NCCL_TESTS_SOURCE = "nccl-tests' own binary on the same node, same sizes"
DCGM_SOURCE = "DCGM diagnostic (dcgmi diag), its own verdict and error codes"


@dataclass(frozen=True)
class Comparison:
    """Their busbw and ours at one size and mode; `ours_gbps` None where our sweep has no such size."""

    op: str
    size_bytes: int
    inplace: bool
    theirs_gbps: float
    ours_gbps: float | None

    @property
    def gap(self) -> float | None:
        """|ours - theirs| / theirs, None when either side is missing or theirs is 0 (tiny sizes)."""
        if self.ours_gbps is None or not self.theirs_gbps:
            return None
        return abs(self.ours_gbps - self.theirs_gbps) / self.theirs_gbps


def compare_busbw(theirs: Iterable[Measurement], ours: Iterable[Measurement]) -> list[Comparison]:
    """nccl-tests' busbw figures of one op beside our sweep's busbw figures of that op, by size and mode."""
    ours_at = {(int(m.params["size_bytes"]), bool(m.params.get("inplace"))): m.value for m in ours}
    return [
        Comparison(str(m.params["op"]), int(m.params["size_bytes"]), bool(m.params["inplace"]), m.value,
                   ours_at.get((int(m.params["size_bytes"]), bool(m.params["inplace"]))))
        for m in theirs
    ]


# Below this, busbw is latency, not bandwidth: nccl-tests prints it with two decimals (0.01-3 GB/s up
# to tens of KiB, so rounding alone is up to 50%), and torch.distributed's fixed cost per op is larger
# than nccl-tests' tight loop by design. Sizes from here on are compared; all are shown side by side.
MIN_COMPARED_BYTES = 1 << 20


def second_opinion_checks(comparisons: list[Comparison], tolerance: float, location: Location | None) -> list[Check]:
    """A WARN for each size from MIN_COMPARED_BYTES where the two figures differ beyond `tolerance`;
    else one PASS for the op."""
    compared = [c for c in comparisons if c.gap is not None and c.size_bytes >= MIN_COMPARED_BYTES]
    if not compared:
        return []
    op = compared[0].op
    source = f"{NCCL_TESTS_SOURCE}; second_opinion_tolerance {tolerance:.0%}"
    checks = [
        Check(metric="nccltests.busbw_gbps", params={"op": c.op, "size_bytes": c.size_bytes, "inplace": c.inplace},
              verdict=Verdict.WARN, observed=c.ours_gbps, target=c.theirs_gbps, unit="GB/s",
              provenance=Provenance.RULE.value, source=source, better=Better.HIGHER, location=location,
              message=(f"{c.op} {'in-place' if c.inplace else 'out-of-place'} at {c.size_bytes} B: ours "
                       f"{c.ours_gbps:.4g} GB/s, nccl-tests {c.theirs_gbps:.4g} GB/s, {c.gap:.0%} apart "
                       f"(beyond {tolerance:.0%}): one of the two is not measuring what it claims"))
        for c in compared if (c.gap or 0.0) > tolerance
    ]
    if checks:
        return checks
    worst = max(compared, key=lambda c: c.gap or 0.0)  # every c.gap is known here (filtered above)
    return [Check(metric="nccltests.busbw_gbps", params={"op": op}, verdict=Verdict.PASS, observed=None, target=None,
                  unit="GB/s", provenance=Provenance.RULE.value, source=source, location=location,
                  message=(f"{op}: ours and nccl-tests agree within {tolerance:.0%} at all {len(compared)} sizes "
                           f"compared (widest gap {worst.gap:.1%} at {worst.size_bytes} B)"))]


def dcgm_result_checks(host: str, report: Mapping[str, Any]) -> list[Check]:
    """One node's DcgmReport.to_json() as checks: each non-pass result alone, the passes as one PASS."""
    level = report["level"]
    checks: list[Check] = []
    passed = 0
    for result in report["results"]:
        status = result["status"].lower()
        if status == "pass":
            passed += 1
            continue
        verdict = {"fail": Verdict.FAIL, "warn": Verdict.WARN}.get(status, Verdict.NOT_MEASURED)
        checks.append(Check(
            metric="dcgm.diag_failures", params={"level": level, "test": result["test"]}, verdict=verdict,
            observed=None, target=None, unit="", provenance=Provenance.RULE.value, source=DCGM_SOURCE,
            message=_dcgm_message(host, result), location=Location(host=host, rank=-1, device=_device(result)),
        ))
    if passed:
        checks.append(Check(metric="dcgm.diag_failures", params={"level": level}, verdict=Verdict.PASS, observed=None,
                            target=None, unit="", provenance=Provenance.RULE.value, source=DCGM_SOURCE,
                            message=f"host {host}: {passed} DCGM level {level} result(s) passed",
                            location=Location(host=host, rank=-1, device="node")))
    return checks


def _device(result: Mapping[str, Any]) -> str:
    entity = result["entity"]
    return "node" if entity == "node" else entity.replace("GPU ", "gpu")


def _dcgm_message(host: str, result: Mapping[str, Any]) -> str:
    where = f"host {host} {result['entity']}" if result["entity"] != "node" else f"host {host}"
    said = f"DCGM {result['category']}/{result['test']} on {where}: {result['status']}"
    if result["status"].lower() == "skip":
        said += " (skipped: this test gave no evidence either way)"
    parts = [said]
    for warning in result["warnings"]:
        message = DcgmMessage(**warning)
        codes = [f"error {message.error_id}" if message.error_id is not None else "",
                 CATEGORIES.get(message.category, "") if message.category is not None else ""]
        code_text = ", ".join(c for c in codes if c)
        parts.append(f"{message.text}" + (f" [DCGM {code_text}]" if code_text else "")
                     + (f"; what to do: {message.action}" if message.action else ""))
    parts += [f"info: {line}" for line in result["info"]]
    return "; ".join(parts)
