"""Checks against the run history: each figure's change from its baseline, a summary, or why nothing
was compared."""

from __future__ import annotations

from clusterbench.history.findings import RegressionFindings
from clusterbench.history.noise import Change, Comparison, RegressionRule, widened_k
from clusterbench.judge.formatting import format_value
from clusterbench.metrics import METRICS
from clusterbench.model import Better, Check, Measurement, Provenance, Verdict

SUMMARY_METRIC = "history.regression"
HISTORY_SOURCE = "the run history (--history)"


def not_compared(compare_text: str, reason: str, *, blocking: bool = True) -> Check:
    """The comparison `--compare compare_text` asked for was not made; `blocking` when that fails the
    regressions item (a history that cannot be read), not when there is simply nothing to compare yet."""
    return Check(
        metric=SUMMARY_METRIC, params={"compare": compare_text}, verdict=Verdict.NOT_MEASURED, observed=None,
        target=None, unit="", provenance=Provenance.HISTORY.value, source=HISTORY_SOURCE,
        message=f"not compared: {reason}", blocking=blocking,
    )


def judge_regressions(findings: RegressionFindings, regression_verdict: Verdict) -> list[Check]:
    """The summary, then a check per figure that changed (or held) against its baseline; a regression
    fails with `regression_verdict` (the profile's), or WARNs against a spread nobody has seen yet."""
    if findings.not_compared is not None:
        return [not_compared(findings.compare_text, findings.not_compared, blocking=False)]
    rule, tally = findings.rule, findings.tally
    checks = [_change_check(change.measurement, change.comparison, rule, regression_verdict,
                            findings.label + change.note)
              for change in findings.changes]
    compared = sum(tally.values()) - tally[Change.TOO_LITTLE_HISTORY]
    parts = [f"{tally[c]} {c.value}" for c in Change if tally[c]]
    verdict = Verdict.PASS if compared else Verdict.NOT_MEASURED
    message = f"{compared} figure(s) compared with the {findings.label}: {', '.join(parts) or 'nothing to compare'}"
    if findings.unknown_noise:
        message += (f"; noise unknown for {findings.unknown_noise} figure(s): fewer than {rule.min_runs} stored runs "
                    f"show them, so only changes beyond {rule.unknown_noise_floor:.0%} are "
                    "judged, and as WARN, never FAIL")
    if findings.rebased:
        message += (f"; {findings.rebased} figure(s) of the stored run lay far off the recent "
                    "runs, so they were compared "
                    f"with the recent runs' median instead")
    if tally[Change.TOO_LITTLE_HISTORY]:
        message += f" (too little history: fewer than {rule.min_runs} stored figures, or none, for the same params)"
    return [_summary(verdict, findings.compare_text, message), *checks]


def _summary(verdict: Verdict, compare_text: str, message: str) -> Check:
    return Check(
        metric=SUMMARY_METRIC, params={"compare": compare_text}, verdict=verdict, observed=None, target=None, unit="",
        provenance=Provenance.HISTORY.value, source=HISTORY_SOURCE, message=message, blocking=False,
    )


def threshold_basis(comparison: Comparison, unit: str, family: str, rule: RegressionRule,
                    better: Better = Better.HIGHER) -> str:
    """How the threshold was set, in words, with its figures: every verdict states its own rule."""
    threshold = comparison.threshold or 0.0
    floor = f"the {family} floor" if comparison.floor > rule.min_effect else "the minimum effect"
    if not comparison.noise_known:
        return (f"noise unknown: {comparison.spread_runs} stored run(s) show this figure, {rule.min_runs} are needed "
                f"to know its run-to-run spread; judging only changes beyond {threshold:.0%}, as a WARN, not a FAIL")
    k = widened_k(rule.noise_k, comparison.spread_runs)
    spread = (f"{k:.2g} deviations of the difference = {format_value(comparison.noise_band or 0.0, unit)} "
              f"({rule.noise_k:g} widened to Student's t for a spread of {format_value(comparison.noise or 0.0, unit)} "
              f"seen over {comparison.spread_runs} stored runs{_left_out(comparison.left_out)})")
    blind = ("; this figure moves so much from run to run that no drop can show through it"
             if better is Better.HIGHER and threshold >= 1.0 else "")
    return f"threshold {threshold:.1%}: the larger of {floor} {comparison.floor:.0%} and {spread}{blind}"


def _left_out(count: int) -> str:
    return f", {count} far-off run(s) left out" if count else ""


def _change_check(
    measurement: Measurement, comparison: Comparison, rule: RegressionRule, regression_verdict: Verdict, label: str,
) -> Check:
    unit = measurement.unit
    spec = METRICS[measurement.metric]
    better = spec.better
    direction = ("slower" if better is Better.HIGHER else "higher") if (comparison.worse_by or 0) > 0 else (
        "faster" if better is Better.HIGHER else "lower")
    basis = threshold_basis(comparison, unit, spec.family, rule, better)
    figures = f"{format_value(comparison.current, unit)} now vs {format_value(comparison.baseline, unit)}"
    size = f"{abs(comparison.worse_by or 0):.1%} {direction}"
    if comparison.change is Change.REGRESSION:
        # Beyond the floor but against a spread nobody has seen yet: said, never failed on.
        verdict = regression_verdict if comparison.noise_known else Verdict.WARN
        message = f"regression: {figures}, {size}: {basis}"
    elif comparison.change is Change.WITHIN_NOISE:
        verdict = Verdict.PASS
        message = f"{figures}, {size}, within the threshold: not flagged ({basis})"
    else:
        verdict = Verdict.PASS
        message = f"improvement: {figures}, {size}: {basis}"
    return Check(
        metric=measurement.metric, params=dict(measurement.params), verdict=verdict, observed=comparison.current,
        target=comparison.baseline, unit=unit, provenance=Provenance.HISTORY.value, source=label, message=message,
        better=better, location=measurement.location,
    )
