"""Checks of the training probe that hold whatever the profile says."""

from __future__ import annotations

from clusterbench.judge.rules import rule_check
from clusterbench.model import Better, Check, Measurement, Verdict


def rule_checks(measurements: list[Measurement]) -> list[Check]:
    """Checks that hold whatever the profile says: the loss must fall (a probe that does not train is
    not a training probe) and every rank must end with the same parameters (silent data corruption)."""
    checks = []
    for m in measurements:
        if m.metric == "train.loss_drop":
            first, last = m.samples[0], m.samples[-1]
            trained = m.value > 0
            message = (f"the loss fell {m.value:.1%} over {len(m.samples)} measured steps ({first:.3f} -> {last:.3f})"
                       if trained else f"the loss did not fall over {len(m.samples)} measured steps "
                                       f"({first:.3f} -> {last:.3f}): the model did not train")
            checks.append(_rule_check(m, trained, 0.0, Better.HIGHER,
                                      "a training probe must train: the loss falls over the measured steps", message))
        elif m.metric == "train.params_mismatched":
            mismatched = m.details.get("mismatched", {})
            message = (f"all {len(m.details['ranks_compared'])} ranks hold identical parameters "
                       f"({m.details['parameters_compared']} tensors checksummed)" if not mismatched else
                       "parameters differ from rank " + str(m.details["ranks_compared"][0]) + "'s on "
                       + ", ".join(f"rank {r} (first at {name})" for r, name in mismatched.items())
                       + ": silent data corruption")
            checks.append(_rule_check(m, not mismatched, 0.0, Better.LOWER,
                                      "data-parallel replicas must stay bit-identical (parameter checksum)", message))
    return checks


def _rule_check(m: Measurement, passed: bool, target: float, better: Better, source: str, message: str) -> Check:
    return rule_check(m, Verdict.PASS if passed else Verdict.FAIL, source=source, message=message, target=target,
                      better=better)
