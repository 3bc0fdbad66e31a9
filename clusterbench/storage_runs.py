"""Running the storage probes of an acceptance run: each target measured once per rank, on first use.

Every rank measures at the same time (the tests of a run are settled across ranks in step), so on a
shared filesystem the figures show what it gives many clients at once, and the peers check names
the slowest node; on node-local disks each node is measured on its own disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from clusterbench.model import Location, Measurement, NotMeasured, ProbeFailed
from clusterbench.profile import StorageSettings


@dataclass
class StorageRuns:
    settings: StorageSettings
    quick: bool
    location: Callable[[str], Location]  # device label -> this rank's location
    first_on_node: bool  # this rank is its node's first (local rank 0)
    _results: dict[str, object] = field(default_factory=dict)  # target -> StorageResult or the error

    def _result(self, target: str):
        from clusterbench.probes.storage import StorageIntegrityError, StorageRunError, StorageTargetError, measure_storage

        if target not in self._results:
            try:
                self._results[target] = measure_storage(
                    Path(target),
                    quick=self.quick,
                    engine=self.settings.engine,
                    location=self.location(f"storage {target}"),
                    working_size=self.settings.working_size_bytes,
                )
            except StorageIntegrityError as exc:
                # Data read back wrong: the workloads it hit fail (as recorded failures), the clean
                # figures of the other workloads stand.
                self._results[target] = exc.result if exc.result is not None else exc
            # A bad target, a full disk: every figure of the target fails with the same one line
            # (the probe has already removed what it wrote).
            except (StorageTargetError, StorageRunError) as exc:
                self._results[target] = exc
        return self._results[target]

    def attempts(self, metric: str) -> list[tuple[Location, Callable[[], list[Measurement]]]]:
        if self.settings.ranks == "one-per-node" and not self.first_on_node:
            return []  # the node's first rank measures for it
        return [(self.location(f"storage {t}"), lambda t=t: self._figures(t, metric)) for t in self.settings.targets]

    def _figures(self, target: str, metric: str) -> list[Measurement]:
        result = self._result(target)
        if isinstance(result, Exception):
            raise ProbeFailed(str(result).splitlines()[0] if str(result) else type(result).__name__)
        failed = [f for f in result.failures if metric in f.metrics]
        if failed:
            raise ProbeFailed(f"{target}: {failed[0].workload}: {failed[0].message}")
        figures = [m for m in result.measurements if m.metric == metric]
        if not figures:
            raise NotMeasured(f"{metric} was not measured on {target}")
        for figure in figures:
            figure.details.setdefault("engine_reason", result.engine_reason)
            figure.details.setdefault("fallbacks", list(result.fallbacks))
        return figures
