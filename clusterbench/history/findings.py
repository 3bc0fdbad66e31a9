"""What a comparison with the history found, as plain data: clusterbench.history.compare makes it,
clusterbench.judge.regression turns it into checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterbench.history.noise import Change, Comparison, RegressionRule
from clusterbench.model import Measurement


@dataclass(frozen=True)
class FigureChange:
    """One figure of this run that moved (or held) against its baseline."""

    measurement: Measurement
    comparison: Comparison
    note: str  # why the baseline is not the stored figure itself ("" when it is)


@dataclass
class RegressionFindings:
    """What `--compare` found, for clusterbench.judge.regression to turn into checks."""

    compare_text: str
    rule: RegressionRule
    not_compared: str | None = None  # why nothing was compared (no stored run yet, too few)
    label: str = ""  # the baseline, in words
    changes: list[FigureChange] = field(default_factory=list)  # regressions, changes within noise, improvements
    tally: dict[Change, int] = field(default_factory=dict)  # figures by kind of change, too little history included
    unknown_noise: int = 0  # figures compared against a spread not yet known
    rebased: int = 0  # figures compared with the recent runs' median instead of the stored run's
